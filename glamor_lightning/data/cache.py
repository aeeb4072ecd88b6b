"""Packed cache: every face crop and masked context of a data root as memory-mapped uint8 arrays.

Made once from `faces.csv`, so that an epoch decodes no image. It lives in a folder named after a hash
(`cache_key`) of the root's absolute path, the index, every image's path, size and modification time,
and the sizes: another root (a re-encoded copy of CAER-S with the same faces.csv, sharing
`data.cache_dir`), a replaced or touched image, a changed index or size makes a new cache, and an
unchanged one is reused. It is built in a temporary folder and renamed into place when complete: a crash
mid-build leaves nothing that could later be taken for a whole cache.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from glamor_lightning.data.classes import class_index
from glamor_lightning.data.geometry import CONTEXT_SIZE, FACE_SIZE, face_crop, masked_context
from glamor_lightning.data.images import BadImageError, read_rgb
from glamor_lightning.data.index import INDEX_NAME, FaceRow, read_index

CACHE_VERSION = 2  # 2: keyed on the root and its images too
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class CacheSpec:
    """What the cached arrays hold; any change makes a different cache."""

    face_size: int = FACE_SIZE
    context_h: int = CONTEXT_SIZE[0]
    context_w: int = CONTEXT_SIZE[1]
    mask_face: bool = True


@dataclass
class PackedCache:
    """Arrays of one cache, row i = row i of the index it was built from."""

    path: Path
    faces: np.ndarray  # [N, S, S, 3] uint8
    contexts: np.ndarray  # [N, H, W, 3] uint8
    labels: np.ndarray  # [N] int64, canonical class index
    ok: np.ndarray  # [N] bool, False where the image could not be read
    manifest: dict
    reused: bool = False  # True when `ensure_cache` found it already built

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def errors(self) -> dict[str, str]:
        """Path → reason, for the images that could not be read."""
        return self.manifest.get("errors", {})


def image_identity(root: Path, rows: Sequence[FaceRow]) -> bytes:
    """One line per row: its image's relative path, size and modification time in ns (`missing` when it
    cannot be stat'ed; the build then records it as unreadable).

    One `os.stat` per image: 5,000 files took 0.04 s and 70,000 (CAER-S's size) 0.5 s here (local disk,
    warm file cache, 2 busy cores); a cold or network file system is slower. It runs whenever a cache is
    looked up (`prepare_data` and `setup` of each process).
    """
    lines = []
    for row in rows:
        try:
            st = os.stat(root / row.path)
            lines.append(f"{row.path}\t{st.st_size}\t{st.st_mtime_ns}")
        except OSError:
            lines.append(f"{row.path}\tmissing")
    return "\n".join(lines).encode()


def cache_key(root: Path, rows: Sequence[FaceRow], spec: CacheSpec) -> str:
    """Hash of what the cached pixels depend on: the root (absolute), faces.csv, the images and `spec`."""
    digest = hashlib.sha256(json.dumps({"v": CACHE_VERSION, **asdict(spec)}, sort_keys=True).encode())
    digest.update(str(Path(root).resolve()).encode() + b"\0")
    digest.update((Path(root) / INDEX_NAME).read_bytes() + b"\0")
    digest.update(image_identity(Path(root), rows))
    return digest.hexdigest()[:16]


def _render(args: tuple[str, tuple | None, CacheSpec]) -> tuple[np.ndarray, np.ndarray] | str:
    path, box, spec = args
    try:
        image = read_rgb(path)
    except BadImageError as err:
        return str(err)
    return (
        face_crop(image, box, spec.face_size),
        masked_context(image, box, (spec.context_h, spec.context_w), mask=spec.mask_face),
    )


def build_cache(
    root: Path, rows: Sequence[FaceRow], spec: CacheSpec, dest: Path, workers: int = 0, progress: bool = True
) -> Path:
    """Render all rows into a new cache folder `dest` (atomically: temp folder, then rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{_HOST}-{os.getpid()}.", suffix=".partial", dir=dest.parent))
    try:
        n, s, (h, w) = len(rows), spec.face_size, (spec.context_h, spec.context_w)
        faces = np.lib.format.open_memmap(tmp / "faces.npy", "w+", np.uint8, (n, s, s, 3))
        contexts = np.lib.format.open_memmap(tmp / "contexts.npy", "w+", np.uint8, (n, h, w, 3))
        ok = np.zeros(n, dtype=bool)
        errors: dict[str, str] = {}
        jobs = [(str(root / r.path), r.box, spec) for r in rows]
        started = time.perf_counter()
        with _pool(workers) as pool:
            results = pool.imap(_render, jobs, chunksize=32) if pool else map(_render, jobs)
            for i, result in enumerate(
                tqdm(results, total=n, desc=f"caching {root.name}", unit="img", disable=not progress)
            ):
                if isinstance(result, str):
                    errors[rows[i].path] = result
                    continue
                faces[i], contexts[i] = result
                ok[i] = True
        faces.flush(), contexts.flush()
        del faces, contexts
        np.save(tmp / "labels.npy", np.array([class_index(r.label) for r in rows], dtype=np.int64))
        np.save(tmp / "ok.npy", ok)
        manifest = {
            "version": CACHE_VERSION,
            "root": str(root.resolve()),
            "spec": asdict(spec),
            "rows": n,
            "paths_sha256": hashlib.sha256("\n".join(r.path for r in rows).encode()).hexdigest(),
            "seconds": round(time.perf_counter() - started, 2),
            "errors": errors,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        try:
            os.rename(tmp, dest)
        except OSError:  # another process finished the same cache first: theirs is as good
            if not (dest / MANIFEST).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


_HOST = socket.gethostname().replace("/", "_")


def remove_stale_partials(dest: Path) -> list[Path]:
    """Delete the temporary folders of builds of `dest` killed mid-way (SIGKILL, power loss).

    A build's temporary folder is named `.<dest>.<host>-<pid>.<random>.partial`; it is stale when that
    process no longer runs on this host. Folders of other hosts (a shared file system) are left alone.
    """
    removed = []
    for tmp in dest.parent.glob(f".{dest.name}.*.partial"):
        owner = tmp.name[len(dest.name) + 2 : -len(".partial")].rsplit(".", 1)[0]
        host, _, pid = owner.rpartition("-")
        if host != _HOST or not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _pool:
    """A worker pool when workers > 0, else nothing (serial map)."""

    def __init__(self, workers: int) -> None:
        self.workers, self.pool = workers, None

    def __enter__(self):
        if self.workers > 0:
            # Workers use one OpenCV thread each. They inherit that setting from this process: calling
            # cv2.setNumThreads in a forked worker can hang for ever on the copied thread pool's locks.
            threads = cv2.getNumThreads()
            cv2.setNumThreads(1)
            try:
                self.pool = mp.get_context("fork").Pool(self.workers)
            finally:
                cv2.setNumThreads(threads)
        return self.pool

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.terminate()


def load_cache(path: Path) -> PackedCache:
    """Open a complete cache folder (memory-mapped, read-only)."""
    manifest = json.loads((path / MANIFEST).read_text())
    return PackedCache(
        path=path,
        faces=np.load(path / "faces.npy", mmap_mode="r"),
        contexts=np.load(path / "contexts.npy", mmap_mode="r"),
        labels=np.load(path / "labels.npy"),
        ok=np.load(path / "ok.npy"),
        manifest=manifest,
    )


def cache_path(
    root: Path, spec: CacheSpec, cache_dir: Path | None = None, rows: Sequence[FaceRow] | None = None
) -> Path:
    """Where the cache for this root's current faces.csv (its `rows`, read when not given), images and
    `spec` lives."""
    rows = read_index(root / INDEX_NAME) if rows is None else rows
    return (cache_dir or root / ".cache") / f"packed-{cache_key(root, rows, spec)}"


def ensure_cache(
    root: Path,
    rows: Sequence[FaceRow],
    spec: CacheSpec,
    cache_dir: Path | None = None,
    workers: int = 0,
    progress: bool = True,
) -> PackedCache:
    """Reuse the cache that matches the root, faces.csv, its images and `spec`, or build it."""
    path = cache_path(root, spec, cache_dir, rows)
    reused = (path / MANIFEST).is_file()
    if not reused:
        build_cache(root, rows, spec, path, workers=workers, progress=progress)
    cache = load_cache(path)
    cache.reused = reused
    if cache.manifest["rows"] != len(rows):
        raise RuntimeError(
            f"Cache {path} holds {cache.manifest['rows']} rows but the index has "
            f"{len(rows)}: delete the folder and run again."
        )
    return cache
