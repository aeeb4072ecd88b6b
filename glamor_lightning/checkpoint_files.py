"""What a file given as a checkpoint really is, told from its first bytes, with no torch import.

People pass the wrong file: a folder, a CSV of metrics, an ONNX export, a Git LFS pointer, an interrupted
copy. `checkpoints.read_checkpoint` and the entry points' checks (`preflight`, before torch is imported) use
these functions to say what the file is and what was expected, instead of torch's `KeyError: 101`.
"""

from __future__ import annotations

from pathlib import Path

from glamor_lightning.errors import CheckpointError

#: names listed in one message (files of a folder, mismatched keys) before "… and N more"
MAX_LISTED = 8

#: what every "this is not a checkpoint" message says is expected instead
EXPECTED = "expected a .ckpt written by glamor_lightning.train"
#: how `torch.save` starts a legacy (non-zip) file: pickle protocol 2, then its magic number as a LONG1
TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
#: leading bytes of file kinds people pass by mistake, and how to name them
SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (Keras weights?)"),
    (b"\x93NUMPY", "a NumPy array (.npy)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"BZh", "a bzip2 archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"%PDF", "a PDF document"),
    (b"RIFF", "a RIFF file (WebP, WAV, AVI)"),
)


def _text_kind(head: bytes) -> str | None:
    """What a file that starts with `head` is when it is text (JSON, CSV, a Git LFS pointer...); None if binary."""
    if b"\x00" in head:
        return None
    for cut in range(4):  # the head may end inside a multi-byte character
        try:
            text = head[: len(head) - cut].decode("utf-8")
            break
        except UnicodeDecodeError:
            continue
    else:
        return None
    stripped = text.lstrip()
    lines = [ln for ln in stripped.splitlines() if ln.strip()]
    if stripped.startswith("version https://git-lfs"):
        return "a Git LFS pointer: the real file was not downloaded (git lfs pull)"
    if stripped[:1] in ("{", "["):
        return "JSON text"
    if stripped[:1] == "<":
        return "HTML/XML text"
    if len(lines) >= 2 and lines[0].count(",") >= 1 and lines[0].count(",") == lines[1].count(","):
        return "CSV text"
    return "text"


def _zip_kind(path: Path) -> str | None:
    """None for a PyTorch zip (it holds `<name>/data.pkl`); else what the zip file is."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return "a damaged or truncated zip archive (an interrupted save, download or copy?)"
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return None
    return "a zip archive with no data.pkl inside, not a PyTorch one"


def file_kind(path: Path) -> str | None:
    """None when the file starts as `torch.save` writes (a zip with data.pkl, or its legacy pickle);
    otherwise a short description of what it looks like, from its first bytes."""
    with path.open("rb") as fh:
        head = fh.read(4096)
    if head.startswith(b"PK\x03\x04"):
        return _zip_kind(path)
    if head.startswith(TORCH_LEGACY_MAGIC):
        return None
    if head.startswith(b"\x80"):
        return "a Python pickle not written by torch.save"
    for signature, kind in SIGNATURES:
        if head.startswith(signature):
            return kind
    if len(head) > 10 and head[8:10] == b'{"':
        return "a safetensors file"
    if head[:1] == b"\x08" and (b"pytorch" in head or b"onnx" in head.lower() or path.suffix == ".onnx"):
        return "an ONNX model (protobuf)"
    text = _text_kind(head)
    return text or f"binary data of an unknown kind (first bytes {head[:8].hex(' ')})"


def folder_error(path: Path) -> CheckpointError:
    """The error for a folder given as a checkpoint: the .ckpt files in it (at any depth, e.g. all the runs
    under `logs/`), if any, and the newest `last.ckpt` as the likely meant one."""
    found = sorted(p for p in path.rglob("*.ckpt") if p.is_file())
    if not found:
        return CheckpointError(f"{path} is a folder, not a checkpoint file, and holds no .ckpt file; {EXPECTED}")
    last = [p for p in found if p.name == "last.ckpt"] or found
    best = max(last, key=lambda p: p.stat().st_mtime)
    listed = ", ".join(str(p.relative_to(path)) for p in found[:MAX_LISTED])
    more = f" … and {len(found) - MAX_LISTED} more" if len(found) > MAX_LISTED else ""
    return CheckpointError(
        f"{path} is a folder, not a checkpoint file (did you mean {best}?); .ckpt files in it: {listed}{more}"
    )
