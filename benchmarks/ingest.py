"""uncal FITS → Zarr conversion speed, memory and compression on a NIRISS SOSS segment.

Default run: one 158 × 9 × 256 × 2048 segment (1.49 GB uncal), generated once into the
benchmark cache (``$DASKRAMP_BENCH_CACHE``, default ``~/.cache/daskramp-bench``) by
``daskramp.simulate.simulate`` when that module exists, else by the synthetic writer below;
converted on a local ``dask.distributed`` cluster of worker processes (1 thread each).
Prints MB/s of uncal converted (total and per worker core), the peak RSS of the whole process
tree (client, scheduler, nannies, workers) sampled with psutil, the compression ratio and the
store size.  Other modes measure the pieces the defaults were chosen from::

    python benchmarks/ingest.py                      # full size, 2 workers
    python benchmarks/ingest.py --nints 14 --workers 1
    python benchmarks/ingest.py --codecs             # codec table (one shard, one thread)
    python benchmarks/ingest.py --read-methods       # ways of reading FITS int16 → uint16
    python benchmarks/ingest.py --sharding           # sharded vs plain chunks: write + tile read

The uncal file is read from the page cache after the first run (it was just written or
cached); the figures are therefore conversion (decode + compress + write) speeds, not disk
speeds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CACHE = Path(os.environ.get("DASKRAMP_BENCH_CACHE", Path.home() / ".cache" / "daskramp-bench"))
SOSS = {"ngroups": 9, "ny": 256, "nx": 2048}


# ---- synthetic SOSS ramps ------------------------------------------------------------------


def soss_header(nints: int, ngroups: int, ny: int, nx: int):
    from astropy.io import fits

    h = fits.Header()
    for k, v in {
        "TELESCOP": "JWST", "INSTRUME": "NIRISS", "DETECTOR": "NIS", "EXP_TYPE": "NIS_SOSS",
        "READPATT": "NISRAPID", "SUBARRAY": "SUBSTRIP256", "SUBSTRT1": 1, "SUBSTRT2": 1793,
        "SUBSIZE1": nx, "SUBSIZE2": ny, "FASTAXIS": -2, "SLOWAXIS": -1, "NOUTPUTS": 1,
        "NINTS": nints, "NGROUPS": ngroups, "NFRAMES": 1, "GROUPGAP": 0, "FRMDIVSR": 1,
        "TFRAME": 5.494, "TGROUP": 5.494, "ZEROFRAM": False, "DRPFRMS1": 0, "DRPFRMS3": 0,
        "DATE-OBS": "2024-01-02", "TIME-OBS": "03:04:05.600", "EXSEGNUM": 1, "EXSEGTOT": 1,
        "INTSTART": 1, "INTEND": nints, "DATAMODL": "Level1bModel",
    }.items():  # fmt: skip
        h[k] = v
    return h


class RampMaker:
    """Ramps like a SOSS exposure: bias ≈ 12 000 DN (300 DN pixel spread), a curved trace of up
    to 60 DN/group on 2 DN/group background, 10 DN white read noise per read."""

    def __init__(self, ngroups, ny, nx, seed=1):
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.bias = (12000 + 300 * rng.standard_normal((ny, nx))).astype(np.float32)
        y = np.arange(ny, dtype=np.float32)[:, None]
        x = np.arange(nx, dtype=np.float32)[None, :]
        centre = 80 + 40 * np.sin(x / 700)
        peak = 60 * (0.3 + 0.7 * np.exp(-(((x - 1200) / 700) ** 2)))
        self.flux = (2 + peak * np.exp(-0.5 * ((y - centre) / 12) ** 2)).astype(np.float32)
        self.groups = np.arange(1, ngroups + 1, dtype=np.float32)[:, None, None]

    def integration(self) -> np.ndarray:
        noise = self.rng.standard_normal((self.groups.shape[0], *self.bias.shape), np.float32)
        ramp = self.bias + self.flux * self.groups + 10 * noise
        return np.clip(np.rint(ramp), 0, 65535).astype(np.uint16)

    def block(self, n) -> np.ndarray:
        return np.stack([self.integration() for _ in range(n)])


def write_synthetic_uncal(path: Path, nints: int, ngroups=9, ny=256, nx=2048, seed=1) -> Path:
    """Stream an uncal file to disk one integration at a time (never the whole array)."""
    from astropy.io import fits

    from daskramp.dims import INT_TIMES_COLUMNS

    maker = RampMaker(ngroups, ny, nx, seed)
    primary = fits.PrimaryHDU(header=soss_header(nints, ngroups, ny, nx))
    sci = fits.Header(
        [("XTENSION", "IMAGE"), ("BITPIX", 16), ("NAXIS", 4), ("NAXIS1", nx), ("NAXIS2", ny),
         ("NAXIS3", ngroups), ("NAXIS4", nints), ("PCOUNT", 0), ("GCOUNT", 1),
         ("BZERO", 32768), ("BSCALE", 1), ("EXTNAME", "SCI")]
    )  # fmt: skip
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(primary.header.tostring().encode("ascii"))
        f.write(sci.tostring().encode("ascii"))
        for _ in range(nints):
            # FITS int16 = value − 32768, i.e. the value with its top bit flipped, big-endian
            f.write((maker.integration() ^ np.uint16(0x8000)).astype(">u2").tobytes())
        nbytes = 2 * nints * ngroups * ny * nx
        f.write(b"\0" * (-nbytes % 2880))
    num = np.arange(1, nints + 1)
    cols = [fits.Column(name="integration_number", format="J", array=num)]
    cols += [
        fits.Column(name=c, format="D", array=60311.0 + num * 9 * 5.494 / 86400)
        for c in INT_TIMES_COLUMNS
    ]
    table = fits.BinTableHDU.from_columns(cols, name="INT_TIMES")
    fits.append(tmp, table.data, header=table.header)
    os.replace(tmp, path)
    return path


def uncal_files(nints: int, source: str) -> list[Path]:
    """The benchmark input, generated once and cached."""
    if source in ("auto", "simulate"):
        try:
            from _common import simulated

            return list(simulated("niriss-soss", nints).uncal_files)
        except ImportError:
            if source == "simulate":
                raise
        except Exception as err:  # the simulator is optional here; say why it was not used
            if source == "simulate":
                raise
            msg = f"# simulator not usable ({type(err).__name__}: {err}); synthetic ramps instead"
            print(msg, file=sys.stderr)
    out = CACHE / f"synthetic-soss-n{nints}" / "jw00001001001_01101_00001-seg001_nis_uncal.fits"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        write_synthetic_uncal(out, nints, **SOSS)
        print(
            f"# wrote {out} ({out.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t0:.0f} s"
        )
    return [out]


# ---- the conversion run --------------------------------------------------------------------


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_conversion(files, workers: int, chunk_mb: float, codec: str, workdir: Path, mmap_mb=None):
    import dask
    from distributed import Client, LocalCluster

    from daskramp.io import ingest
    from daskramp.testing.memory import TreeMemorySampler

    store = workdir / "exposure.zarr"
    total = sum(Path(f).stat().st_size for f in files)
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
    if mmap_mb:
        # distributed sets MALLOC_TRIM_THRESHOLD_, which also freezes glibc's mmap threshold at
        # 128 KiB: every multi-MB codec buffer is then a fresh mmap (page faults, zeroing)
        environ["MALLOC_MMAP_THRESHOLD_"] = int(mmap_mb * 2**20)
    print(f"worker environment   : {environ}")
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}), LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        memory_limit="4GiB",
    ) as cluster, Client(cluster) as client:  # fmt: skip
        client.run(lambda: None)
        idle = TreeMemorySampler(interval=0.05)
        idle.sample()
        with TreeMemorySampler(interval=0.05) as mem:
            t0 = time.perf_counter()
            ingest(files, store, chunk_mb=chunk_mb, codec=codec, overwrite=True)
            wall = time.perf_counter() - t0
    size = dir_size(store)
    nbytes_raw = total  # headers and the table are negligible next to SCI
    print(f"uncal converted      : {total / 1e6:.0f} MB in {wall:.1f} s")
    print(f"speed                : {total / 1e6 / wall:.0f} MB/s total, "
          f"{total / 1e6 / wall / workers:.0f} MB/s per worker core ({workers} workers × 1 thread)")  # fmt: skip
    print(f"peak RSS (tree)      : {mem.peak / 2**20:.0f} MiB "
          f"(idle cluster {idle.peak / 2**20:.0f} MiB; largest process {mem.peak_per_process / 2**20:.0f} MiB)")  # fmt: skip
    print(f"store                : {size / 1e6:.0f} MB, compression ratio {nbytes_raw / size:.2f} "
          f"(codec {codec}, chunk_mb {chunk_mb})")  # fmt: skip
    return {"wall": wall, "peak": mem.peak, "size": size}


# ---- pieces: codecs, read methods, sharding ------------------------------------------------


def bench_codecs(k=7):
    import zarr
    from zarr.storage import MemoryStore

    from daskramp.io.ingest import CODECS, plan_layout

    shape = (k, SOSS["ngroups"], SOSS["ny"], SOSS["nx"])
    lay = plan_layout(shape, chunk_mb=64)
    block = RampMaker(**SOSS).block(k)
    mb = block.nbytes / 1e6
    print(f"one shard {shape} = {mb:.1f} MB, inner chunks {lay['chunk']}, zarr threads = 1")
    print(f"{'codec':24s} {'ratio':>6s} {'encode MB/s':>12s} {'decode MB/s':>12s}")
    with zarr.config.set({"threading.max_workers": 1}):
        for name, make in CODECS.items():
            store = MemoryStore()
            arr = zarr.create_array(
                store, shape=shape, dtype="uint16", chunks=lay["chunk"], shards=lay["shard"],
                compressors=make(), fill_value=0,
            )  # fmt: skip
            tw = []
            tr = []
            for _ in range(3):
                t0 = time.perf_counter()
                arr[...] = block
                tw.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                back = arr[...]
                tr.append(time.perf_counter() - t0)
            assert np.array_equal(back, block)
            stored = sum(len(v) for k_, v in store._store_dict.items() if k_.startswith("c/"))
            print(
                f"{name:24s} {block.nbytes / stored:6.2f} {mb / min(tw):12.0f} {mb / min(tr):12.0f}"
            )


def bench_read_methods(files):
    from astropy.io import fits

    from daskramp.io.uncal import read_frames, scan_segment

    seg = scan_segment(files[0])
    k = 6
    per = 2 * math.prod(seg.frame_shape)
    starts = list(range(0, seg.shape[0] - k, k))[:8]
    mb = len(starts) * k * per / 1e6

    def m_daskramp():
        for i in starts:
            read_frames(seg.path, seg.offset, seg.frame_shape, i, i + k)

    def m_readinto():
        for i in starts:
            out = np.empty((k, *seg.frame_shape), np.uint16)
            with open(seg.path, "rb", buffering=0) as f:
                f.seek(seg.offset + i * per)
                f.readinto(out.reshape(-1).view(np.uint8))
            out.byteswap(inplace=True)
            out ^= np.uint16(0x8000)

    def m_memmap():
        for i in starts:
            mm = np.memmap(seg.path, dtype=">u2", mode="r", offset=seg.offset, shape=seg.shape)
            out = (mm[i : i + k] ^ np.uint16(0x8000)).astype("<u2")
            del mm, out

    def m_astropy():
        for i in starts:
            with fits.open(seg.path, memmap=True, do_not_scale_image_data=True) as h:
                raw = h["SCI"].section[i : i + k]
                out = (raw.view(">u2") ^ np.uint16(0x8000)).astype("<u2")
                del raw, out

    m_daskramp()  # warm the page cache
    print(f"reading {len(starts)} blocks of {k} integrations ({mb:.0f} MB) from the page cache")
    for name, fn in (("daskramp read_frames (mmap)", m_daskramp),
                     ("readinto+byteswap+xor", m_readinto), ("np.memmap whole + astype", m_memmap),
                     ("astropy memmap section", m_astropy)):  # fmt: skip
        best = min(_timed(fn) for _ in range(3))
        print(f"{name:26s} {mb / best:8.0f} MB/s")


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_sharding(files, workdir: Path):
    """Write one store sharded and one with plain chunks; time writing and a pixel-tile read."""
    import dask

    from daskramp.io import ingest, open_exposure

    for sharded in (True, False):
        store = workdir / f"s{int(sharded)}.zarr"
        t0 = time.perf_counter()
        with dask.config.set(scheduler="synchronous"):
            ingest(files, store, sharded=sharded, overwrite=True)
        tw = time.perf_counter() - t0
        nfiles = sum(1 for p in store.rglob("*") if p.is_file())
        ds = open_exposure(store, chunks={"integration": -1, "x": 128})
        t0 = time.perf_counter()
        with dask.config.set(scheduler="synchronous"):
            tile = ds["data"][:, :, :, 512:640].values
        tr = time.perf_counter() - t0
        print(f"sharded={sharded!s:5s}: write {tw:5.1f} s, {nfiles} files; "
              f"one 128-column tile of all integrations ({tile.nbytes / 1e6:.0f} MB) read in {tr:.2f} s")  # fmt: skip
        shutil.rmtree(store)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--nints", type=int, default=158)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--chunk-mb", type=float, default=64)
    p.add_argument("--codec", default="auto")
    p.add_argument("--source", choices=("auto", "simulate", "synthetic"), default="auto")
    p.add_argument("--codecs", action="store_true", help="codec table on one shard")
    p.add_argument("--read-methods", action="store_true", help="FITS int16 reading methods")
    p.add_argument("--sharding", action="store_true", help="sharded vs plain chunks")
    p.add_argument("--workdir", type=Path, default=None, help="where to write the store")
    p.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--malloc-mmap-threshold-mb",
        type=float,
        default=32,
        help="MALLOC_MMAP_THRESHOLD_ in the workers; 32 (default) is what daskramp.cluster sets "
             "for every daskramp run, 0 leaves dask's worker environment as it is",
    )
    args = p.parse_args(argv)

    if args.codecs:
        bench_codecs()
        return
    if args.generate_only:
        print(json.dumps([str(f) for f in uncal_files(args.nints, args.source)]))
        return
    # generate (or find) the input in a child process, so that the simulator's memory is not
    # counted in this process's RSS below
    child = subprocess.run(
        [sys.executable, __file__, "--generate-only", "--nints", str(args.nints),
         "--source", args.source],
        check=True, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines = child.stdout.strip().splitlines()
    print("\n".join(lines[:-1]))
    files = [Path(f) for f in json.loads(lines[-1])]
    workdir = Path(tempfile.mkdtemp(prefix="daskramp-ingest-", dir=args.workdir))
    try:
        if args.read_methods:
            bench_read_methods(files)
        elif args.sharding:
            bench_sharding(files, workdir)
        else:
            run_conversion(
                files,
                args.workers,
                args.chunk_mb,
                args.codec,
                workdir,
                args.malloc_mmap_threshold_mb,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
