"""Reading images from disk as RGB uint8, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class BadImageError(ValueError):
    """A file that cannot be read as an image; the message names it and says why."""


def is_image_name(name: str) -> bool:
    """True for the recognised image extensions, case-insensitively."""
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to HxWx3 uint8 RGB (grayscale, alpha, palette and 16-bit converted)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise BadImageError(f"{path}: cannot read ({err.strerror})") from None
    if size == 0:
        raise BadImageError(f"{path}: empty file (0 bytes)")
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise BadImageError(f"{path}: not a readable image (corrupt, truncated or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
