"""superbias step wrapper (spec 02): subtract the SUPERBIAS image.

NaN bias values count as 0; ``pixeldq |= bias DQ``; with a zero frame, the bias is subtracted
from it as well except where it is 0 (the "bad" marker).  Output ``data`` is float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import xarray as xr

from ..dims import DATA, FLOAT_DTYPE, PIXELDQ, ZEROFRAME, validate
from ..kernels import superbias as kernel
from ..params import boolean
from ._apply import map_ramp_blocks
from ._spec import StepSpec, ref_array
from ._wrapper import COMPLETE, SKIPPED, apply_image, as_image, with_status, zeroframe_blocks

STATUS = "S_SUPERB"


@dataclass(frozen=True)
class Params:
    """superbias has no parameters besides ``skip``."""

    skip: bool = boolean(False)


def superbias(ds: xr.Dataset, *, superbias=None, superbias_dq=None, skip: bool = False) -> xr.Dataset:
    """Subtract the superbias (lazy).

    Parameters
    ----------
    ds : xarray.Dataset
        Exposure (``data`` in DN, uint16 or float32).
    superbias : array or xr.DataArray, (y, x), DN
        SUPERBIAS SCI cut to the subarray; ``None`` → step SKIPPED.
    superbias_dq : array or xr.DataArray, (y, x), uint32, optional
    skip : bool

    Returns
    -------
    xarray.Dataset with float32 ``data`` and ``attrs["S_SUPERB"]`` set.
    """
    validate(ds)
    if skip or superbias is None:
        return with_status(ds, STATUS, SKIPPED)
    bias = as_image(superbias, ds, "superbias")
    updates = {
        DATA: map_ramp_blocks(kernel.subtract_superbias, ds[DATA], bias, dtype=FLOAT_DTYPE,
                              inplace=True)
    }
    if superbias_dq is not None:
        bdq = as_image(superbias_dq, ds, "superbias_dq")
        updates[PIXELDQ] = apply_image(kernel.superbias_pixeldq, ds[PIXELDQ], bdq).rename(PIXELDQ)
    if ZEROFRAME in ds and ds.attrs.get("ZEROFRAM", True):
        updates[ZEROFRAME] = zeroframe_blocks(
            kernel.superbias_zeroframe, ds[ZEROFRAME], bias, dtype=FLOAT_DTYPE
        )
    return with_status(ds, STATUS, COMPLETE, **updates)


def _refs_kwargs(refs, params, ds) -> dict:
    bias = refs.get("superbias")
    return {"superbias": ref_array(bias), "superbias_dq": ref_array(bias, "DQ")}


SPEC = StepSpec(name="superbias", status=STATUS, params=Params, run=superbias, scratch=1.03,
                reftypes=("superbias",), refs_kwargs=_refs_kwargs)
