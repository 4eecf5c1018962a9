"""Detector1's products submitted one integration block (segment) at a time.

One graph for a whole exposure grows with the exposure, and so does the memory that holds
it. The process of the client and the scheduler keeps a task state for each of its tasks, and
workers keep the tasks whose results a reduction over the whole exposure still waits for. A
16-segment SOSS exposure has about 10,000 tasks. Here the cluster instead holds at most
``in_flight`` blocks of tasks at once (by default two, or more when a block has fewer tiles
than the cluster has worker threads: :func:`blocks_in_flight`), so the workers never wait
for the next block:

* block ``a``'s windows (the tiles of one segment, :class:`daskramp.engine.fused.SegmentProducts`)
  write its integrations into the ``rateints`` store, and return the per-integration
  figures (a few numbers) and their rate terms. As each tile's terms are computed, a task
  adds them to the running sum of the blocks before
  (:func:`daskramp.kernels.ramp_fit.add_block_terms`: the same sum, in the same order, as
  the one graph's). The sum is kept in files, one (1, term, y, x) float64 array per tile, in
  ``.<root>_segments.partial``. No task of a block then depends on a task of another
  block, so the scheduler forgets each block once it is summed;
* after the last block, the ``rate`` is finalised from the sum, and written and exported
  by :func:`daskramp.io.products.write_products` (a graph of one task per tile). The
  ``rateints`` FITS file is then exported from its store.

Every value equals the one-graph products (``tests/test_segments.py``). The same rules
hold as for one graph: the ``rateints`` store appears only once every block is counted as
written, and an interrupted run leaves only ``.partial`` files, which a rerun replaces.
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from collections import deque
from pathlib import Path

import numpy as np
from dask.base import tokenize

from .. import dq as _dq
from ..dims import PIXELDQ_DTYPE
from ..io.products import (
    BlockExport,
    ProductError,
    counted_writes,
    export_all,
    product_dataset,
    start_blockwise,
    write_products,
)
from ..io.store import finalize_store, is_complete, partial_path
from ..kernels.ramp_fit import RATE_TERMS, add_block_terms
from .graph import read_tile_files
from .stages import summary_figures

__all__ = ["blocks_in_flight", "write_by_segment"]


def write_by_segment(result, outdir, *, root: str, provenance, fits: bool, client,
                     in_flight: int | None = None, on_block=None):
    """Write ``rateints`` and ``rate`` of a fused :class:`daskramp.pipeline.Detector1Result`,
    submitting its integration blocks one after another to ``client``.

    Parameters
    ----------
    result : Detector1Result
        With ``segments`` (the fused layout). Its lazy ``rateints`` gives the store's
        layout, attributes and coordinates; its data are computed block by block.
    outdir, root, provenance, fits
        As for :func:`daskramp.io.products.write_products`.
    client : distributed.Client
    in_flight : int, optional
        Blocks submitted and not yet finished, at most (≥ 1); default :func:`blocks_in_flight`
        for the client's worker threads.
    on_block : callable, optional
        Called with ``(a, n)`` as block ``a`` of ``n`` is submitted (progress feedback).

    Returns
    -------
    (dict, dict)
        The paths of the products written (as ``write_products``), and the computed
        :func:`daskramp.engine.stages.summary_figures`.
    """
    from distributed import as_completed, futures_of

    seg = result.segments
    if seg is None:
        raise ValueError("write_by_segment needs the fused layout's products (result.segments)")
    if in_flight is None:
        slots = sum(client.nthreads().values())
        in_flight = blocks_in_flight(slots, len(seg.y_bounds) * len(seg.x_bounds))
    in_flight = max(1, int(in_flight))
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    zpath = outdir / f"{root}_rateints.zarr"
    template = product_dataset(result.rateints, provenance, kind="rateints")
    n = len(seg.int_bounds)
    # the running sum of the rate terms lives in files, one per tile, rewritten by each block:
    # as a Future it would chain every block's tasks to the next, and the scheduler keeps
    # the whole chain for as long as its last link is held
    tdir = outdir / f".{root}_segments.partial"
    state = _State(tdir, _fingerprint(template, seg, provenance))
    done = state.resumable(n, len(seg.y_bounds) * len(seg.x_bounds))
    if done and done == n and is_complete(zpath):
        targets = None  # killed after the rateints store was completed: only the rate is left
    elif done and partial_path(zpath).exists():
        targets = start_blockwise(template, zpath, resume=True)
    else:
        done = 0
        state.start()
        targets = start_blockwise(template, zpath)
    # the rateints FITS file is exported block by block, each block once it is stored, by
    # tasks that run beside the next blocks' windows (after the last block, the export would
    # be a pass of its own over the whole product)
    export = None
    exported: list = []  # (future of the slabs written, number expected) per block

    def export_block(a: int) -> None:
        count, want = export.slabs(*seg.int_bounds[a])
        exported.append((client.compute(count, priority=1), want))

    if fits and targets is not None:
        export = BlockExport(partial_path(zpath), outdir / f"{root}_rateints.fits", template, "rateints")
        if not export.ready:
            export = None
        for a in range(done if export is not None else 0):
            export_block(a)  # stored by an interrupted run: exported into the new file
    pending: deque = deque()
    adds: dict = {}
    jump_fraction = list(state.jump_fraction[:done]) + [None] * (n - done)
    stored = expected = 0
    # new keys in every run: the failed tasks of an earlier run may still be held (by a
    # traceback) and would be handed back instead of being run again
    token = uuid.uuid4().hex

    def summed(a: int) -> None:
        # block a's terms are in its files: block a + 1's may be added to them
        futures = adds.pop(a, None)
        if futures is None:
            return
        got = sum(int(np.sum(r)) for r in client.gather(futures))
        if got != len(futures):
            raise ProductError(f"{tdir.name}: {got} of {len(futures)} tiles of block {a} were summed")

    def add_tiles(a, terms: list, pdq: list) -> list:
        # each tile's terms are added as soon as they are computed, ahead of the tiles in
        # flight (priority), and dropped here once handed on: the add task then holds the
        # only reference, so a tile's terms leave worker memory as soon as they are added
        # (held until the block's end, a block's terms would add up to tens of MB per worker)
        ready = as_completed(terms)
        terms.clear()
        added, f = [], None
        for f in ready:
            b, c = f.key[-2:]
            prev = None if a == 0 else _tile_file(tdir, a - 1, b, c)
            added.append(client.submit(add_terms_to_file, f, prev, _tile_file(tdir, a, b, c),
                                       key=(f"rate-terms-add-{a}-{token}", b, c), priority=1))
        f = None
        added += [client.submit(save_tile, f, str(tdir / "pixeldq" / f"{f.key[-2]}_{f.key[-1]}.npy"),
                                key=(f"pixeldq-save-{token}", *f.key[-2:]), priority=1)
                  for f in pdq]
        pdq.clear()
        return added

    def settle():
        nonlocal stored
        a, counts, fraction, terms, pdq = pending.popleft()
        terms, pdq = futures_of(terms), ([] if pdq is None else futures_of(pdq))
        adds[a] = add_tiles(a, terms, pdq)
        # ahead of the blocks submitted since (priority), like the adds
        got, jump_fraction[a] = client.compute([counts, fraction], sync=True, priority=1)
        stored += int(got)
        # the next block's terms are added to these files; and once the adds are done, no
        # task of this block is needed any more (they depend on its windows)
        summed(a)
        # blocks are settled in order: 0 … a are written and summed, for good
        state.record(a + 1, jump_fraction[: a + 1])
        seg.release(a)  # its checkpoint, if a step needed whole frames
        if export is not None:
            export_block(a)
        if a > 0:
            shutil.rmtree(tdir / str(a - 1), ignore_errors=True)  # a rerun starts from a's

    for a, (i0, _) in enumerate(seg.int_bounds):
        if a < done:
            continue  # written and summed by an interrupted run of the same command
        rateints, terms, pdq = seg.block(a)
        writes = [(rateints[name].data, _Shifted(target, i0)) for name, target in targets.items()]
        counts, want = counted_writes(writes)
        expected += want
        fraction = ((rateints["dq"].data & _dq.JUMP_DET) != 0).mean(axis=(1, 2))
        # one submission, so that the windows the writes and the terms share run once; the
        # rate's pixeldq is the first block's
        # a generation of its own (fifo_timeout=0): submissions within dask's default 60 s
        # share one, and the blocks' tiles would then run interleaved, so that a block would
        # finish only with the next one
        futures = client.persist([counts, fraction, terms] + ([pdq] if a == 0 else []), fifo_timeout=0)
        pending.append((a, *futures[:3], futures[3] if a == 0 else None))
        del futures, rateints, terms, pdq, writes, counts, fraction
        if on_block is not None:
            on_block(a, n)
        while len(pending) >= in_flight:
            settle()
    while pending:
        settle()
    if stored != expected:
        raise ProductError(f"{zpath.name}: {stored} of {expected} blocks were stored")
    # the slabs read the partial store: all written before it is renamed
    slabs = sum(int(k) for k in client.gather([f for f, _ in exported]))
    if targets is not None:
        finalize_store(partial_path(zpath), zpath, overwrite=True)

    acc = read_tile_files(tdir / str(n - 1), seg, leading=(1, len(RATE_TERMS)), dtype=np.float64,
                      token=token)
    pixeldq = read_tile_files(tdir / "pixeldq", seg, leading=(), dtype=PIXELDQ_DTYPE, token=token)
    rate = seg.rate(acc, pixeldq)
    figures = summary_figures(rate)
    paths, values = write_products({"rate": rate}, outdir, root=root, provenance=provenance,
                                   fits=fits, overwrite=True, also=figures)
    del acc, pixeldq
    shutil.rmtree(tdir, ignore_errors=True)
    out = {"rateints_zarr": zpath, **paths}
    if fits:
        fpath = outdir / f"{root}_rateints.fits"
        if export is not None:
            export.finish([seg.int_bounds[a] for a in range(n)], slabs, sum(w for _, w in exported))
        else:
            export_all([(zpath, fpath, "rateints")])
        out["rateints_fits"] = fpath
    values = dict(values)
    values["jump_fraction_per_integration"] = np.concatenate(
        [np.asarray(v, np.float64) for v in jump_fraction])
    return out, values


class _Shifted:
    """A write target seen from one block of integrations: index 0 is integration ``offset``
    of ``target`` (picklable when ``target`` is)."""

    def __init__(self, target, offset: int):
        self.target, self.offset = target, int(offset)

    def __setitem__(self, key, block) -> None:
        key = key if isinstance(key, tuple) else (key,)
        first = key[0]  # store_block passes whole slices: start and stop are set
        self.target[(slice(first.start + self.offset, first.stop + self.offset), *key[1:])] = block


def blocks_in_flight(slots: int, tiles: int) -> int:
    """Blocks to keep submitted: two, or enough that the blocks queued behind the running
    one hold a round of tiles for each of the cluster's ``slots`` worker threads (many
    workers, few tiles per segment)."""
    return max(2, 1 + math.ceil(max(1, slots) / max(1, tiles)))


def _tile_file(tdir: Path, a: int, b: int, c: int) -> str:
    return str(Path(tdir) / str(a) / f"{b}_{c}.npy")


def add_terms_to_file(block: np.ndarray, prev: str | None, path: str) -> np.ndarray:
    """Add one block's rate terms of a tile (1, term, y, x) to the sum so far, read from
    ``prev`` (None: the first block), and save the sum at ``path``.

    A file appears only whole (written aside, then renamed), so a task run again (its worker
    died, or the run was interrupted and resumed) finds its sum saved and keeps it.
    """
    if os.path.exists(path):
        return np.ones((1, 1), np.int64)
    acc = add_block_terms(None if prev is None else np.load(prev), block)
    return save_tile(acc, path)


def save_tile(block: np.ndarray, path: str) -> np.ndarray:
    """Save one tile of an image (y, x) at ``path`` (written aside, then renamed)."""
    import io

    os.makedirs(os.path.dirname(path), exist_ok=True)
    buf = io.BytesIO()
    np.save(buf, np.asarray(block))
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        # written as bytes: numpy's own file writing reports a full disk without its errno
        with open(tmp, "wb") as f:
            f.write(buf.getbuffer())
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return np.ones((1, 1), np.int64)


def _fingerprint(template, seg, provenance) -> str:
    """What must not change for an interrupted run's segments to be reused: the product's
    layout and coordinates, the tiles, the provenance (step parameters, reference files by
    sha256, package versions) and each input's size and modification time."""
    import json

    inputs = []
    for p in provenance.get("inputs", []):
        try:
            st = os.stat(p)
            inputs.append((str(p), st.st_size, st.st_mtime_ns))
        except OSError:
            inputs.append((str(p), None, None))
    layout = [(k, str(v.dtype), v.shape, v.chunks) for k, v in template.data_vars.items()]
    return tokenize(json.dumps(provenance, sort_keys=True, default=str), inputs, layout,
                    template.drop_vars(list(template.data_vars)), seg.int_bounds, seg.y_bounds,
                    seg.x_bounds)


class _State:
    """``state.json`` in the segments directory: the run's fingerprint, how many blocks are
    written and summed, and their per-integration figures; written aside, then renamed."""

    def __init__(self, tdir: Path, fingerprint: str):
        self.dir, self.fingerprint = Path(tdir), fingerprint
        self.path = self.dir / "state.json"
        self.jump_fraction: list = []

    def resumable(self, n: int, tiles: int) -> int:
        """Blocks an interrupted run of the same command completed (0: none usable); each
        block has ``tiles`` sum files."""
        import json

        try:
            state = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return 0
        done = int(state.get("done", 0))
        if state.get("fingerprint") != self.fingerprint or not 0 < done <= n:
            return 0
        for sub in (str(done - 1), "pixeldq"):
            if len(list((self.dir / sub).glob("*.npy"))) != tiles:
                return 0
        self.jump_fraction = [np.asarray(v, np.float64) for v in state.get("jump_fraction", [])]
        return done if len(self.jump_fraction) >= done else 0

    def start(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)

    def record(self, done: int, jump_fraction) -> None:
        import json

        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"fingerprint": self.fingerprint, "done": done,
                                   "jump_fraction": [np.asarray(v).tolist() for v in jump_fraction]}))
        os.replace(tmp, self.path)
