"""Which inputs of `glamor predict` are videos: by extension (`VIDEO_EXTENSIONS`), or, for a file with
neither an image nor a video extension, by content (OpenCV opens it and decodes a frame of several)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import cv2

from glamor_lightning.data.images import is_image_name
from glamor_lightning.video.reader import is_video_name


def is_video_input(path: str | os.PathLike) -> bool:
    """Whether a file is taken as a video (see the module docstring). A file with a video extension is
    one even if it does not open: it is then reported as an unreadable video."""
    p = Path(path)
    if is_video_name(p.name):
        return True
    if is_image_name(p.name):
        return False
    cap = cv2.VideoCapture(str(p))
    try:
        return bool(cap.isOpened() and cap.get(cv2.CAP_PROP_FRAME_COUNT) > 1 and cap.read()[0])
    finally:
        cap.release()


def split_inputs(items: Iterable[str | os.PathLike], recursive: bool = False) -> tuple[list[Path], list[Path]]:
    """(images, videos) of the given files and folders (a folder's image and video files, sorted; with
    `recursive`, its sub-folders' too). A missing path raises `FileNotFoundError`."""
    images: list[Path] = []
    videos: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in (p.rglob("*") if recursive else p.iterdir()) if f.is_file())
            images += [f for f in found if is_image_name(f.name)]
            videos += [f for f in found if is_video_name(f.name)]
        elif p.exists():
            (videos if is_video_input(p) else images).append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    return images, videos
