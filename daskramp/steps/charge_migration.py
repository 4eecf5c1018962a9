"""charge_migration step wrapper (spec 06): CHARGELOSS|DO_NOT_USE above a signal threshold.

Skipped by default (as in the official pipeline) and whenever NGROUPS < 3.  Neighbour flagging
reaches one pixel, so split ``y``/``x`` blocks get a one-pixel halo.
"""

from __future__ import annotations

from dataclasses import dataclass

import xarray as xr

from ..dims import DATA, GROUP, GROUPDQ, GROUPDQ_DTYPE, validate
from ..kernels import charge_migration as kernel
from ..params import boolean, floating
from ._apply import map_ramp_blocks
from ._spec import StepSpec
from ._wrapper import COMPLETE, SKIPPED, with_status

STATUS = "S_CHGMIG"
#: pixels on each side a result depends on (neighbour flagging)
HALO = 1


@dataclass(frozen=True)
class Params:
    """Parameters of charge_migration (official names and defaults)."""

    signal_threshold: float = floating(25000.0)
    skip: bool = boolean(True)


def charge_migration(
    ds: xr.Dataset, *, signal_threshold: float = 25000.0, skip: bool = False
) -> xr.Dataset:
    """Flag charge migration (lazy).

    ``skip`` defaults to False here so that calling the function runs the step; the pipeline
    default (``Params.skip``) is True.

    Parameters
    ----------
    ds : xarray.Dataset
        Exposure, float32 DN (bias-subtracted, linearised, dark-subtracted).
    signal_threshold : float, DN
    skip : bool

    Returns
    -------
    xarray.Dataset with new ``groupdq`` and ``attrs["S_CHGMIG"]``.
    """
    validate(ds)
    if skip or ds.sizes[GROUP] < 3:
        return with_status(ds, STATUS, SKIPPED)
    groupdq = map_ramp_blocks(
        kernel.charge_migration,
        ds[DATA],
        ds[GROUPDQ],
        dtype=GROUPDQ_DTYPE,
        halo=HALO,
        signal_threshold=float(signal_threshold),
    )
    return with_status(ds, STATUS, COMPLETE, groupdq=groupdq)


SPEC = StepSpec(name="charge_migration", status=STATUS, params=Params, run=charge_migration,
                scratch=1.25, halo=lambda p: HALO)
