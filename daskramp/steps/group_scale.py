"""group_scale step wrapper (spec 02): rescale groups by FRMDIVSR/NFRAMES.

Decision table of the official step: NFRAMES or FRMDIVSR missing, or FRMDIVSR == NFRAMES →
SKIPPED; otherwise every group of every integration is multiplied by FRMDIVSR/NFRAMES
(data become float32). ZEROFRAME and DQ are untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import xarray as xr

from ..dims import DATA, FLOAT_DTYPE, validate
from ..kernels import group_scale as kernel
from ..params import boolean
from ._apply import map_ramp_blocks
from ._spec import StepSpec
from ._wrapper import COMPLETE, SKIPPED, with_status

STATUS = "S_GRPSCL"


@dataclass(frozen=True)
class Params:
    """group_scale has no parameters besides ``skip``."""

    skip: bool = boolean(False)


def group_scale(ds: xr.Dataset, *, skip: bool = False) -> xr.Dataset:
    """Return ``ds`` with ``data · FRMDIVSR/NFRAMES`` (lazy), or unchanged with status SKIPPED.

    Parameters
    ----------
    ds : xarray.Dataset
        Exposure (uint16 or float32 ``data``); metadata NFRAMES and FRMDIVSR from ``ds.attrs``.
    skip : bool

    Returns
    -------
    xarray.Dataset
        ``attrs["S_GRPSCL"]`` is ``COMPLETE`` or ``SKIPPED``.
    """
    validate(ds)
    nframes = ds.attrs.get("NFRAMES")
    divisor = ds.attrs.get("FRMDIVSR")
    if skip or not kernel.group_scale_needed(nframes, divisor):
        return with_status(ds, STATUS, SKIPPED)
    data = map_ramp_blocks(
        kernel.group_scale,
        ds[DATA],
        dtype=FLOAT_DTYPE,
        nframes=int(nframes),
        frame_divisor=int(divisor),
    )
    return with_status(ds, STATUS, COMPLETE, data=data)


SPEC = StepSpec(name="group_scale", status=STATUS, params=Params, run=group_scale, scratch=0.0)
