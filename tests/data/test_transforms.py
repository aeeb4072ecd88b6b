"""The default OpenCV augmentation gives albumentations' pixels for the same draws, and is seeded."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest

from glamor_lightning.data.transforms import PairTransform, flip_rotate_matrix, make_pair_transform


def _face() -> np.ndarray:
    y, x = np.mgrid[0:96, 0:96]
    face = np.stack([x * 2.5, y * 2.5, ((x - 40) ** 2 + (y - 30) ** 2 < 300) * 255.0], -1)
    return np.clip(face, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("flip", [False, True])
def test_flip_rotate_matches_albumentations(flip):
    import cv2

    face = _face()
    ops = ([A.HorizontalFlip(p=1.0)] if flip else []) + [A.Rotate(limit=(12, 12), border_mode=0, fill=0, p=1.0)]
    ref = A.Compose(ops)(image=face)["image"]
    out = cv2.warpAffine(
        face,
        flip_rotate_matrix(96, 96, 12.0, flip),
        (96, 96),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    assert np.abs(ref.astype(int) - out.astype(int)).max() <= 1


def test_train_draws_are_seeded_by_seed_epoch_index_and_eval_is_centre_crop():
    face, ctx = _face(), np.random.default_rng(0).integers(0, 255, (128, 171, 3), dtype=np.uint8)
    t = PairTransform(train=True, seed=3)
    a, b = t(face, ctx, index=5, epoch=1), t(face, ctx, index=5, epoch=1)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    others = [t(face, ctx, index=5, epoch=e) for e in range(2, 6)]
    assert any(not np.array_equal(a[0], o[0]) for o in others)
    assert a[0].shape == (96, 96, 3) and a[1].shape == (112, 112, 3)
    f, c = PairTransform(train=False)(face, ctx, index=0)
    assert f is face and np.array_equal(c, ctx[8:120, 29:141])


def test_unknown_backend_is_an_error():
    with pytest.raises(ValueError, match="augment_backend='kornia'"):
        make_pair_transform("kornia", train=True)
