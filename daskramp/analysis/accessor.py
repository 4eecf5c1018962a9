"""``ds.daskramp`` accessor: the analysis functions as methods of a Dataset.

Registered on import of :mod:`daskramp.analysis`.  Ramps (integration, group, y, x) and
rateints (integration, y, x) products both use it; each method says which it expects.
"""

from __future__ import annotations

import xarray as xr

from ..steps.clean_flicker_noise import clean_flicker_noise as clean_flicker_noise_step
from . import diagnostics, dq, extract, lightcurve, oneoverf, trace


@xr.register_dataset_accessor("daskramp")
class DaskrampAccessor:
    """Analysis helpers for daskramp products (all return xarray objects, lazy on dask)."""

    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    def _dq_var(self) -> xr.DataArray:
        for name in ("dq", "groupdq", "pixeldq"):
            if name in self._ds:
                return self._ds[name]
        raise KeyError("no dq, groupdq or pixeldq variable")

    # DQ
    def flag_counts(self, var: str | None = None, flags=None, **kw) -> xr.Dataset:
        """Per-flag counts/fractions of ``var`` (default ``dq``, else ``groupdq``/``pixeldq``)."""
        return dq.flag_counts(self._ds[var] if var else self._dq_var(), flags, **kw)

    def flag_table(self, var: str | None = None) -> dict:
        """``{flag: (count, percent)}`` (computes the small counts)."""
        return dq.flag_table(self.flag_counts(var))

    def flags_per_integration(self, var: str | None = None, flags=("SATURATED", "JUMP_DET")) -> xr.Dataset:
        """Per-integration counts of ``flags`` (jump rate per integration)."""
        return dq.flags_per_integration(self._ds[var] if var else self._dq_var(), flags)

    def flag_map(self, flags, var: str | None = None) -> xr.DataArray:
        """Boolean map of pixels carrying any of ``flags``."""
        return dq.flag_map(self._ds[var] if var else self._dq_var(), flags)

    # ramp diagnostics
    def saturation(self) -> xr.Dataset:
        """:func:`daskramp.analysis.diagnostics.saturation_summary` of a ramp."""
        return diagnostics.saturation_summary(self._ds)

    def pixel_ramps(self, pixels, **kw) -> xr.Dataset:
        """Up-the-ramp samples of ``pixels`` [(y, x), …] with DQ and a line."""
        return diagnostics.pixel_ramps(self._ds, pixels, **kw)

    def group_difference_ratio(self, **kw) -> xr.Dataset:
        """Last/first group-difference ratio and fluence (linearity check of one ramp)."""
        return diagnostics.group_difference_ratio(self._ds, **kw)

    # 1/f
    def subtract_group_1overf(self, mask=None, **kw) -> xr.Dataset:
        """Simple group-level 1/f correction of a ramp."""
        return oneoverf.subtract_group_1overf(self._ds, mask, **kw)

    def clean_flicker_noise(self, **params) -> xr.Dataset:
        """The clean_flicker_noise step on a ramp (official parameters)."""
        return clean_flicker_noise_step(self._ds, **params)

    def correct_1overf(self, mask=None, **kw) -> xr.Dataset:
        """rateints-level 1/f correction."""
        return oneoverf.correct_rateints_1overf(self._ds, mask, **kw)

    def column_psd(self, var: str = "data", **kw) -> xr.DataArray:
        """PSD of the column background of ``var`` (see column_background_psd)."""
        kw.setdefault("fastaxis", int(self._ds.attrs.get("FASTAXIS", -2)))
        return oneoverf.column_background_psd(self._ds[var], **kw)

    # spectra
    def trace(self, orders: dict) -> xr.Dataset:
        """Trace orders ``{order: dict(x_start=…, x_end=…, y_start=…)}`` of rateints."""
        return trace.trace_rateints(self._ds, orders)

    def extract(self, trace_y: xr.DataArray, **kw) -> xr.Dataset:
        """Aperture extraction of rateints along ``trace_y`` (array rows)."""
        return extract.extract_aperture(self._ds, trace_y, **kw)

    # light curves (on an extracted-spectrum Dataset)
    def lightcurves(self, **kw) -> xr.Dataset:
        """Normalised light-curve matrix (ppm) of an extracted-spectrum Dataset."""
        return lightcurve.normalized_lightcurves(self._ds, **kw)

    def white_light(self, **kw) -> xr.Dataset:
        """White-light curve with outlier replacement of an extracted-spectrum Dataset."""
        return lightcurve.white_light(self._ds, **kw)
