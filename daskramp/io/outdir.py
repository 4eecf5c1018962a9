"""The output directory of a run: one run at a time, and products that know what made them.

Two guards stand between a run and a directory that already holds products:

* **A lock** (:func:`lock_output`): an advisory ``flock`` on ``<outdir>/.daskramp.lock``, held
  for the whole run and released by the kernel on any exit, however abrupt.  The file names
  its holder (PID, host, start time, command).  A second run refuses at once and names the
  holder; a run that finds the file naming a holder that no longer holds the lock (a process
  killed) takes it over and says so.
* **A run record** (:func:`claim`): ``<outdir>/.<root>.run.json`` holds the
  :class:`Fingerprint` of the run that owns the products of ``<root>``: the inputs' content
  (size and crc32c of every byte, not their names), every step parameter, every reference
  file's sha256, the workflow file's sha256, the settings that change the numbers and the
  package versions.  A rerun with the same fingerprint resumes (or finds the products
  complete); with another it is refused, naming what differs, unless ``overwrite`` — then
  every product of ``<root>`` (stores, FITS files, ``.partial`` leftovers, the segment sums)
  is removed before anything is written.  Products without a record are refused the same
  way: nothing says what made them.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .products import json_default

LOCK_NAME = ".daskramp.lock"
#: bytes read at a time while checksumming inputs
_READ_BLOCK = 8 * 2**20


class OutputLockError(OSError):
    """Another run holds the output directory."""


class StaleProductsError(ValueError):
    """The output directory holds products of another run (other inputs, parameters, …)."""


# ---------------------------------------------------------------------------- content identity


def content_digest(path: str | os.PathLike) -> dict:
    """Size and crc32c of every byte of a file, or of every file of a directory (a Zarr store:
    relative paths, sizes and bytes, in sorted order).

    crc32c runs at several GB/s here, so the whole content is read: a file replaced by another
    of the same name and size is told apart, and a renamed copy is recognised.
    """
    import google_crc32c

    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    crc = 0
    size = 0
    for f in files:
        if f is not path:
            rel = f.relative_to(path).as_posix().encode()
            crc = google_crc32c.extend(crc, rel + b"\0")
        with open(f, "rb") as fh:
            while block := fh.read(_READ_BLOCK):
                crc = google_crc32c.extend(crc, block)
                size += len(block)
    return {"name": path.name, "size": size, "crc32c": f"{crc:08x}", "files": len(files)}


def file_sha256(path) -> str | None:
    if path is None:
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------------------- fingerprint


@dataclass(frozen=True)
class Fingerprint:
    """What determines a run's products (compared) and what helps a person read it (not).

    ``inputs``: :func:`content_digest` per input, in order; ``steps``: step → parameters;
    ``references``: reftype → file name and sha256 (None for "N/A"); ``settings``: settings
    that change the numbers (``stats_scope``, the saved steps); ``workflow``: the workflow
    file and its sha256; ``versions``: package versions.
    """

    inputs: list
    steps: dict
    references: dict
    settings: dict
    workflow: dict | None
    versions: dict
    digest: str = field(default="", compare=False)

    @classmethod
    def make(cls, *, inputs: Sequence, steps: Mapping, references: Mapping, settings: Mapping,
             workflow=None, versions: Mapping) -> Fingerprint:
        wf = None
        if workflow is not None:
            wf = {"name": Path(workflow).name, "sha256": file_sha256(workflow)}
        fp = cls(inputs=[content_digest(p) for p in inputs], steps=_plain(steps),
                 references=_plain(references), settings=_plain(settings), workflow=wf,
                 versions=_plain(versions))
        return cls(**{**fp.to_dict(), "digest": fp.compute_digest()})

    def compared(self) -> dict:
        """The parts that decide whether two runs make the same products (names left out)."""
        return {
            "inputs": [{k: d[k] for k in ("size", "crc32c", "files")} for d in self.inputs],
            "steps": self.steps,
            "references": {rt: (r or {}).get("sha256") for rt, r in self.references.items()},
            "settings": self.settings,
            "workflow": None if self.workflow is None else self.workflow["sha256"],
            "versions": self.versions,
        }

    def compute_digest(self) -> str:
        text = json.dumps(self.compared(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def to_dict(self) -> dict:
        return {"inputs": self.inputs, "steps": self.steps, "references": self.references,
                "settings": self.settings, "workflow": self.workflow, "versions": self.versions,
                "digest": self.digest}

    @classmethod
    def from_dict(cls, d: Mapping) -> Fingerprint:
        return cls(**{k: d.get(k) for k in ("inputs", "steps", "references", "settings",
                                            "workflow", "versions", "digest")})

    def differences(self, other: Fingerprint) -> list[str]:
        """What differs from ``other`` (an earlier run), as short phrases ``was → now``."""
        out: list[str] = []
        old, new = other, self
        a, b = old.compared(), new.compared()
        if len(a["inputs"]) != len(b["inputs"]):
            out.append(f"inputs: {len(a['inputs'])} → {len(b['inputs'])} files")
        else:
            for i, (x, y) in enumerate(zip(a["inputs"], b["inputs"])):
                if x != y:
                    out.append(f"input {i + 1} ({new.inputs[i]['name']}): content differs "
                               f"(size {x['size']} → {y['size']}, crc32c {x['crc32c']} → {y['crc32c']})")
        for step in sorted(set(a["steps"]) | set(b["steps"])):
            pa, pb = a["steps"].get(step) or {}, b["steps"].get(step) or {}
            for k in sorted(set(pa) | set(pb)):
                if pa.get(k) != pb.get(k):
                    out.append(f"steps.{step}.{k}: {pa.get(k)!r} → {pb.get(k)!r}")
        for rt in sorted(set(a["references"]) | set(b["references"])):
            if a["references"].get(rt) != b["references"].get(rt):
                fa = (old.references.get(rt) or {}).get("file", "N/A")
                fb = (new.references.get(rt) or {}).get("file", "N/A")
                out.append(f"reference {rt.upper()}: {fa} → {fb}" if fa != fb else
                           f"reference {rt.upper()}: {fb} changed (sha256 differs)")
        for k in sorted(set(a["settings"]) | set(b["settings"])):
            if a["settings"].get(k) != b["settings"].get(k):
                out.append(f"{k}: {a['settings'].get(k)!r} → {b['settings'].get(k)!r}")
        if a["workflow"] != b["workflow"]:
            na = (old.workflow or {}).get("name", "none")
            nb = (new.workflow or {}).get("name", "none")
            out.append(f"workflow file: {na} → {nb}" if na != nb else f"workflow file {nb} changed")
        for k in sorted(set(a["versions"]) | set(b["versions"])):
            if a["versions"].get(k) != b["versions"].get(k):
                out.append(f"{k} version: {a['versions'].get(k)} → {b['versions'].get(k)}")
        return out


def _plain(obj):
    """JSON's view of ``obj`` (tuples → lists, numpy scalars → numbers), so that a fingerprint
    read back from disk compares equal to one made in memory."""
    return json.loads(json.dumps(obj, sort_keys=True, default=json_default))


# ---------------------------------------------------------------------------- products of a root


def record_path(outdir: Path, root: str) -> Path:
    return Path(outdir) / f".{root}.run.json"


def products_of(outdir: Path, root: str) -> list[Path]:
    """Every file or directory a run of ``root`` writes in ``outdir`` (complete or not)."""
    outdir = Path(outdir)
    if not outdir.is_dir():
        return []
    found = []
    for p in outdir.iterdir():
        name = p.name
        if name.startswith(f"{root}_") and name.endswith(
                (".zarr", ".fits", ".zarr.partial", ".fits.partial", ".zarr.old")):
            found.append(p)
        elif name in (f".{root}_segments.partial", f".{root}_checkpoints.partial"):
            found.append(p)
    return sorted(found)


def remove_products(outdir: Path, root: str) -> list[Path]:
    """Remove every product of ``root`` and its run record; returns what was removed."""
    gone = products_of(outdir, root)
    for p in gone:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    rec = record_path(outdir, root)
    if rec.exists():
        rec.unlink()
        gone.append(rec)
    return gone


def read_record(outdir: Path, root: str) -> Fingerprint | None:
    path = record_path(outdir, root)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise StaleProductsError(f"{path}: run record unreadable ({err}); rerun with --overwrite "
                                 f"to replace the products of {root}") from None
    return Fingerprint.from_dict(data.get("fingerprint") or {})


def write_record(outdir: Path, root: str, fingerprint: Fingerprint) -> Path:
    path = record_path(outdir, root)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"fingerprint": fingerprint.to_dict(),
                               "written": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")},
                              indent=1, sort_keys=True))
    os.replace(tmp, path)
    return path


def claim(outdir: Path, root: str, fingerprint: Fingerprint, *, overwrite: bool = False,
          log=None) -> str:
    """Make ``outdir`` ready for a run of ``root`` with ``fingerprint``.

    Returns ``"fresh"`` (nothing of ``root`` was there, or it was removed with
    ``overwrite``) or ``"resume"`` (products, complete or partial, of a run with the same
    fingerprint: they are kept and reused).

    Raises
    ------
    StaleProductsError
        Products of ``root`` made by another run (the differences are named), or with no run
        record, and ``overwrite`` is False.
    """
    outdir = Path(outdir)
    existing = products_of(outdir, root)
    old = read_record(outdir, root) if (existing or record_path(outdir, root).exists()) else None
    if overwrite:
        gone = remove_products(outdir, root)
        if gone and log is not None:
            log(f"--overwrite: removed {len(gone)} earlier product file(s) of {root} in {outdir}")
        write_record(outdir, root, fingerprint)
        return "fresh"
    if not existing:
        write_record(outdir, root, fingerprint)
        return "fresh"
    if old is None:
        names = ", ".join(p.name for p in existing[:3]) + (", …" if len(existing) > 3 else "")
        raise StaleProductsError(
            f"{outdir} holds products of {root} ({names}) with no record of what made them; "
            f"choose another --out or rerun with --overwrite to replace them")
    if old.digest != fingerprint.digest:
        diff = fingerprint.differences(old) or ["the fingerprint"]
        shown = "; ".join(diff[:6]) + (f"; and {len(diff) - 6} more" if len(diff) > 6 else "")
        raise StaleProductsError(
            f"{outdir} holds products of {root} made by another run ({shown}); choose another "
            f"--out or rerun with --overwrite to replace them")
    return "resume"


# ---------------------------------------------------------------------------- the lock


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def lock_output(outdir: Path, *, log=None) -> Iterator[Path]:
    """Hold the advisory lock of ``outdir`` for the ``with`` block (one run per directory).

    Raises
    ------
    OutputLockError
        Another live run holds it (its PID, host and start time are named).
    """
    outdir = Path(outdir)
    path = outdir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            holder = _describe(_read_holder(fd))
            raise OutputLockError(
                errno.EBUSY, f"output directory {outdir} is in use by another daskramp run "
                f"({holder}); wait for it to finish or choose another --out") from None
        previous = _read_holder(fd)
        if previous and log is not None:
            log(f"taking over the lock of {outdir} left by a run that ended without releasing "
                f"it ({_describe(previous)})")
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
              "command": " ".join(sys.argv[:1] + sys.argv[1:8])}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        try:
            yield path
        finally:
            # emptied, not removed: a second run may already have opened this file, and
            # removing it would let a third lock a new one beside it
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read_holder(fd: int) -> dict | None:
    try:
        raw = os.pread(fd, 4096, 0)
        return json.loads(raw) if raw.strip() else None
    except (OSError, ValueError):
        return {"pid": "?", "host": "?", "started": "?"}


def _describe(holder: dict | None) -> str:
    if not holder:
        return "holder unknown"
    pid, host = holder.get("pid"), holder.get("host")
    state = ""
    if host == socket.gethostname() and isinstance(pid, int):
        state = ", alive" if _alive(pid) else ", no longer running"
    return f"pid {pid} on {host}{state}, started {holder.get('started')}"
