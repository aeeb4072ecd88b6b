"""Bad input from a big download: each is converted, clipped, or skipped with its file named and counted."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from PIL import Image

from glamor_lightning.data.cache import CacheSpec, ensure_cache
from glamor_lightning.data.datamodule import EmotionDataModule
from glamor_lightning.data.detect import detect_root
from glamor_lightning.data.geometry import face_crop, masked_context
from glamor_lightning.data.images import BadImageError, read_rgb
from glamor_lightning.data.index import FaceRow, read_index, write_index
from glamor_lightning.data.ncaer import BadVideoError, probe
from real_photos import astronaut, detector, scene, write_image


def encoded(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


PHOTO = scene(size=(96, 64), head_px=40, at=(20, 8))


def broken_files() -> dict[str, bytes]:
    png, jpg = encoded(Image.fromarray(PHOTO), "PNG"), encoded(Image.fromarray(PHOTO), "JPEG", quality=90)
    return {
        "empty.png": b"",
        "truncated.png": png[: len(png) // 2],
        "truncated.jpg": jpg[: len(jpg) // 2],
        "no_end_marker.jpg": jpg[:-2],
        "text.png": b"just some text, not a picture\n",
        "html.jpg": b"<html><body>403 Forbidden</body></html>",
    }


@pytest.mark.parametrize("name", sorted(broken_files()))
def test_unreadable_files_raise_an_error_naming_them(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(broken_files()[name])
    with pytest.raises(BadImageError, match=name):
        read_rgb(path)


def test_odd_image_modes_are_converted_to_8_bit_rgb(tmp_path):
    rgb = np.asarray(Image.fromarray(astronaut()).resize((128, 128)))
    cases = {
        "gray.png": (Image.fromarray(rgb).convert("L"), "PNG", 0),
        "rgba.png": (Image.fromarray(rgb).convert("RGBA"), "PNG", 0),
        "palette.png": (Image.fromarray(rgb).convert("P"), "PNG", 0),
        "palette.gif.png": (Image.fromarray(rgb).quantize(16), "PNG", 0),
        "gray16.png": (Image.fromarray(rgb[..., 0].astype(np.uint16) * 257), "PNG", 0),
        "cmyk.jpg": (Image.fromarray(rgb).convert("CMYK"), "JPEG", 4.0),
        "cmyk.tif": (Image.fromarray(rgb).convert("CMYK"), "TIFF", 0),
    }
    for name, (image, fmt, tol) in cases.items():
        (tmp_path / name).write_bytes(encoded(image, fmt, **({"quality": 95} if fmt == "JPEG" else {})))
        got = read_rgb(tmp_path / name)
        want = (
            np.asarray(Image.open(tmp_path / name).convert("RGB"))
            if image.mode != "I;16"
            else np.repeat(rgb[..., :1], 3, axis=2)
        )
        assert got.shape == (128, 128, 3) and got.dtype == np.uint8, name
        assert np.abs(got.astype(int) - want).mean() <= tol, name
    # 16-bit colour (PIL cannot write it; OpenCV can): scaled to 8 bit, not clipped
    import cv2

    cv2.imwrite(str(tmp_path / "rgb16.png"), (rgb[..., ::-1].astype(np.uint16) * 257))
    assert np.array_equal(read_rgb(tmp_path / "rgb16.png"), rgb)


def test_an_image_smaller_than_the_crops_is_scaled_up(tmp_path):
    tiny = PHOTO[:15, :20]
    face = face_crop(tiny, (2, 2, 12, 12))
    context = masked_context(tiny, (2, 2, 12, 12))
    assert face.shape == (96, 96, 3) and context.shape == (128, 171, 3)
    assert context.max() > 0 and face.std() > 0


def test_boxes_partly_outside_or_inverted_are_clipped_and_ordered():
    image = PHOTO
    assert np.array_equal(face_crop(image, (-20, -10, 30, 30)), face_crop(image, (0, 0, 30, 30)))
    assert np.array_equal(face_crop(image, (30, 30, 10, 5)), face_crop(image, (10, 5, 30, 30)))
    assert np.array_equal(face_crop(image, (80, 50, 200, 300)), face_crop(image, (80, 50, 96, 64)))
    masked = masked_context(image, (-20, -10, 30, 30), size_hw=image.shape[:2])
    assert masked[:30, :30].max() == 0 and masked[40:, 40:].max() > 0


def test_unreadable_videos_raise_an_error_naming_them(tmp_path):
    (tmp_path / "empty.avi").write_bytes(b"")
    (tmp_path / "text.avi").write_text("not a video")
    for name in ("empty.avi", "text.avi", "missing.avi"):
        with pytest.raises(BadVideoError, match=name):
            probe(tmp_path / name)


def test_a_root_full_of_bad_files_goes_through_detect_cache_and_data_module(tmp_path, caplog):
    root = tmp_path / "root"
    good = {
        "train/Happy/face.png": PHOTO,
        "train/Sad/face.jpg": PHOTO[:, ::-1].copy(),
        "train/Happy/small.png": PHOTO[:15, :20],
        "test/Happy/face.png": PHOTO,
    }
    for rel, image in good.items():
        write_image(root / rel, image)
    write_image(root / "train/Neutral/nobody.png", np.full((64, 96, 3), 128, np.uint8))
    (root / "train/Sad/gray.png").write_bytes(encoded(Image.fromarray(PHOTO).convert("L"), "PNG"))
    (root / "test/Sad").mkdir()
    (root / "test/Sad/cmyk.jpg").write_bytes(encoded(Image.fromarray(PHOTO).convert("CMYK"), "JPEG"))
    for name, data in broken_files().items():
        (root / "train/Fear" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "train/Fear" / name).write_bytes(data)
    summary = detect_root(root, detector=detector(), progress=False)
    assert set(summary.errors) == {f"train/Fear/{n}" for n in broken_files()}  # named, counted, no row
    rows = read_index(root / "faces.csv")
    assert len(rows) == 7 and not any(r.label == "Fear" for r in rows)
    assert {r.path for r in rows if r.source == "none"} == {"train/Happy/small.png", "train/Neutral/nobody.png"}
    # a file that breaks after detection: the cache marks it, the data module skips and counts it
    (root / "train/Sad/face.jpg").write_bytes(b"")
    cache = ensure_cache(root, rows, CacheSpec(), workers=0, progress=False)
    assert list(cache.errors) == ["train/Sad/face.jpg"] and int(cache.ok.sum()) == 6
    with caplog.at_level(logging.INFO, logger="glamor_lightning.data.datamodule"):
        dm = EmotionDataModule(str(root), batch_size=2, cache_workers=0, val_from="test")
        dm.setup("fit")
    assert dm.skipped["train/unreadable"] == 1 and dm.skipped["train/no_face_whole_image"] == 2
    assert len(dm.indices["train"]) == 4  # 6 rows in train, 1 unreadable; no-face rows kept whole
    assert "skipped train/Sad/face.jpg" in caplog.text and "2 without a face (whole_image)" in caplog.text
    dropped = EmotionDataModule(str(root), batch_size=2, cache_workers=0, val_from="test", no_face="drop")
    dropped.setup("fit")
    assert len(dropped.indices["train"]) == 2 and dropped.skipped["train/no_face_drop"] == 2


def test_rows_with_a_face_box_and_no_face_rows_render_as_the_policy_says(tmp_path):
    root = tmp_path / "root"
    write_image(root / "train/Happy/a.png", PHOTO)
    write_index(root / "faces.csv", [FaceRow("train", "train/Happy/a.png", "Happy", None, None, "none")])
    cache = ensure_cache(root, read_index(root / "faces.csv"), CacheSpec(), workers=0, progress=False)
    whole = face_crop(PHOTO, None)
    assert np.array_equal(np.asarray(cache.faces[0]), whole)  # whole image as face, nothing masked
    assert np.array_equal(np.asarray(cache.contexts[0]), masked_context(PHOTO, None))
