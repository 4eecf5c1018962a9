"""The doorway to dask for the graphs daskramp builds by hand.

Most of the computation is dask.array's own blockwise maps.  A few graphs are not: one task
per window that returns several arrays, a running sum chained along a fold, reads and
writes of file regions.  They are made here, and only here, as :class:`Tasks`: calls of a
function with arguments, where an argument that is the key of another call, or of a dask
collection the graph depends on, is replaced by that result when the task runs (so a large
value travels as one key, never inside every task).  :meth:`Tasks.array` turns some of the
calls into the blocks of a dask array.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import dask.array as da
from dask.highlevelgraph import HighLevelGraph

__all__ = ["Tasks"]


class Tasks:
    """Calls to be run by dask, and the collections they depend on.

    ``collections``: dask collections (arrays, delayed values) whose keys the calls take as
    arguments; their graphs become dependencies of every array made here.
    """

    def __init__(self, *collections):
        self._calls: dict = {}
        self._deps = [c for c in collections if c is not None]

    def copy(self) -> Tasks:
        """A copy to add other calls to (the calls so far are shared by both graphs)."""
        out = Tasks(*self._deps)
        out._calls = dict(self._calls)
        return out

    def call(self, key: Hashable, func, *args) -> Hashable:
        """Run ``func(*args)`` as the task ``key`` (a string, or ``(name, *block index)``);
        returns ``key``, to pass to later calls."""
        self._calls[key] = (func, *args)
        return key

    def item(self, key: Hashable, of: Hashable, name) -> Hashable:
        """The task ``key``: element ``name`` of the mapping that task ``of`` returns."""
        return self.call(key, dict.__getitem__, of, name)

    def array(self, name: str, chunks: Sequence[Sequence[int]], dtype) -> da.Array:
        """A dask array whose blocks are the calls keyed ``(name, *block index)`` (every
        block must have one); the other calls are the tasks they depend on."""
        graph = HighLevelGraph.from_collections(name, dict(self._calls), dependencies=self._deps)
        return da.Array(graph, name, chunks=tuple(tuple(c) for c in chunks), dtype=dtype)
