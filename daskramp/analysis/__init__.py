"""TSO science on daskramp products: DQ summaries, Stage-1 diagnostics, 1/f noise, spectral
tracing, aperture extraction and light curves — all returning xarray objects, lazy on dask.

Importing this package registers the ``ds.daskramp`` Dataset accessor.
"""

from . import accessor, diagnostics, dq, extract, lightcurve, oneoverf, trace  # noqa: F401
from .accessor import DaskrampAccessor
from .diagnostics import (
    dark_fraction,
    group_difference_ratio,
    linearity_check,
    pixel_ramps,
    saturation_summary,
)
from .dq import decode, encode, flag_counts, flag_map, flag_table, flags_per_integration
from .extract import aperture_weights, extract_aperture
from .lightcurve import (
    binned_scatter,
    depth_in_out,
    fit_transit,
    integration_scale,
    lightcurve_psd,
    normalized_lightcurves,
    scatter_ratio,
    sensitivity,
    white_light,
)
from .oneoverf import (
    column_background_psd,
    correct_rateints_1overf,
    pixel_times,
    subtract_group_1overf,
)
from .trace import find_orders, profile_fwhm, trace_mask, trace_order, trace_orders, trace_position

__all__ = [
    "DaskrampAccessor",
    "aperture_weights",
    "binned_scatter",
    "column_background_psd",
    "correct_rateints_1overf",
    "dark_fraction",
    "decode",
    "depth_in_out",
    "encode",
    "extract_aperture",
    "find_orders",
    "fit_transit",
    "flag_counts",
    "flag_map",
    "flag_table",
    "flags_per_integration",
    "group_difference_ratio",
    "integration_scale",
    "lightcurve_psd",
    "linearity_check",
    "normalized_lightcurves",
    "pixel_ramps",
    "pixel_times",
    "profile_fwhm",
    "saturation_summary",
    "scatter_ratio",
    "sensitivity",
    "subtract_group_1overf",
    "trace_mask",
    "trace_order",
    "trace_orders",
    "trace_position",
    "white_light",
]
