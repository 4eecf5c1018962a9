"""Run Detector1 on a cluster and write the products: what ``daskramp run`` does."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import xarray as xr

from .cluster import ClusterProfile, connect, worker_memory_limit
from .config import ConfigError


def product_root(inputs: Sequence[Path | str]) -> str:
    """Product file root from the first input: ``jw…_00001-seg001_nis_uncal.fits`` → ``jw…_00001_nis``."""
    name = Path(inputs[0]).name
    for suffix in (".zarr", ".fits"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name.endswith("_uncal"):
        name = name[: -len("_uncal")]
    import re

    return re.sub(r"-seg\d{3}", "", name)


def run(
    inputs: Sequence[str | Path],
    outdir: str | Path,
    *,
    refs: str | Path | None = None,
    config: Mapping | None = None,
    overrides: Mapping[str, str] | None = None,
    save_steps: Sequence[str] = (),
    cluster: ClusterProfile | None = None,
    fits: bool = True,
    quiet: bool = False,
    client=None,
) -> dict:
    """Open the exposure, build the graph, execute it on a dask cluster, write the products.

    Returns a summary dict (paths, wall time, throughput, figures from the products).
    """
    from .io import open_exposure
    from .io.products import write_products
    from .pipeline import detector1, summarize

    config = dict(config or {})
    unknown = set(config) - {"steps", "stats_scope", "save_steps", "tile_columns"}
    if unknown:
        raise ConfigError(f"unknown workflow settings {sorted(unknown)}")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    inputs = [Path(p) for p in inputs]
    if len(inputs) == 1 and inputs[0].suffix != ".fits" and not inputs[0].exists():
        raise FileNotFoundError(f"{inputs[0]}: input not found")
    t0 = time.perf_counter()

    def _go(client):
        mem = worker_memory_limit(client) if client is not None else None
        ds = open_exposure(inputs if len(inputs) > 1 else inputs[0])
        result = detector1(
            ds,
            refs,
            steps=config.get("steps"),
            stats_scope=config.get("stats_scope", "segment"),
            save_steps=list(save_steps) or list(config.get("save_steps", [])),
            memory_limit=mem,
            tile_columns=config.get("tile_columns"),
            overrides=overrides,
        )
        provenance = dict(result.provenance)
        provenance["inputs"] = [str(p) for p in inputs]
        root = product_root(inputs)
        paths = write_products(result.products(), outdir, root=root, provenance=provenance, fits=fits)
        # figures from the written stores: summarising the lazy products would run the graph again
        opened = {k[: -len("_zarr")]: xr.open_zarr(v, consolidated=False)
                  for k, v in paths.items() if k.endswith("_zarr")}
        summary = summarize(opened.get("rate"), opened.get("rateints"))
        nbytes = ds["data"].size * 2
        return paths, summary, nbytes, provenance

    if client is not None:
        paths, summary, nbytes, provenance = _go(client)
    else:
        with connect(cluster, quiet=quiet) as c:
            paths, summary, nbytes, provenance = _go(c)
    wall = time.perf_counter() - t0
    out = {
        "outputs": {k: str(v) for k, v in paths.items()},
        "steps": {k: v["status"] for k, v in provenance["steps"].items()},
        "wall_s": wall,
        "uncal_MB": nbytes / 1e6,
        "throughput_MB_s": nbytes / 1e6 / wall,
        **summary,
    }
    return out
