"""Small hand-built exposures for tests and examples.

Two helpers that every test module can share:

* :func:`make_attrs` returns a complete set of exposure keywords (all of
  :data:`daskramp.dims.REQUIRED_KEYWORDS` plus FRMDIVSR and ZEROFRAM), with the defaults of
  spec 09 (NIRISS, NFRAMES 1, GROUPGAP 0, TFRAME = TGROUP = 10 s);
* :func:`make_ramp` builds an exposure Dataset holding a noiseless (or seeded noisy) linear ramp
  whose group values follow the frame timing, so rates are known exactly.

Example
-------
>>> ds = make_ramp(2, 5, 4, 6, rate=5.0)          # 2 integrations, 5 groups, 4×6 pixels
>>> float(ds.data[0, :, 0, 0][-1])                # 5 DN/s × 10 s × 5 groups
250.0
>>> lazy = make_ramp(2, 5, 4, 6, chunks={"integration": 1})
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..dims import FLOAT_DTYPE, RAW_DTYPE, make_exposure

#: keyword defaults (NIRISS SOSS-like subarray at the detector origin)
_DEFAULTS = {
    "TELESCOP": "JWST",
    "INSTRUME": "NIRISS",
    "DETECTOR": "NIS",
    "EXP_TYPE": "NIS_SOSS",
    "READPATT": "NISRAPID",
    "SUBARRAY": "SUBSTRIP256",
    "SUBSTRT1": 1,
    "SUBSTRT2": 1,
    "SUBSIZE1": 2048,
    "SUBSIZE2": 256,
    "FASTAXIS": -2,
    "SLOWAXIS": -1,
    "NOUTPUTS": 1,
    "NINTS": 1,
    "NGROUPS": 10,
    "NFRAMES": 1,
    "GROUPGAP": 0,
    "TFRAME": 10.0,
    "ZEROFRAM": False,
}


def make_attrs(**overrides) -> dict:
    """Exposure keywords with every required keyword set; ``overrides`` replace defaults.

    ``FRMDIVSR`` defaults to ``NFRAMES`` (so group_scale has nothing to do) and ``TGROUP`` to
    ``TFRAME · (NFRAMES + GROUPGAP)`` (the group cadence) unless given.

    Returns
    -------
    dict
        FITS keyword → value, suitable for :func:`daskramp.dims.make_exposure`.
    """
    attrs = {**_DEFAULTS, **overrides}
    attrs.setdefault("FRMDIVSR", attrs["NFRAMES"])
    attrs.setdefault("TGROUP", float(attrs["TFRAME"]) * (attrs["NFRAMES"] + attrs["GROUPGAP"]))
    return attrs


def group_times(attrs: dict) -> np.ndarray:
    """Mean frame time of each group since the reset, in seconds (float64, shape (NGROUPS,)).

    Group g averages frames ``g·(NFRAMES+GROUPGAP) + 1 … + NFRAMES`` (1-based), each read
    TFRAME after the previous one, so its mean time is
    ``TFRAME · (g·(NFRAMES+GROUPGAP) + (NFRAMES+1)/2)``; for NFRAMES = 1 that is
    ``TFRAME · (g+1)``.
    """
    g = np.arange(attrs["NGROUPS"], dtype=np.float64)
    nf, gap = attrs["NFRAMES"], attrs["GROUPGAP"]
    return float(attrs["TFRAME"]) * (g * (nf + gap) + (nf + 1) / 2)


def make_ramp(
    nint: int,
    ngroup: int,
    ny: int,
    nx: int,
    *,
    rate=5.0,
    bias=0.0,
    read_noise: float = 0.0,
    seed: int = 0,
    raw: bool = False,
    zeroframe: bool = False,
    groupdq=None,
    pixeldq=None,
    chunks: dict | None = None,
    **attrs_overrides,
) -> xr.Dataset:
    """A linear-ramp exposure Dataset ``data = bias + rate · t_g (+ noise)``.

    Parameters
    ----------
    nint, ngroup, ny, nx : int
        Shape of ``data`` (integration, group, y, x).
    rate : float or array (ny, nx) or (nint, ny, nx)
        Count rate in DN/s.
    bias : float or array (ny, nx)
        Constant level in DN added to every group (and the zero frame).
    read_noise : float
        Standard deviation in DN of Gaussian noise added to every group (0 → noiseless).
    seed : int
        Seed of the noise generator.
    raw : bool
        ``True`` → uint16 ``data`` (rounded and clipped to 0…65535, as in an uncal file);
        ``False`` → float32 (calibrated DN).
    zeroframe : bool
        Add a ``zeroframe`` variable (``bias + rate · TFRAME``) and set ``ZEROFRAM = True``.
    groupdq, pixeldq : array, optional
        Initial DQ arrays (zeros by default).
    chunks : dict, optional
        When given, the Dataset is chunked with dask (``{"integration": 1}`` …).
    **attrs_overrides
        Keywords passed to :func:`make_attrs` (``NFRAMES=4``, ``TFRAME=2.0`` …).  NINTS,
        NGROUPS and SUBSIZE1/2 are set from the shape.

    Returns
    -------
    xarray.Dataset
        An exposure following :mod:`daskramp.dims`.
    """
    attrs = make_attrs(
        **{
            "NINTS": nint,
            "NGROUPS": ngroup,
            "SUBSIZE1": nx,
            "SUBSIZE2": ny,
            "ZEROFRAM": bool(zeroframe),
            **attrs_overrides,
        }
    )
    t = group_times(attrs)
    rate = np.asarray(rate, dtype=np.float64)
    if rate.ndim == 2:
        rate = rate[None]
    rate = np.broadcast_to(rate, (nint, ny, nx))
    bias = np.broadcast_to(np.asarray(bias, dtype=np.float64), (ny, nx))
    values = bias + rate[:, None] * t[None, :, None, None]
    if read_noise:
        values = values + np.random.default_rng(seed).normal(0.0, read_noise, values.shape)
    zf = bias + rate * float(attrs["TFRAME"]) if zeroframe else None
    if raw:
        data = np.clip(np.rint(values), 0, 65535).astype(RAW_DTYPE)
        zf = None if zf is None else np.clip(np.rint(zf), 0, 65535).astype(RAW_DTYPE)
    else:
        data = values.astype(FLOAT_DTYPE)
        zf = None if zf is None else zf.astype(FLOAT_DTYPE)
    ds = make_exposure(data, attrs, groupdq=groupdq, pixeldq=pixeldq, zeroframe=zf)
    if chunks:
        ds = ds.chunk(chunks)
    return ds


def _refuse_compute(*args, **kwargs):
    raise AssertionError("the graph was computed while it was being built")


def forbid_compute():
    """Context manager under which any dask compute raises ``AssertionError``.

    Use it around wrapper calls to check that building a step's graph computes nothing::

        with forbid_compute():
            out = saturation(lazy_ds, threshold=t)
    """
    import dask

    return dask.config.set(scheduler=_refuse_compute)


def _fit_sizes(parts, total: int) -> tuple[int, ...]:
    out, left = [], total
    for p in parts:
        if left <= 0:
            break
        out.append(min(p, left))
        left -= out[-1]
    if left > 0:
        out.append(left)
    return tuple(out)


def chunk_sizes(total: int):
    """Hypothesis strategy: a tuple of positive chunk sizes adding up to ``total``."""
    from hypothesis import strategies as st

    return st.lists(st.integers(1, max(1, total)), min_size=1, max_size=max(1, total)).map(
        lambda parts: _fit_sizes(parts, total)
    )


def chunkings(ds: xr.Dataset, *, spatial: bool = True):
    """Hypothesis strategy: a ``chunks`` dict for ``ds`` (random integration chunks, whole
    groups, and random ``y``/``x`` chunks when ``spatial``)."""
    from hypothesis import strategies as st

    parts = {"integration": chunk_sizes(ds.sizes["integration"]), "group": st.just(-1)}
    for dim in ("y", "x"):
        parts[dim] = chunk_sizes(ds.sizes[dim]) if spatial else st.just(-1)
    return st.fixed_dictionaries(parts)
