"""gain_scale step wrapper (spec 08 §8): rescale rate products by GAINFACT.

Works on the ``rate`` / ``rateints`` Datasets (``data``, ``err``, ``var_poisson``,
``var_rnoise``, ``dq``): ``data``, ``err`` × f; variances × f²; ``dq`` untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import xarray as xr

from ..kernels import gain_scale as kernel
from ..params import boolean
from ._spec import StepSpec, ref
from ._wrapper import COMPLETE, SKIPPED

STATUS = "S_GANSCL"

_POWER = {"data": 1, "err": 1, "var_poisson": 2, "var_rnoise": 2}


@dataclass(frozen=True)
class Params:
    """gain_scale has no parameters besides ``skip``."""

    skip: bool = boolean(False)


def gain_scale(product: xr.Dataset, *, gain_factor: float | None = None, skip: bool = False) -> xr.Dataset:
    """Scale a rate product by the gain factor (lazy).

    Parameters
    ----------
    product : xarray.Dataset
        rate or rateints product.
    gain_factor : float, optional
        GAINFACT of the GAIN reference file header.  A GAINFACT already in ``product.attrs``
        takes priority (the official order); neither → SKIPPED.
    skip : bool

    Returns
    -------
    xarray.Dataset with ``attrs["S_GANSCL"]`` and, when applied, ``attrs["GAINFACT"]``.
    """
    factor = product.attrs.get("GAINFACT", gain_factor)
    out = product.copy()
    if skip or factor is None:
        out.attrs = {**product.attrs, STATUS: SKIPPED}
        return out
    factor = float(factor)
    for name, power in _POWER.items():
        if name in product and product[name].size:
            var = product[name]
            out[name] = xr.apply_ufunc(
                kernel.gain_scale,
                var,
                dask="allowed",
                kwargs={"gain_factor": factor, "power": power},
                keep_attrs=True,
            )
    out.attrs = {**product.attrs, "GAINFACT": factor, STATUS: COMPLETE}
    return out


def _refs_kwargs(refs, params, product) -> dict:
    # the GAINFACT of the GAIN file header, unless the product's keywords have one
    gain = ref(refs, "gain")
    factor = None if gain is None else gain.header.get("GAINFACT")
    return {"gain_factor": product.attrs.get("GAINFACT", factor)}


SPEC = StepSpec(name="gain_scale", status=STATUS, params=Params, run=gain_scale, scratch=0.0,
                reftypes=("gain",), optional_reftypes=("gain",), refs_kwargs=_refs_kwargs,
                on_rate=True)
