"""Matplotlib figures of Stage-1 TSO products (the figures of the TSO notebooks).

Every function takes small, already reduced arrays (numpy or computed xarray objects: a rate
image, per-integration counts, light curves…) and returns a :class:`matplotlib.figure.Figure`
with labelled axes, units and colour bars; :func:`save` writes it as PNG and closes it.
Figures are built on the Agg backend through the object API (no global pyplot state), so
they can be made in worker threads and in headless sessions.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=False)

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

#: long, narrow SOSS-like frames: wide figures
WIDE = (12.0, 4.0)
SQUARE = (7.0, 5.0)


def _finite_limits(image, lo=1.0, hi=99.0):
    v = np.asarray(image, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, 1.0
    a, b = np.percentile(v, [lo, hi])
    if not b > a:
        b = a + 1.0
    return float(a), float(b)


def _image(ax, fig, image, *, label: str, cmap="viridis", vmin=None, vmax=None, extent=None):
    img = np.asarray(image, np.float64)
    if vmin is None or vmax is None:
        a, b = _finite_limits(img)
        vmin = a if vmin is None else vmin
        vmax = b if vmax is None else vmax
    im = ax.imshow(img, origin="lower", aspect="auto", interpolation="none", cmap=cmap,
                   vmin=vmin, vmax=vmax, extent=extent)
    cb = fig.colorbar(im, ax=ax, pad=0.01)
    cb.set_label(label)
    return im


def _xy_extent(x, y):
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    return (x[0] - 0.5, x[-1] + 0.5, y[0] - 0.5, y[-1] + 0.5)


def save(fig: Figure, path) -> Path:
    """Write ``fig`` as PNG (100 dpi) and release it; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    fig.clear()
    return path


# ---------------------------------------------------------------- data quality


def dq_fractions(table: dict[str, tuple[int, float]], *, title: str = "DQ flags of the rate image") -> Figure:
    """Horizontal bar chart of the percentage of pixels carrying each flag.

    ``table`` is :func:`daskramp.analysis.dq.flag_table` output ``{flag: (count, percent)}``.
    """
    names = list(table)
    pct = np.array([table[n][1] for n in names], np.float64)
    fig = Figure(figsize=(8.0, max(2.5, 0.35 * len(names) + 1.2)), layout="constrained")
    ax = fig.add_subplot()
    ypos = np.arange(len(names))
    ax.barh(ypos, np.maximum(pct, 1e-4), color="tab:blue")
    for yy, (n, p) in zip(ypos, zip(names, pct)):
        ax.text(max(p, 1e-4) * 1.1, yy, f"{table[n][0]} px ({p:.3g} %)", va="center", fontsize=8)
    ax.set_yticks(ypos, names)
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 300.0)
    ax.set_xlabel("pixels flagged (%)")
    ax.set_title(title)
    return fig


def flag_maps(maps: dict[str, np.ndarray], *, x=None, y=None, title: str = "DQ flag maps") -> Figure:
    """One panel per flag: flagged pixels (1) over the detector (0), with a colour bar."""
    n = max(1, len(maps))
    fig = Figure(figsize=(WIDE[0], 2.2 * n + 0.6), layout="constrained")
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    for ax, (name, m) in zip(axes, maps.items()):
        m = np.asarray(m, np.float64)
        ext = None if x is None else _xy_extent(x, y)
        _image(ax, fig, m, label="flagged (1) / not (0)", cmap="gray_r", vmin=0.0, vmax=1.0, extent=ext)
        ax.set_title(f"{name}: {int(np.nansum(m))} pixels")
        ax.set_ylabel("y (pixel)")
    axes[-1].set_xlabel("x (pixel)")
    fig.suptitle(title)
    return fig


def per_integration(values: dict[str, np.ndarray], *, integration=None, ylabel="fraction of pixels (%)",
                    title="Flags per integration") -> Figure:
    """Lines of per-integration quantities (e.g. JUMP_DET and SATURATED fractions in %)."""
    fig = Figure(figsize=SQUARE, layout="constrained")
    ax = fig.add_subplot()
    for name, v in values.items():
        v = np.asarray(v, np.float64)
        i = np.arange(v.size) if integration is None else np.asarray(integration)
        ax.plot(i, v, "o-", ms=3, label=name)
    ax.set_xlabel("integration")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    return fig


def saturation_per_group(n_saturated, *, title="Saturated pixels per group") -> Figure:
    """(integration, group) counts of SATURATED pixels as an image with a colour bar."""
    a = np.asarray(n_saturated, np.float64)
    fig = Figure(figsize=SQUARE, layout="constrained")
    ax = fig.add_subplot()
    _image(ax, fig, a.T, label="saturated pixels", cmap="magma", vmin=0.0, vmax=max(1.0, np.nanmax(a)))
    ax.set_xlabel("integration")
    ax.set_ylabel("group")
    ax.set_title(title)
    return fig


# ---------------------------------------------------------------- images and 1/f


def rate_image(image, *, x=None, y=None, title="Rate", units="DN/s", traces=None,
               aperture: float | None = None) -> Figure:
    """The rate image with a colour bar; optionally traces ``{label: (x, y)}`` drawn over it
    (with the ``±aperture`` band)."""
    fig = Figure(figsize=WIDE, layout="constrained")
    ax = fig.add_subplot()
    ext = None if x is None else _xy_extent(x, y)
    _image(ax, fig, image, label=f"rate ({units})", extent=ext)
    colours = ["tab:red", "cornflowerblue", "orange"]
    for k, (label, (tx, ty)) in enumerate((traces or {}).items()):
        c = colours[k % len(colours)]
        tx, ty = np.asarray(tx, np.float64), np.asarray(ty, np.float64)
        ax.plot(tx, ty, "-", color=c, lw=1.2, label=label)
        if aperture:
            ax.fill_between(tx, ty - aperture, ty + aperture, color=c, alpha=0.15)
    if traces:
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("x (pixel)")
    ax.set_ylabel("y (pixel)")
    ax.set_title(title)
    return fig


def column_psd(frequency, psd, *, pixel_time=10e-6, label=None, title="PSD of the column background",
               units="DN²/Hz") -> Figure:
    """Log-log PSD with a secondary axis giving the length scale in pixels (1/(f·10 µs)).

    ``psd`` is one curve or ``{label: curve}``.  The Nyquist frequency 1/(2 · pixel_time)
    is left out: pixels read at an even pace carry only a cosine term there, so that bin holds
    about half the power of its neighbours and would stretch the axis down.
    """
    f = np.asarray(frequency, np.float64)
    curves = psd if isinstance(psd, dict) else {label or "PSD": psd}
    below = f < 0.5 / pixel_time * (1.0 - 1e-9)
    fig = Figure(figsize=SQUARE, layout="constrained")
    ax = fig.add_subplot()
    for name, p in curves.items():
        ax.plot(f[below], np.asarray(p, np.float64)[..., below], lw=1.0, label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel(f"PSD ({units})")
    sec = ax.secondary_xaxis("top", functions=(lambda v: 1.0 / (np.maximum(v, 1e-30) * pixel_time),
                                               lambda v: 1.0 / (np.maximum(v, 1e-30) * pixel_time)))
    sec.set_xlabel("length scale (pixels)")
    ax.set_title(title)
    if len(curves) > 1 or label:
        ax.legend()
    return fig


# ---------------------------------------------------------------- spectra


def trace_positions(positions: dict[str, np.ndarray], *, title="Trace position at the middle column") -> Figure:
    """Row of each order's trace at its middle column, relative to the median, vs integration."""
    fig = Figure(figsize=SQUARE, layout="constrained")
    ax = fig.add_subplot()
    for name, v in positions.items():
        v = np.asarray(v, np.float64)
        ax.plot(np.arange(v.size), v, "o-", ms=3, label=name)
    ax.set_xlabel("integration")
    ax.set_ylabel("trace movement (pixel)")
    ax.set_title(title)
    ax.legend()
    return fig


def spectra(x, flux, *, median=None, xlabel="x (pixel)", units="DN/s", title="Extracted spectra") -> Figure:
    """Every integration's spectrum (thin lines) and the median spectrum."""
    xv = np.asarray(x, np.float64)
    f = np.atleast_2d(np.asarray(flux, np.float64))
    fig = Figure(figsize=WIDE, layout="constrained")
    ax = fig.add_subplot()
    for row in f[:: max(1, f.shape[0] // 100)]:
        ax.plot(xv, row, color="black", alpha=0.08, lw=0.6)
    if median is not None:
        ax.plot(xv, np.asarray(median, np.float64), color="tab:red", lw=1.0, label="median")
        ax.legend()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"flux ({units})")
    ax.set_title(title)
    return fig


def lightcurve_matrix(lc, *, x, integration=None, xlabel="x (pixel)", title="Spectroscopic light curves",
                      limit: float | None = None) -> Figure:
    """(x, integration) light curves in ppm as an image (integration up, x across)."""
    a = np.asarray(lc, np.float64)
    xv = np.asarray(x, np.float64)
    i = np.arange(a.shape[1]) if integration is None else np.asarray(integration, np.float64)
    if limit is None:
        v = np.abs(a[np.isfinite(a)])
        limit = float(np.percentile(v, 99)) if v.size else 1.0
    fig = Figure(figsize=WIDE, layout="constrained")
    ax = fig.add_subplot()
    _image(ax, fig, a.T, label="relative flux − 1 (ppm)", cmap="RdBu_r", vmin=-limit, vmax=limit,
           extent=_xy_extent(xv, i))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("integration")
    ax.set_title(title)
    return fig


def white_light(t, flux, flux_err, *, model=None, t_label="time since first integration (h)",
                title="White-light curve") -> Figure:
    """Normalised white-light curve with error bars (and a model curve if given)."""
    t = np.asarray(t, np.float64)
    f = np.asarray(flux, np.float64)
    e = np.asarray(flux_err, np.float64)
    fig = Figure(figsize=SQUARE, layout="constrained")
    ax = fig.add_subplot()
    ax.errorbar(t, (f - 1) * 1e6, e * 1e6, fmt=".", color="black", ms=4, elinewidth=0.7, label="data")
    if model is not None:
        ax.plot(t, (np.asarray(model, np.float64) - 1) * 1e6, color="tab:red", label="box/trapezoid fit")
        ax.legend()
    ax.set_xlabel(t_label)
    ax.set_ylabel("relative flux − 1 (ppm)")
    ax.set_title(title)
    return fig


def binned_scatter(bin_size, rms, expected, *, title="Binned white-light scatter") -> Figure:
    """RMS (ppm) of the binned light curve vs bin size, with the 1/√N white-noise law."""
    n = np.asarray(bin_size, np.float64)
    fig = Figure(figsize=SQUARE, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(n, np.asarray(rms, np.float64) * 1e6, "o-", color="black", label="measured")
    ax.plot(n, np.asarray(expected, np.float64) * 1e6, "--", color="tab:red", label="expected 1/√N")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("bin size (integrations)")
    ax.set_ylabel("RMS (ppm)")
    ax.set_title(title)
    ax.legend()
    return fig


def sensitivity(x, ratio, *, smooth: int = 11, xlabel="x (pixel)", title="Sensitivity per column") -> Figure:
    """Out-of-transit scatter / expected scatter per column, with a running median."""
    from scipy.ndimage import median_filter

    xv = np.asarray(x, np.float64)
    r = np.asarray(ratio, np.float64)
    fig = Figure(figsize=WIDE, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(xv, r, "o", ms=2.5, color="black", label="per column")
    ok = np.isfinite(r)
    if ok.sum() > smooth:
        ax.plot(xv[ok], median_filter(r[ok], size=smooth, mode="nearest"), color="tab:red",
                label=f"running median ({smooth})")
    ax.axhline(1.0, color="gray", ls="--", lw=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("× expected per-point scatter")
    ax.set_title(title)
    ax.legend()
    return fig


def lightcurve_psd(frequency, psd, *, title="White-light PSD (out of transit)") -> Figure:
    """Lomb-Scargle PSD of the white-light curve (relative flux²/Hz)."""
    f = np.asarray(frequency, np.float64)
    fig = Figure(figsize=SQUARE, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(f, np.asarray(psd, np.float64), color="black", lw=1.0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("PSD (relative flux²/Hz)")
    ax.set_title(title)
    return fig
