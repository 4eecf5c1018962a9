"""Visual report of Stage-1 TSO products: PNG figures and an ``index.html`` with key numbers.

``make_report(products, outdir)`` reads the Zarr products written by ``daskramp run``
(``<root>_rate.zarr``, ``<root>_rateints.zarr`` and optional saved ramps
``<root>_<step>_ramp.zarr``) and renders the figures astronomers look at first in a TSO
(seed notebooks 000/001):

======================= ===================================================================
figure                  content
======================= ===================================================================
``dq_summary``          percentage of rate pixels carrying each DQ flag
``dq_maps``             maps of DO_NOT_USE, SATURATED and JUMP_DET pixels of the rate
``flags_per_int``       JUMP_DET and SATURATED fractions per integration (rateints)
``saturation_groups``   saturated pixels per integration and group (needs a ramp)
``rate_image``          the rate image with a colour bar
``column_psd``          PSD of the unilluminated pixels of each column (1/f noise): of a
                        group difference when a ramp is saved, else of one rateints frame
``trace_overlay``       traces of orders 1–2 (and the aperture) over the rate image
``trace_position``      trace row at the middle column vs integration
``spectrum``            extracted order-1 spectra of every integration and their median
``lc_matrix``           spectroscopic light curves (column × integration, ppm)
``white_light``         white-light curve (with a box fit when a transit is found)
``binned_scatter``      RMS of the binned white light vs bin size, against 1/√N
``sensitivity``         out-of-transit scatter / expected scatter per column
``white_light_psd``     Lomb-Scargle PSD of the out-of-transit white light
======================= ===================================================================

Figures whose inputs are missing (no ramp, no rateints, no illuminated trace) are skipped with
a note in the HTML.  Data are opened lazily; what a figure shows is reduced through dask
(flag counts, per-integration counts, a median image, aperture sums per integration), so
only small arrays and single frames are loaded.

Conventions: the white light is the sum over the order-1 columns that are finite in every
integration (per-column outliers replaced as in
:func:`daskramp.analysis.lightcurve.white_light`, against the out-of-transit median spectrum:
``filter_size=1``, because an 11-column median filter of a spectrum with narrow absorption
lines marks the lines as outliers).  Extraction uses one trace for every integration (the
trace of the median image): per-integration traces move the aperture edges with the
centroid noise and add scatter.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dask
import numpy as np
import xarray as xr

from .analysis import dq as adq
from .analysis import extract as aex
from .analysis import lightcurve as alc
from .analysis import oneoverf as a1f
from .analysis import trace as atr
from .analysis.diagnostics import saturation_summary
from .dims import INTEGRATION, X, Y
from .steps import STEP_ORDER
from .steps.clean_flicker_noise import nanmedian


class _Plots:
    """:mod:`daskramp.plots` imported on first use: matplotlib is the ``plot`` extra, and the
    CLI must start (and ``daskramp report --help`` answer) without it."""

    def __getattr__(self, name):
        try:
            from . import plots as module  # lazy: plots imports matplotlib (heavy, the plot extra)
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(
                "daskramp report needs matplotlib: pip install 'daskramp[plot]'"
            ) from err
        return getattr(module, name)


plots = _Plots()

#: imaging exposure types: no spectral trace to look for
IMAGING_EXP_TYPES = ("NRC_TSIMAGE", "NRC_IMAGE", "NIS_IMAGE", "NRC_DARK", "NIS_DARK", "NRS_DARK")
#: flags whose maps are drawn
MAP_FLAGS = ("DO_NOT_USE", "SATURATED", "JUMP_DET")
FIGURES = ("dq_summary", "dq_maps", "flags_per_int", "saturation_groups", "rate_image", "column_psd",
           "trace_overlay", "trace_position", "spectrum", "lc_matrix", "white_light", "binned_scatter",
           "sensitivity", "white_light_psd")
TITLES = {
    "dq_summary": "DQ flags of the rate image",
    "dq_maps": "DQ flag maps",
    "flags_per_int": "Jumps and saturation per integration",
    "saturation_groups": "Saturation per group",
    "rate_image": "Rate image",
    "column_psd": "1/f: PSD of the column background",
    "trace_overlay": "Spectral traces",
    "trace_position": "Trace position vs integration",
    "spectrum": "Extracted spectrum",
    "lc_matrix": "Spectroscopic light curves",
    "white_light": "White-light curve",
    "binned_scatter": "Binned scatter vs bin size",
    "sensitivity": "Sensitivity per column",
    "white_light_psd": "White-light PSD",
}


@dataclass
class Products:
    """Paths of one exposure's products found in a directory or given explicitly."""

    rate: Path | None = None
    rateints: Path | None = None
    ramps: dict[str, Path] = field(default_factory=dict)


def find_products(src: str | Path | Sequence[str | Path]) -> Products:
    """Locate ``*_rate.zarr``, ``*_rateints.zarr`` and ``*_<step>_ramp.zarr`` stores.

    ``src`` is a products directory or a list of store paths.  Incomplete stores
    (``*.partial``) are ignored.
    """
    if isinstance(src, (str, Path)) and Path(src).is_dir() and not str(src).endswith(".zarr"):
        paths = sorted(p for p in Path(src).iterdir() if p.name.endswith(".zarr"))
    else:
        paths = [Path(p) for p in ([src] if isinstance(src, (str, Path)) else src)]
    out = Products()
    for p in paths:
        name = p.name[: -len(".zarr")]
        if name.endswith("_rateints"):
            out.rateints = p
        elif name.endswith("_rate"):
            out.rate = p
        elif name.endswith("_ramp"):
            step = next((st for st in STEP_ORDER if name.endswith(f"_{st}_ramp")), name[: -len("_ramp")])
            out.ramps[step] = p
    if out.rate is None and out.rateints is None:
        raise FileNotFoundError(f"no *_rate.zarr or *_rateints.zarr product in {src}")
    return out


def _open(path: Path | None) -> xr.Dataset | None:
    # consolidated metadata when the store has it (daskramp writes it), silently otherwise
    return None if path is None else xr.open_zarr(path, consolidated=_consolidated(path))


def _consolidated(path: Path) -> bool:
    try:
        meta = json.loads((Path(path) / "zarr.json").read_text())
    except (OSError, ValueError):
        return (Path(path) / ".zmetadata").is_file()  # Zarr v2
    return isinstance(meta.get("consolidated_metadata"), dict)


def parse_ranges(text: str, n: int) -> np.ndarray:
    """``"0:15,35:50"`` (integration index ranges, end exclusive) → bool mask of length ``n``."""
    m = np.zeros(n, bool)
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        a, _, b = part.partition(":")
        m[slice(int(a) if a else None, int(b) if b else None)] = True
    return m


def _as_mask(oot, n: int) -> np.ndarray | None:
    if oot is None:
        return None
    if isinstance(oot, str):
        return parse_ranges(oot, n)
    a = np.asarray(oot)
    if a.dtype == bool:
        if a.shape != (n,):
            raise ValueError(f"out_of_transit has {a.size} values for {n} integrations")
        return a
    m = np.zeros(n, bool)  # a sequence of (start, stop) ranges
    for start, stop in np.atleast_2d(a):
        m[int(start):int(stop)] = True
    return m


# ---------------------------------------------------------------- order finding


# order finding lives in daskramp.analysis.trace (mode-agnostic: SOSS, NIRSpec BOTS, NIRCam
# grism); these names stay for callers


def default_orders(image: np.ndarray, x_detector: np.ndarray, *, snr: float = 20.0) -> dict:
    """:func:`daskramp.analysis.trace.find_orders` (trace settings guessed from an image)."""
    return atr.find_orders(image, x_detector, snr=snr)


def _smooth_profile(image: np.ndarray, col: int, half: int = 2) -> np.ndarray:
    return atr.smooth_profile(image, col, half)


def _rowwise_nanmedian(band: np.ndarray) -> np.ndarray:
    return atr.rowwise_nanmedian(band)


def _noise(image: np.ndarray) -> float:
    return atr.image_noise(image)


#: aperture half-height (pixels) for a broad (SOSS) trace; a narrow one gets 2.5 × its FWHM
DEFAULT_RADIUS = 15.0


def default_radius(image: np.ndarray, orders: Mapping) -> float:
    """Aperture half-height for ``orders[1]``: :data:`DEFAULT_RADIUS` for a broad trace, else
    ``max(3, 2.5·FWHM)`` rounded to half a pixel (FWHM of the median image's profile at the
    order's first column)."""
    o = orders.get(1) if orders else None
    if not o:
        return DEFAULT_RADIUS
    fwhm = atr.profile_fwhm(np.asarray(image, np.float64), int(o["x_start"]), float(o.get("y_start", 0.0)))
    if not np.isfinite(fwhm) or fwhm >= atr.NARROW_FWHM:
        return DEFAULT_RADIUS
    return float(max(3.0, round(2.0 * 2.5 * fwhm) / 2.0))


# ---------------------------------------------------------------- report


@dataclass
class _Entry:
    key: str
    title: str
    file: str | None = None
    note: str | None = None


def _number(v):
    """A JSON number (6 significant digits for floats; None for NaN/inf) or the value as is."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return float(f"{v:.6g}") if np.isfinite(v) else None
    return v


def _show(v) -> str:
    if isinstance(v, float):
        return f"{v:.0f}" if abs(v) >= 1e4 else f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    return "n/a" if v is None else str(v)


class _Report:
    def __init__(self, outdir: Path):
        self.outdir = outdir
        self.entries: dict[str, _Entry] = {}
        #: key numbers: name → {"value": number or text, "unit": str or None, more fields}
        self.numbers: dict[str, dict] = {}
        self.tables: dict[str, dict] = {}

    def number(self, key: str, value, unit: str | None = None, **more) -> None:
        """A key number: ``value`` in ``unit`` (None: a count, a ratio or a text) and more
        fields (``error``, ``note``, …), written as such to numbers.json."""
        entry = {"value": _number(value), "unit": unit}
        entry.update({k: _number(v) for k, v in more.items()})
        self.numbers[key] = entry

    @staticmethod
    def shown(entry: Mapping) -> str:
        """The HTML text of a key number: value, unit, then the other fields."""
        text = _show(entry.get("value"))
        unit = entry.get("unit")
        if "error" in entry:
            text += f" ± {_show(entry['error'])}"
        if unit:
            text += f" {unit}"
        more = []
        for k, v in entry.items():
            if k in ("value", "unit", "error", "note"):
                continue
            # a field named <name>_<unit> (t0_h: hours)
            name, _, u = k.rpartition("_") if k.endswith(("_h", "_s", "_ppm")) else (k, "", "")
            more.append(f"{name.replace('_', ' ')} = {_show(v)}" + (f" {u}" if u else ""))
        if entry.get("note"):
            more.append(str(entry["note"]))
        return text + (f" ({'; '.join(more)})" if more else "")

    def figure(self, key: str, fig) -> None:
        name = f"{key}.png"
        plots.save(fig, self.outdir / name)
        self.entries[key] = _Entry(key, TITLES[key], file=name)

    def skip(self, key: str, note: str) -> None:
        self.entries.setdefault(key, _Entry(key, TITLES[key], note=note))

    def html(self, title: str) -> str:
        esc = html.escape
        out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>{esc(title)}</title>",
               "<style>body{font-family:sans-serif;max-width:1300px;margin:auto}"
               "table{border-collapse:collapse}td,th{border:1px solid #999;padding:2px 8px}"
               "img{max-width:100%;border:1px solid #ddd}.note{color:#a33}</style></head><body>",
               f"<h1>{esc(title)}</h1>", "<h2>Key numbers</h2>", "<table>"]
        out += [f"<tr><th style='text-align:left'>{esc(k)}</th><td>{esc(self.shown(v))}</td></tr>"
                for k, v in self.numbers.items()]
        out.append("</table>")
        for name, table in self.tables.items():
            out += [f"<h3>{esc(name)}</h3>", "<table><tr><th>flag</th><th>pixels</th><th>fraction (%)</th></tr>"]
            out += [f"<tr><td>{esc(k)}</td><td>{n}</td><td>{p:.4g}</td></tr>" for k, (n, p) in table.items()]
            out.append("</table>")
        for key in FIGURES:
            e = self.entries.get(key)
            if e is None:
                continue
            out.append(f"<h2 id='{key}'>{esc(e.title)}</h2>")
            if e.file:
                out.append(f"<img src='{esc(e.file)}' alt='{esc(e.title)}'>")
            if e.note:
                out.append(f"<p class='note'>{esc(e.note)}</p>")
        out.append("</body></html>")
        return "\n".join(out)


def _coord(ds: xr.Dataset, dim: str) -> np.ndarray:
    return np.asarray(ds[dim].values) if dim in ds.coords else np.arange(ds.sizes[dim])


def make_report(
    products,
    outdir,
    *,
    out_of_transit=None,
    orders: Mapping | None = None,
    radius: float | None = None,
    correct_1overf: bool = False,
    mask_halfwidth: float = 30.0,
    trace_integrations: bool = True,
    title: str | None = None,
) -> Path:
    """Render the report of one exposure's products; returns the path of ``index.html``.

    Parameters
    ----------
    products : path or sequence of paths
        A directory holding ``*_rate.zarr`` / ``*_rateints.zarr`` (and optional
        ``*_<step>_ramp.zarr``), or the store paths themselves.
    outdir : path
        Where ``index.html`` and the PNG figures go (created).
    out_of_transit : bool array (integration,), ``"a:b,c:d"`` ranges or [(a, b), …], optional
        Baseline integrations.  Without it a box transit is searched in the white light
        (:func:`daskramp.analysis.lightcurve.fit_transit`); if one stands out (depth > 5σ),
        the integrations outside it (one cadence margin) are the baseline, otherwise all.
    orders : mapping, optional
        ``{order: dict(x_start=…, x_end=…, y_start=…, rows=…)}`` for
        :func:`daskramp.analysis.trace.trace_orders` (array indices); default
        :func:`default_orders` on the median image.
    radius : float, optional
        Aperture half-height (pixels) of the extraction (fractional edges); default
        :func:`default_radius` (15 for SOSS, 2.5 × the FWHM of a narrow NIRSpec/NIRCam trace).
    correct_1overf : bool
        Remove the column background of every integration (rateints-level 1/f correction with
        the trace mask, ``mask_halfwidth`` rows around each order) before extraction.
    trace_integrations : bool
        Trace every integration (for the trace-position figure; costs one centroid pass per
        integration); False traces the median image only.
    title : str, optional
        HTML title (default: the product root).

    Returns
    -------
    pathlib.Path of ``outdir/index.html``.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    found = find_products(products)
    rate, rateints = _open(found.rate), _open(found.rateints)
    ref = rate if rate is not None else rateints
    root = (found.rate or found.rateints).name.rsplit("_rate", 1)[0]
    rep = _Report(outdir)
    num = rep.number
    num("product", root)
    num("inputs", [p.name for p in (found.rate, found.rateints, *found.ramps.values()) if p])

    # ---- DQ of the rate (or of the rateints' first integration) and per integration
    rdq = rate["dq"] if rate is not None else rateints["dq"].isel({INTEGRATION: 0}, drop=True)
    counts = adq.flag_counts(rdq)
    maps = {f: adq.flag_map(rdq, [f]) for f in MAP_FLAGS}
    if rate is not None:
        image = rate["data"]
    else:
        image = nanmedian(rateints["data"], INTEGRATION)
    lazy = {"counts": counts, "maps": maps, "image": image}
    if rateints is not None:
        lazy["per_int"] = adq.flags_per_integration(rateints["dq"], ("JUMP_DET", "SATURATED"))
    ramp_key = next((k for k in ("dark_current", "linearity", "jump", "clean_flicker_noise", "refpix",
                                 "superbias", "saturation") if k in found.ramps), None)
    ramp = _open(found.ramps[ramp_key]) if ramp_key else None
    if ramp is not None:
        lazy["nsat"] = saturation_summary(ramp)["n_saturated"]
    with warnings.catch_warnings():
        # without a rate product the image is the median of the integrations: reference and
        # always-flagged pixels are NaN in every one (NaN is the right median there)
        warnings.filterwarnings("ignore", message="All-NaN slice encountered", category=RuntimeWarning)
        (got,) = dask.compute(lazy)
    table = adq.flag_table(got["counts"])
    rep.tables["DQ flags of the rate image"] = table
    x, y = _coord(ref, X), _coord(ref, Y)
    rep.figure("dq_summary", plots.dq_fractions(table))
    rep.figure("dq_maps", plots.flag_maps({k: v.values for k, v in got["maps"].items()}, x=x, y=y))
    for f in ("DO_NOT_USE", "SATURATED", "JUMP_DET"):
        num(f"{f} fraction of rate pixels", float(table.get(f, (0, 0.0))[1]), "%")
    if "per_int" in got:
        pi = got["per_int"]
        rep.figure("flags_per_int", plots.per_integration(
            {"JUMP_DET": 100 * pi["JUMP_DET_fraction"].values, "SATURATED": 100 * pi["SATURATED_fraction"].values},
            title="Pixels flagged per integration (rateints dq)"))
        num("jump rate (JUMP_DET per integration)", 100 * float(pi["JUMP_DET_fraction"].mean()),
            "% of pixels", pixels_per_integration=float(pi["JUMP_DET"].mean()))
    else:
        rep.skip("flags_per_int", "no rateints product: per-integration flags skipped")
    if "nsat" in got:
        rep.figure("saturation_groups", plots.saturation_per_group(got["nsat"].values))
    else:
        rep.skip("saturation_groups", "no saved ramp (run with --save-steps dark_current): group-level figures skipped")

    img = np.asarray(got["image"].values, np.float64)
    units = str(ref["data"].attrs.get("units", "DN/s"))
    rep.figure("rate_image", plots.rate_image(img, x=x, y=y, title="Rate" if rate is not None
                                              else "Median rate of the integrations", units=units))

    # ---- traces
    exp_type = str(ref.attrs.get("EXP_TYPE", "")).upper()
    imaging = orders is None and exp_type in IMAGING_EXP_TYPES
    if imaging:
        orders = {}  # a defocused imaging-TSO PSF is not a spectral trace
    orders = dict(orders) if orders is not None else default_orders(img, x)
    if radius is None:
        radius = default_radius(img, orders)
    traces = None
    if orders:
        med = xr.DataArray(img, dims=(Y, X))
        traces = atr.trace_orders(med, orders).compute()
    bg_mask = None
    if traces is not None:
        # orders not traced (SOSS order 3) and hot pixels must not count as background either
        faint = np.isfinite(img) & (img < np.nanmedian(img) + 3.0 * _noise(img))
        bg_mask = atr.trace_mask(traces["trace"], med, halfwidth=mask_halfwidth) & xr.DataArray(faint, dims=(Y, X))
        if Y in ref.coords:
            bg_mask = bg_mask.assign_coords({Y: ref[Y], X: ref[X]})

    # ---- 1/f PSD: a group difference of a saved ramp, else one rateints frame
    if ramp is not None or rateints is not None:
        fast = int(ref.attrs.get("FASTAXIS", -2))
        if ramp is not None and ramp.sizes["group"] > 1:
            d = ramp["data"].isel({INTEGRATION: 0})
            frame = (d.isel(group=-1) - d.isel(group=-2)).astype(np.float64)
            what, u = f"last − previous group, integration 1 ({ramp_key})", "DN²/Hz"
        else:
            frame = rateints["data"].isel({INTEGRATION: 0}).astype(np.float64)
            what, u = "rateints, integration 1", "(DN/s)²/Hz"
        mask = None if bg_mask is None else bg_mask.drop_vars([Y, X], errors="ignore").values
        psd = a1f.column_background_psd(frame.drop_vars([c for c in frame.coords], errors="ignore"),
                                        mask, fastaxis=fast, n_frequencies=300).compute()
        rep.figure("column_psd", plots.column_psd(psd["frequency"].values, psd.values, units=u,
                                                  title=f"Column background PSD\n{what}"))
    else:
        rep.skip("column_psd", "no rateints or ramp product")

    if traces is None:
        note = ("no illuminated spectral trace found: tracing, extraction and light curves skipped"
                if not imaging else
                f"imaging exposure (EXP_TYPE {exp_type}): no spectral trace; time-series photometry "
                f"(tso_photometry) is stage 2")
        for k in ("trace_overlay", "trace_position", "spectrum", "lc_matrix", "white_light",
                  "binned_scatter", "sensitivity", "white_light_psd"):
            rep.skip(k, note)
        return _finish(rep, outdir, title or root)

    # traces are in array rows; the image axes are detector coordinates
    tr_lines = {f"order {int(o)}": (x, traces["trace"].sel(order=o).values + float(y[0]))
                for o in traces["order"].values}
    rep.figure("trace_overlay", plots.rate_image(img, x=x, y=y, traces=tr_lines, aperture=radius, units=units,
                                                 title=f"Traces (B-spline) and the ±{radius:g}-pixel aperture"))
    if rateints is None:
        for k in ("trace_position", "spectrum", "lc_matrix", "white_light", "binned_scatter", "sensitivity",
                  "white_light_psd"):
            rep.skip(k, "no rateints product: per-integration figures skipped")
        return _finish(rep, outdir, title or root)

    ri = rateints
    if correct_1overf:
        ri = a1f.correct_rateints_1overf(ri, bg_mask)
        num("1/f correction", f"rateints level, column median of pixels > {mask_halfwidth:g} rows "
                              f"from the traces")
    else:
        num("1/f correction", "none applied by the report")
    trace1 = traces["trace"].sel(order=1, drop=True)
    spec = aex.extract_aperture(ri, trace1.assign_coords({X: _coord(ri, X)}), radius=radius)
    lazy = {"spec": spec}
    if trace_integrations:
        lazy["per_int_trace"] = atr.trace_orders(ri["data"], orders)["trace"]
    (got,) = dask.compute(lazy)
    spec = got["spec"]
    if "per_int_trace" in got:
        pos = {}
        for o in got["per_int_trace"]["order"].values:
            t = got["per_int_trace"].sel(order=o)
            pos[f"order {int(o)}"] = atr.trace_position(t).values
        rep.figure("trace_position", plots.trace_positions(pos))
        num("trace movement rms (order 1)", float(np.nanstd(pos["order 1"])), "pixel")
    else:
        rep.skip("trace_position", "per-integration tracing switched off")

    cols = np.flatnonzero(np.isfinite(spec["flux"].values).all(axis=0))
    spec = spec.isel({X: cols})
    xs = _coord(spec, X)
    rep.figure("spectrum", plots.spectra(xs, spec["flux"].values, median=np.median(spec["flux"].values, axis=0),
                                         title=f"Order-1 spectra of {spec.sizes[INTEGRATION]} integrations"))
    nint = spec.sizes[INTEGRATION]
    times = alc.time_seconds(spec)
    if times is None:
        times = np.arange(nint, dtype=np.float64)
    oot = _as_mask(out_of_transit, nint)
    wl0 = alc.white_light(spec, out_of_transit=oot, filter_size=1)
    fit = None
    if oot is None and nint >= 8:
        fit = alc.fit_transit(wl0["flux"], wl0["flux_err"], times=times)
        depth, derr = float(fit["depth"]), float(fit["depth_err"])
        if depth > 5 * derr and depth > 0:
            cad = float(np.median(np.diff(times)))
            half = 0.5 * float(fit["duration"]) + cad
            oot = np.abs(times - float(fit["t0"])) > half
            if oot.sum() < 4:
                oot = None
            num("out-of-transit integrations", int(np.sum(oot)) if oot is not None else nint,
                note="from the box fit")
        else:
            fit = None
            num("out-of-transit integrations", nint, note="all: no transit found (box depth < 5σ)")
    elif oot is not None:
        num("out-of-transit integrations", int(oot.sum()), note="given")
    wl = alc.white_light(spec, out_of_transit=oot, filter_size=1) if oot is not None else wl0
    f, e = wl["flux"].values, wl["flux_err"].values
    base = np.ones(nint, bool) if oot is None else oot
    # the ratio benchmarks/lightcurve.py prints: one function, so the two agree
    noise = alc.scatter_ratio(wl["flux"], wl["flux_err"], out_of_transit=base)
    num("white-light scatter (out of transit)", float(noise["scatter"]) * 1e6, "ppm")
    num("white-light expected scatter (from err)", float(noise["expected"]) * 1e6, "ppm")
    num("white-light scatter / expected", float(noise["ratio"]))
    model = None
    if oot is not None and (~oot).any():
        fit = _fit_trapezoid(wl["flux"], wl["flux_err"], times)
        red = max(1.0, float(fit["chi2"]) / max(1, nint - 5)) ** 0.5
        num("transit depth (trapezoid fit)", float(fit["depth"]) * 1e6, "ppm",
            error=float(fit["depth_err"]) * red * 1e6, t0_h=float(fit["t0"]) / 3600,
            T14_h=float(fit["duration"]) / 3600, ingress_h=float(fit.attrs["ingress"]) / 3600,
            note="error × √(χ²/dof) when > 1")
        shape = alc.trapezoid_shape(times, t0=float(fit["t0"]), duration=float(fit["duration"]),
                                    ingress=float(fit.attrs["ingress"]))
        model = float(fit["baseline"]) * (1.0 - float(fit["depth"]) * shape)
    rep.figure("white_light", plots.white_light(times / 3600.0, f, e, model=model))
    num("white-light outlier replacements", int(wl["n_replaced"].sum()))

    m = alc.normalized_lightcurves(spec, out_of_transit=oot)
    rep.figure("lc_matrix", plots.lightcurve_matrix(m["lc"].values, x=xs))
    sens = alc.sensitivity(m, out_of_transit=oot).values
    rep.figure("sensitivity", plots.sensitivity(xs, sens))
    num("sensitivity (median over columns)", float(np.nanmedian(sens)), "× expected")
    nbase = int(base.sum())
    if nbase >= 8:
        bs = alc.binned_scatter(wl["flux"], out_of_transit=base)
        rep.figure("binned_scatter", plots.binned_scatter(bs["bin_size"].values, bs["rms"].values, bs["expected"].values))
        psd = alc.lightcurve_psd(wl["flux"], times=times, out_of_transit=base, n_frequencies=300)
        rep.figure("white_light_psd", plots.lightcurve_psd(psd["frequency"].values, psd.values))
    else:
        rep.skip("binned_scatter", f"only {nbase} out-of-transit integrations")
        rep.skip("white_light_psd", f"only {nbase} out-of-transit integrations")
    return _finish(rep, outdir, title or root)


def _fit_trapezoid(flux, flux_err, times):
    """Box fit (grid over t0 and duration), then trapezoids around it: t0 on a finer grid,
    T14 within ±30 % and ingress 0–30 % of T14; the lowest χ² wins."""
    box = alc.fit_transit(flux, flux_err, times=times)
    t0, dur = float(box["t0"]), float(box["duration"])
    cad = float(np.median(np.diff(times)))
    best = box
    t0s = t0 + np.arange(-2, 2.01, 0.5) * cad / 2
    durs = dur * np.linspace(0.85, 1.3, 10)
    for frac in (0.05, 0.1, 0.15, 0.2, 0.3):
        for d in durs:
            f = alc.fit_transit(flux, flux_err, times=times, t0=t0s, duration=d, ingress=frac * d)
            if float(f["chi2"]) < float(best["chi2"]):
                best = f
    return best


def _finish(rep: _Report, outdir: Path, title: str) -> Path:
    for key in FIGURES:
        if key not in rep.entries:
            rep.skip(key, "not produced")
    path = outdir / "index.html"
    path.write_text(rep.html(f"daskramp report: {title}"), encoding="utf-8")
    (outdir / "numbers.json").write_text(json.dumps(rep.numbers, indent=1, ensure_ascii=False),
                                         encoding="utf-8")
    return path


# ---------------------------------------------------------------- command line


def add_report_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``daskramp report`` (shared by :func:`main` and the package CLI)."""
    p.add_argument("products", nargs="+", metavar="PRODUCTS", help="products directory, or *_rate.zarr/*_rateints.zarr/*_ramp.zarr stores")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory of index.html and the PNG figures")
    p.add_argument("--oot", metavar="RANGES", help="out-of-transit integrations as index ranges, e.g. 0:40,110:158")
    p.add_argument("--radius", type=float, default=None, metavar="PIXELS",
                   help="aperture half-height in pixels (default 15; 2.5 × the FWHM of a narrow "
                        "NIRSpec/NIRCam trace)")
    p.add_argument("--correct-1overf", action="store_true",
                   help="remove the column background of each integration before extraction")
    p.add_argument("--no-trace-integrations", action="store_true",
                   help="trace the median image only (skips the trace-position figure)")
    p.add_argument("--orders", metavar="JSON", help='JSON of trace settings, e.g. \'{"1": {"x_start": 2040, "x_end": 5, "y_start": 80}}\'')
    return p


def run_from_args(args: argparse.Namespace) -> Path:
    """Run :func:`make_report` from parsed :func:`add_report_arguments` arguments."""
    orders = None
    if args.orders:
        orders = {int(k): v for k, v in json.loads(args.orders).items()}
    src = args.products[0] if len(args.products) == 1 else args.products
    return make_report(src, args.out, out_of_transit=args.oot, orders=orders, radius=args.radius,
                       correct_1overf=args.correct_1overf, trace_integrations=not args.no_trace_integrations)


def main(argv=None) -> int:
    """``python -m daskramp.report PRODUCTS --out DIR``; prints the path of index.html."""
    p = add_report_arguments(argparse.ArgumentParser(prog="daskramp report", description=__doc__.split("\n")[0]))
    args = p.parse_args(argv)
    try:
        print(run_from_args(args))
    except (OSError, ValueError) as err:
        print(f"daskramp report: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
