"""dq_init step wrapper (spec 02): seed pixeldq and groupdq from the MASK reference."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from ..dims import GROUPDQ, GROUPDQ_DTYPE, PIXELDQ, PIXELDQ_DTYPE, RAMP_DIMS, X, Y
from ..kernels import dq_init as kernel
from ..params import boolean, image
from ._apply import map_ramp_blocks
from ._spec import StepSpec, ref_array
from ._wrapper import COMPLETE, SKIPPED, apply_image, as_image, with_status

STATUS = "S_DQINIT"


@dataclass(frozen=True)
class Params:
    """Parameters of dq_init (official names).

    ``user_supplied_dq``: an extra DQ image (array ``(y, x)`` or the path of a FITS file whose
    primary array holds it) OR-ed into the mask.
    """

    user_supplied_dq: Any = image(None, note="officially a FITS path; daskramp also takes a (y, x) array")
    skip: bool = boolean(False)


def _load_user_dq(value):
    if isinstance(value, (str, bytes)) or hasattr(value, "__fspath__"):
        from astropy.io import fits

        with fits.open(value) as hdul:
            return np.asarray(hdul[0].data)
    return value


def dq_init(
    ds: xr.Dataset, *, mask=None, user_supplied_dq=None, skip: bool = False
) -> xr.Dataset:
    """Apply the MASK: ``pixeldq |= mask``; ``groupdq |= mask & DO_NOT_USE`` in every group.

    Parameters
    ----------
    ds : xarray.Dataset
        Exposure; a missing or misshaped ``groupdq``/``pixeldq`` is replaced by zeros.
    mask : array or xr.DataArray, (y, x), uint32
        MASK DQ cut to the subarray; ``None`` → step SKIPPED.
    user_supplied_dq : array, xr.DataArray (y, x) or FITS path, optional
    skip : bool

    Returns
    -------
    xarray.Dataset with ``attrs["S_DQINIT"]`` set.
    """
    shape4 = ds["data"].shape
    ny, nx = ds.sizes[Y], ds.sizes[X]
    updates = {}
    if GROUPDQ not in ds or ds[GROUPDQ].shape != shape4:
        data = ds["data"].data
        zeros = (
            da.zeros(shape4, dtype=GROUPDQ_DTYPE, chunks=data.chunks)
            if isinstance(data, da.Array)
            else np.zeros(shape4, GROUPDQ_DTYPE)
        )
        updates[GROUPDQ] = xr.DataArray(zeros, dims=RAMP_DIMS, coords=ds["data"].coords)
    if PIXELDQ not in ds or ds[PIXELDQ].shape != (ny, nx):
        updates[PIXELDQ] = xr.DataArray(
            np.zeros((ny, nx), PIXELDQ_DTYPE), dims=(Y, X), coords={Y: ds[Y], X: ds[X]}
        )
    if updates:
        ds = ds.assign(updates)
    if skip or mask is None:
        return with_status(ds, STATUS, SKIPPED, **updates)
    m = as_image(mask, ds, "mask")
    m = m.astype(np.uint32) if m.dtype.kind not in "ui" else m
    user = _load_user_dq(user_supplied_dq)
    if user is not None:
        u = as_image(user, ds, "user_supplied_dq")
        m = apply_image(kernel.combined_mask, m, u)
    groupdq = map_ramp_blocks(
        kernel.dq_init_groupdq, ds[GROUPDQ], m, dtype=GROUPDQ_DTYPE
    )
    pixeldq = apply_image(kernel.dq_init_pixeldq, ds[PIXELDQ], m).rename(PIXELDQ)
    return with_status(ds, STATUS, COMPLETE, groupdq=groupdq, pixeldq=pixeldq)


def _refs_kwargs(refs, params, ds) -> dict:
    return {"mask": ref_array(refs.get("mask"), "DQ")}


SPEC = StepSpec(name="dq_init", status=STATUS, params=Params, run=dq_init, scratch=0.28,
                reftypes=("mask",), refs_kwargs=_refs_kwargs,
                image_params=(("user_supplied_dq", _load_user_dq),))
