"""linearity step wrapper (spec 05).

Coefficients are prepared once (identity polynomial for NO_LIN_CORR, NaN or c1 = 0 pixels,
which get NO_LIN_CORR in pixeldq) and split into one ``(y, x)`` image per coefficient so that
they follow the exposure's spatial chunks.  The read-level correction is used when inverse
coefficients are given and NFRAMES > 1; otherwise the classic group-by-group correction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from ..dims import DATA, FLOAT_DTYPE, GROUPDQ, IMAGE_DIMS, PIXELDQ, ZEROFRAME, X, Y, validate
from ..kernels import linearity as kernel
from ..kernels.saturation import read_pattern as make_read_pattern
from ..params import boolean
from ._apply import map_ramp_blocks
from ._spec import StepSpec, ref_array
from ._wrapper import COMPLETE, SKIPPED, as_image, as_planes, with_status, zeroframe_blocks

STATUS = "S_LINEAR"


@dataclass(frozen=True)
class Params:
    """linearity has no parameters besides ``skip``."""

    skip: bool = boolean(False)


def _planes(cube, ds: xr.Dataset, name: str) -> list[xr.DataArray]:
    _, arr = as_planes(cube, ds, name)
    coords = {Y: ds[Y], X: ds[X]}
    return [xr.DataArray(arr[k], dims=IMAGE_DIMS, coords=coords, name=f"{name}{k}") for k in range(arr.shape[0])]


def linearity(
    ds: xr.Dataset, *, coeffs=None, lin_dq=None, inv_coeffs=None, skip: bool = False
) -> xr.Dataset:
    """Linearise the ramp (lazy).

    Parameters
    ----------
    ds : xarray.Dataset
        Exposure, float32 DN, bias-subtracted (and reference-pixel corrected).
    coeffs : array or xr.DataArray, (ncoeffs, y, x)
        LINEARITY COEFFS cut to the subarray; ``None`` → SKIPPED.
    lin_dq : array or xr.DataArray, (y, x), uint32, optional
    inv_coeffs : array or xr.DataArray, (ncoeffs_inv, y, x), optional
        INV_COEFFS; used (read-level correction) only when NFRAMES > 1.
    skip : bool

    Returns
    -------
    xarray.Dataset with float32 ``data``, updated ``pixeldq`` (and ``zeroframe``),
    ``attrs["S_LINEAR"]``.
    """
    validate(ds)
    if skip or coeffs is None:
        return with_status(ds, STATUS, SKIPPED)
    _, c = as_planes(coeffs, ds, "coeffs")
    if c.shape[0] < 2:
        raise ValueError(f"coeffs: need at least 2 coefficients (c0, c1), got {c.shape[0]}")
    ldq = None if lin_dq is None else as_image(lin_dq, ds, "lin_dq").data
    prepared = kernel.prepare_coefficients(c, ldq)
    nframes = int(ds.attrs["NFRAMES"])
    use_inverse = inv_coeffs is not None and nframes > 1
    planes = _planes(prepared, ds, "coeffs")
    inv_planes: list[xr.DataArray] = []
    inv = None
    rp = None
    if use_inverse:
        _, ic = as_planes(inv_coeffs, ds, "inv_coeffs")
        inv = ic
        inv_planes = _planes(kernel.prepare_coefficients(ic, ldq), ds, "inv_coeffs")
        rp = tuple(map(tuple, make_read_pattern(int(ds.attrs["NGROUPS"]), nframes)))

    data = map_ramp_blocks(
        _correct_block,
        ds[DATA],
        ds[GROUPDQ],
        *planes,
        *inv_planes,
        dtype=FLOAT_DTYPE,
        ncoeffs=len(planes),
        read_pattern=rp,
        inplace=True,
    )
    # reference-sized 2-D work; numpy functions keep dask inputs lazy
    pixeldq = ds[PIXELDQ].copy(data=kernel.linearity_pixeldq(ds[PIXELDQ].data, c, ldq, inv))
    updates = {DATA: data, PIXELDQ: pixeldq}
    if ZEROFRAME in ds and ds.attrs.get("ZEROFRAM", True):
        updates[ZEROFRAME] = zeroframe_blocks(
            _zeroframe_block, ds[ZEROFRAME], *planes, dtype=FLOAT_DTYPE
        )
    return with_status(ds, STATUS, COMPLETE, **updates)


def _correct_block(data, groupdq, *planes, ncoeffs, read_pattern, out=None):
    coeffs = np.stack(planes[:ncoeffs])
    inv = np.stack(planes[ncoeffs:]) if len(planes) > ncoeffs else None
    return kernel.linearity_correction(data, groupdq, coeffs, inv_coeffs=inv, read_pattern=read_pattern,
                                       out=out)


def _zeroframe_block(zeroframe, *planes):
    return kernel.linearity_zeroframe(zeroframe, np.stack(planes))


def _refs_kwargs(refs, params, ds) -> dict:
    lin = refs.get("linearity")
    return {"coeffs": ref_array(lin, "COEFFS"), "lin_dq": ref_array(lin, "DQ"),
            "inv_coeffs": ref_array(lin, "INV_COEFFS")}


# linearity propagates the reference's DQ: the group DQ it leaves does not depend on the data
SPEC = StepSpec(name="linearity", status=STATUS, params=Params, run=linearity, scratch=1.11,
                reftypes=("linearity",), refs_kwargs=_refs_kwargs, value_flags=False)
