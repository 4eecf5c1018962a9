"""Data-quality summaries: decode/encode, per-flag counts, per-integration counts, flag maps.

All functions take ``xarray.DataArray`` DQ arrays (``pixeldq`` (y, x) uint32, ``groupdq``
(integration, group, y, x) uint8, rateints ``dq`` (integration, y, x) uint32) and return
xarray objects; on dask-backed input the results are lazy reductions.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import xarray as xr

from .. import dq as _dq
from ..dims import INTEGRATION

FLAG = "flag"


def decode(value: int) -> set[str]:
    """Names of the bits set in one DQ value (``0`` → ``{"GOOD"}``)."""
    return _dq.dqflags_to_mnemonics(value)


def encode(names) -> int:
    """DQ value of flag names (``"DO_NOT_USE, SATURATED"``, a list, or an int)."""
    return _dq.interpret_bit_flags(names)


def _names(flags) -> list[str]:
    if flags is None:
        return [n for n in _dq.PIXEL if n != "GOOD"]
    if isinstance(flags, str):
        flags = [f.strip() for f in flags.split(",") if f.strip()]
    out = [str(f).upper() for f in flags]
    for n in out:
        encode([n]) if n != "GOOD" else None  # raises on unknown names
    return out


def flag_map(dq: xr.DataArray, flags) -> xr.DataArray:
    """Boolean map: True where any of ``flags`` is set (``"GOOD"`` alone → value 0)."""
    names = _names(flags)
    if names == ["GOOD"]:
        return (dq == 0).rename("GOOD")
    value = encode([n for n in names if n != "GOOD"])
    return ((dq & value) != 0).rename("+".join(names))


def flag_counts(dq: xr.DataArray, flags=None, *, dims: Iterable[str] | None = None) -> xr.Dataset:
    """Number and fraction of pixels carrying each flag (the bad-pixel table).

    Parameters
    ----------
    dq : xarray.DataArray
        Any DQ array.
    flags : list of names, optional
        Default: every JWST bit plus ``GOOD`` (value 0).
    dims : iterable of str, optional
        Dims reduced (default: all), e.g. ``("group", "y", "x")`` for counts per integration.

    Returns
    -------
    xarray.Dataset
        ``count`` (int64) and ``fraction`` (float64, 0…1) with a leading ``flag`` dim whose
        coordinate holds the names; ``total`` = number of values reduced.  A pixel with several
        bits is counted under each of them (as in the seed notebook's tally).
    """
    names = ["GOOD"] + _names(flags) if flags is None else _names(flags)
    dims = tuple(dq.dims) if dims is None else tuple(dims)
    total = int(np.prod([dq.sizes[d] for d in dims]))
    counts = [flag_map(dq, [n]).sum(dims, dtype=np.int64) for n in names]
    count = xr.concat(counts, dim=FLAG, coords="minimal", compat="override").assign_coords({FLAG: names})
    return xr.Dataset(
        {"count": count, "fraction": count / total},
        attrs={"total": total},
    )


def flag_table(counts: xr.Dataset, *, nonzero: bool = True) -> dict[str, tuple[int, float]]:
    """``{flag: (count, percent)}`` from :func:`flag_counts` of a whole image.

    Computes the (small) counts if they are lazy; ``nonzero`` drops flags never set.
    """
    c = counts.compute() if any(v.chunks for v in counts.data_vars.values()) else counts
    out = {}
    for name, n, f in zip(c[FLAG].values, c["count"].values, c["fraction"].values):
        if nonzero and n == 0:
            continue
        out[str(name)] = (int(n), 100.0 * float(f))
    return out


def format_table(table: dict[str, tuple[int, float]]) -> str:
    """The table as fixed-width text (flag, count, percent)."""
    lines = [f"| {'PIXEL DQ FLAG':<20} | {'# of pixels':^13} | {'fraction (%)':^13} |"]
    lines += [f"| {k:<20} | {n:^13} | {p:^13.2f} |" for k, (n, p) in table.items()]
    return "\n".join(lines)


def flags_per_integration(dq: xr.DataArray, flags=("SATURATED", "JUMP_DET")) -> xr.Dataset:
    """Per-integration counts and fractions of ``flags`` (e.g. the jump rate per integration).

    ``dq`` is rateints ``dq`` (integration, y, x) or a ramp's ``groupdq`` (integration, group,
    y, x: every flagged group counts once, the "opportunities" are groups × pixels).

    Returns
    -------
    xarray.Dataset with ``<FLAG>`` counts (int64) and ``<FLAG>_fraction`` per integration.
    """
    if INTEGRATION not in dq.dims:
        raise ValueError(f"dq has no {INTEGRATION!r} dim: {dq.dims}")
    dims = [d for d in dq.dims if d != INTEGRATION]
    total = int(np.prod([dq.sizes[d] for d in dims]))
    out = {}
    for n in _names(flags):
        c = flag_map(dq, [n]).sum(dims, dtype=np.int64)
        out[n] = c
        out[f"{n}_fraction"] = c / total
    return xr.Dataset(out, attrs={"opportunities_per_integration": total})


def new_flags(after: xr.DataArray, before: xr.DataArray, flag="JUMP_DET") -> xr.DataArray:
    """Where ``flag`` is set in ``after`` but not in ``before`` (e.g. jumps found by the jump step)."""
    v = encode([flag])
    return ((after & v) != 0) & ((before & v) == 0)
