"""The one doorway from xarray to dask for ramp kernels.

Every step wrapper applies its pure numpy kernel through :func:`map_ramp_blocks`, so the
chunking rules live here only:

* blocks are aligned on the shared dims ``integration, group, y, x`` (2-D reference images
  and per-integration arrays follow the chunks of the 4-D template);
* ``group`` is always whole in a block; ``integration`` may be split anywhere for
  pixel-local steps, and must be split on segment bounds for steps that pool statistics over
  integrations (the wrapper rechunks, see :func:`chunk_by_segment`);
* spatial dims may be split (pixel tiles); kernels that look at neighbours declare a
  ``halo`` in pixels and get overlapping blocks, trimmed afterwards;
* numpy-backed inputs run the kernel directly (no dask), so kernels, wrappers and tests
  share one code path.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence

import dask.array as da
import numpy as np
import xarray as xr

from ..dims import GROUP, INTEGRATION, RAMP_DIMS, X, Y, chunk, segment_bounds

_LETTER = {INTEGRATION: "i", GROUP: "g", Y: "y", X: "x"}

#: True while the numpy ramps given to the steps belong to the caller (a fused tile's window)
_OWNED = contextvars.ContextVar("daskramp_owned_window", default=False)


@contextlib.contextmanager
def owned_window() -> Iterator[None]:
    """Within this context the numpy ramps passed to :func:`map_ramp_blocks` belong to the
    caller, who keeps no other use for a step's input once the step has run (the fused tile
    chain: :mod:`daskramp.engine.chain`), so a kernel declared ``inplace`` writes its result
    over its first argument: a tile's ramp is then allocated once, not once per step (each
    new array of tens of MB costs a page fault per page as it is first written)."""
    token = _OWNED.set(True)
    try:
        yield
    finally:
        _OWNED.reset(token)


def _index(dims: Sequence[str]) -> str:
    try:
        return "".join(_LETTER[d] for d in dims)
    except KeyError as err:  # pragma: no cover - programming error
        raise ValueError(f"unknown dim {err} in {dims}; ramp kernels use {RAMP_DIMS}") from None


def map_ramp_blocks(
    kernel: Callable,
    *args: xr.DataArray,
    dims_out: Sequence[str] = RAMP_DIMS,
    dtype,
    halo: int = 0,
    new_axis: tuple[str, int] | None = None,
    name: str | None = None,
    inplace: bool = False,
    **kwargs,
) -> xr.DataArray:
    """Apply ``kernel(*blocks, **kwargs)`` block by block and return one DataArray.

    Parameters
    ----------
    kernel : callable
        Pure function of numpy blocks; positional inputs in the order of ``args`` with their
        own dims (a subset of ``integration, group, y, x``, in that order); keyword-only
        parameters in ``kwargs`` (must be picklable scalars or small arrays).
    *args : xarray.DataArray
        The first 4-D argument is the template whose chunks define the blocks.
    dims_out : sequence of str
        Dims of the kernel output (a subset of the ramp dims, in order).  Dims absent from
        the output are passed whole to the kernel (contracted).
    dtype : numpy dtype of the output.
    halo : int
        Neighbour pixels the kernel needs on each side in ``y`` and ``x``; only used when a
        spatial dim is split into several chunks.
    new_axis : (name, size), optional
        The kernel output has an extra leading axis (e.g. several fields stacked together).
    inplace : bool
        The kernel takes ``out=`` (an array of the first argument's shape and ``dtype``) and
        may be given its first argument as ``out``: done inside :func:`owned_window` only,
        for a writeable numpy first argument of that dtype (never on dask blocks, whose
        inputs other tasks may share).
    """
    template = next((a for a in args if a.dims == RAMP_DIMS), None)
    if template is None:
        raise ValueError("map_ramp_blocks needs one (integration, group, y, x) argument")
    for a in args:
        order = [d for d in RAMP_DIMS if d in a.dims]
        if list(a.dims) != order:
            raise ValueError(f"argument dims {a.dims} are not in ramp order {RAMP_DIMS}")
    out_dims = tuple(dims_out) if new_axis is None else (new_axis[0], *dims_out)
    coords = {k: v for k, v in template.coords.items() if set(v.dims) <= set(dims_out)}

    if not any(isinstance(a.data, da.Array) for a in args):
        blocks = [np.asarray(a.data) for a in args]
        first = blocks[0]
        if (inplace and _OWNED.get() and args[0].dims == tuple(dims_out) and new_axis is None
                and first.dtype == np.dtype(dtype) and first.flags.writeable):
            kwargs = {**kwargs, "out": first}
        out = kernel(*blocks, **kwargs)
        if out_dims == template.dims and out.shape == template.shape:
            # on the template's grid: share its coordinates and indexes (building them anew
            # costs more than a small kernel call)
            res = template.copy(data=out)
            res.attrs, res.encoding, res.name = {}, {}, name
            return res
        return xr.DataArray(out, dims=out_dims, coords=coords, name=name)

    tchunks = dict(zip(RAMP_DIMS, template.chunks or template.shape))
    if isinstance(template.data, da.Array):
        tchunks = dict(zip(RAMP_DIMS, template.data.chunks))
    if len(tchunks[GROUP]) > 1:
        raise ValueError("group must be whole in every block; rechunk with {'group': -1}")

    arrays = []
    for a in args:
        arr = da.asarray(a.data)
        arr = arr.rechunk(tuple(tchunks[d] for d in a.dims))
        arrays.append((arr, a.dims))

    split = [d for d in (Y, X) if len(tchunks[d]) > 1]
    if halo and split:
        depth_dims = {d: halo for d in split}
        arrays = [
            (
                da.overlap.overlap(
                    arr,
                    depth={i: depth_dims.get(d, 0) for i, d in enumerate(dims)},
                    boundary={i: "none" for i, d in enumerate(dims)},
                ),
                dims,
            )
            for arr, dims in arrays
        ]

    blockwise_args = []
    for arr, dims in arrays:
        blockwise_args += [arr, _index(dims)]
    out_index = _index(dims_out)
    new_axes = {}
    if new_axis is not None:
        out_index = "f" + out_index
        new_axes = {"f": new_axis[1]}
    if name is not None:
        # a readable prefix, made unique: dask keys must differ between steps and inputs
        from dask.base import tokenize

        name = f"{name}-{tokenize(kernel, *blockwise_args, dims_out, new_axis, kwargs)}"
    out = da.blockwise(
        kernel,
        out_index,
        *blockwise_args,
        dtype=dtype,
        concatenate=True,
        new_axes=new_axes,
        name=name,
        **kwargs,
    )
    if halo and split:
        axes_depth = {}
        for i, d in enumerate(out_dims):
            if d in split:
                axes_depth[i] = halo
        out = da.overlap.trim_internal(out, axes_depth, boundary={i: "none" for i in axes_depth})
    return xr.DataArray(out, dims=out_dims, coords=coords)


def rechunk_method() -> str:
    """``"p2p"`` (disk-backed) when a dask.distributed client is the active scheduler, else
    dask's in-memory ``"tasks"`` rechunk."""
    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):
        return "tasks"
    from dask.base import get_scheduler

    return "p2p" if get_scheduler() == client.get else "tasks"


def chunk_by_segment(ds: xr.Dataset, *, stats_scope: str = "segment") -> xr.Dataset:
    """Rechunk ``integration`` so each block holds one whole segment (or the whole exposure).

    Steps that pool statistics over integrations (jump, ramp_fit) call this; spatial chunks
    are kept.  ``stats_scope="exposure"`` pools every integration of the stitched exposure.
    """
    if stats_scope == "segment":
        sizes = tuple(b - a for a, b in segment_bounds(ds))
    elif stats_scope == "exposure":
        sizes = (ds.sizes[INTEGRATION],)
    else:
        raise ValueError(f"stats_scope must be 'segment' or 'exposure', got {stats_scope!r}")
    if not any(isinstance(v.data, da.Array) for v in ds.data_vars.values()):
        return ds
    return chunk(ds, {INTEGRATION: sizes, GROUP: -1})
