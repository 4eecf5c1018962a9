"""saturation step wrapper (spec 03).

Flags SATURATED / AD_FLOOR / DO_NOT_USE in ``groupdq`` on raw DN, grows saturation by
``n_pix_grow_sat``, uses the read pattern for frame-averaged groups, zeroes bad zero-frame
values and ORs the SATURATION DQ (plus NO_SAT_CHECK for NaN thresholds) into ``pixeldq``.

Growth looks at neighbours: the backward pass grows flags that themselves depend on grown
flags, so a block split in ``y``/``x`` gets a halo of ``2·n_pix_grow_sat`` pixels and the
result equals the whole-frame answer exactly.

Additions to the official parameters (defaults leave the official behaviour unchanged):

``saturation_scale`` (float, default 1.0)
    Multiplies the threshold image (raw DN, bias included) before use — e.g. 0.5 flags at
    half the reference threshold, as some TSO analyses do, without editing any file.
``user_threshold`` (array ``(y, x)`` in raw DN, or the path of a FITS file whose SCI or
    primary array holds it; default None)
    Replaces the reference threshold image (NaN → never saturated); ``saturation_scale`` still
    applies. The SATURATION DQ, when given, is still used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from ..dims import DATA, GROUPDQ, GROUPDQ_DTYPE, PIXELDQ, ZEROFRAME, validate
from ..kernels import saturation as kernel
from ..params import boolean, floating, image, integer
from ._apply import map_ramp_blocks
from ._spec import StepSpec, ref, ref_array
from ._wrapper import COMPLETE, SKIPPED, apply_image, as_image, with_status, zeroframe_blocks

STATUS = "S_SATURA"


@dataclass(frozen=True)
class Params:
    """Parameters of the saturation step: the official two plus two documented additions."""

    #: official integer without a minimum; a negative growth means nothing, daskramp refuses it
    n_pix_grow_sat: int = integer(1, min=0)
    use_readpatt: bool = boolean(True)
    #: multiplies the threshold image (addition; 1.0 = official behaviour)
    saturation_scale: float = floating(1.0, above=0, official=False)
    #: replaces the threshold image: array (y, x) raw DN or FITS path (addition)
    user_threshold: Any = image(None, official=False)
    skip: bool = boolean(False)


def _load_threshold(value):
    if isinstance(value, (str, bytes)) or hasattr(value, "__fspath__"):
        from astropy.io import fits

        with fits.open(value) as hdul:
            hdu = hdul["SCI"] if "SCI" in hdul else hdul[0]
            return np.asarray(hdu.data, dtype=np.float32)
    return value


def _halo(n_pix_grow_sat: int) -> int:
    """Pixels on each side a pixel's flags depend on: growth around saturated neighbours,
    which are themselves found ``n_pix_grow_sat`` away."""
    return 2 * int(n_pix_grow_sat)


def _scaled(thresh: xr.DataArray, scale: float) -> xr.DataArray:
    if scale == 1.0:
        return thresh
    return thresh * thresh.dtype.type(scale)


def saturation(
    ds: xr.Dataset,
    *,
    threshold=None,
    threshold_dq=None,
    superbias=None,
    n_pix_grow_sat: int = 1,
    use_readpatt: bool = True,
    saturation_scale: float = 1.0,
    user_threshold=None,
    skip: bool = False,
) -> xr.Dataset:
    """Flag saturation (lazy).

    Parameters
    ----------
    ds : xarray.Dataset
        Exposure in raw DN (uint16 or float32), before superbias; NFRAMES and NGROUPS from
        ``ds.attrs``; a ``zeroframe`` variable is checked when present.
    threshold : array or xr.DataArray, (y, x), raw DN
        SATURATION SCI cut to the subarray; ``None`` (and no ``user_threshold``) → SKIPPED.
    threshold_dq : array or xr.DataArray, (y, x), uint32, optional
        SATURATION DQ (NO_SAT_CHECK pixels never saturate; all bits go into pixeldq).
    superbias : array or xr.DataArray, (y, x), raw DN, optional
        SUPERBIAS SCI (NaN kept) for the second-group test; ``None`` → 0.
    n_pix_grow_sat, use_readpatt : official parameters (see spec 03).
    saturation_scale, user_threshold : additions, see the module docstring.
    skip : bool

    Returns
    -------
    xarray.Dataset with new ``groupdq``, ``pixeldq`` (and ``zeroframe``), ``attrs["S_SATURA"]``.
    """
    validate(ds)
    user_threshold = _load_threshold(user_threshold)
    if skip or (threshold is None and user_threshold is None):
        return with_status(ds, STATUS, SKIPPED)
    source = user_threshold if user_threshold is not None else threshold
    name = "user_threshold" if user_threshold is not None else "threshold"
    thresh = as_image(source, ds, name)
    if thresh.dtype.kind != "f":
        thresh = thresh.astype(np.float32)
    thresh = _scaled(thresh, float(saturation_scale))
    images = [thresh]
    sat_dq = None
    if threshold_dq is not None:
        sat_dq = as_image(threshold_dq, ds, "threshold_dq")
        images.append(sat_dq)
    bias = None if superbias is None else as_image(superbias, ds, "superbias")

    n = int(n_pix_grow_sat)
    if n < 0:
        raise ValueError(f"n_pix_grow_sat must be >= 0, got {n}")
    rp = None
    if use_readpatt:
        rp = tuple(map(tuple, kernel.read_pattern(int(ds.attrs["NGROUPS"]), int(ds.attrs["NFRAMES"]))))
    groupdq = map_ramp_blocks(
        _flag_block,
        ds[DATA],
        ds[GROUPDQ],
        *images,
        *([] if bias is None else [bias]),
        dtype=GROUPDQ_DTYPE,
        halo=_halo(n),
        n_pix_grow_sat=n,
        read_pattern=rp,
        has_dq=sat_dq is not None,
        has_bias=bias is not None,
    )
    pixeldq = apply_image(
        _pixeldq, ds[PIXELDQ], *images
    ).rename(PIXELDQ)
    updates = {GROUPDQ: groupdq, PIXELDQ: pixeldq}
    if ZEROFRAME in ds and ds.attrs.get("ZEROFRAM", True):
        updates[ZEROFRAME] = zeroframe_blocks(
            _zeroframe_block,
            ds[ZEROFRAME],
            *images,
            dtype=ds[ZEROFRAME].dtype,
            halo=n,
            n_pix_grow_sat=n,
        )
    return with_status(ds, STATUS, COMPLETE, **updates)


# Adapters from positional blocks (optional references present or not) to the kernels.


def _flag_block(data, groupdq, thresh, *rest, n_pix_grow_sat, read_pattern, has_dq, has_bias):
    rest = list(rest)
    sat_dq = rest.pop(0) if has_dq else None
    bias = rest.pop(0) if has_bias else None
    return kernel.flag_saturated_pixels(
        data, groupdq, thresh, sat_dq, bias, n_pix_grow_sat=n_pix_grow_sat, read_pattern=read_pattern
    )


def _pixeldq(pixeldq, thresh, sat_dq=None):
    return kernel.saturation_pixeldq(pixeldq, sat_dq, thresh)


def _zeroframe_block(zeroframe, thresh, sat_dq=None, *, n_pix_grow_sat):
    return kernel.saturation_zeroframe(zeroframe, thresh, sat_dq, n_pix_grow_sat=n_pix_grow_sat)


def _refs_kwargs(refs, params, ds) -> dict:
    sat = refs.get("saturation")
    return {"threshold": ref_array(sat), "threshold_dq": ref_array(sat, "DQ"),
            "superbias": ref_array(ref(refs, "superbias"))}


SPEC = StepSpec(name="saturation", status=STATUS, params=Params, run=saturation, scratch=1.11,
                reftypes=("saturation", "superbias"), optional_reftypes=("superbias",),
                refs_kwargs=_refs_kwargs, halo=lambda p: _halo(p.n_pix_grow_sat),
                image_params=(("user_threshold", _load_threshold),))
