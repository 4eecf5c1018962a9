"""daskramp: JWST Stage 1 (ramps → slopes) as a lazy, chunked, distributed workflow.

Main entry points::

    import daskramp
    ds = daskramp.open_exposure("exposure.zarr")          # lazy (integration, group, y, x)
    result = daskramp.detector1(ds, refs="refs/")         # lazy rate / rateints
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["open_exposure", "ingest", "detector1", "__version__"]


def __getattr__(name):
    # imported on first use so `import daskramp` stays light for workers and the CLI
    if name in ("open_exposure", "ingest"):
        from . import io

        return getattr(io, name)
    if name == "detector1":
        from .pipeline import detector1

        return detector1
    raise AttributeError(f"module 'daskramp' has no attribute {name!r}")
