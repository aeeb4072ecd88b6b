"""Batch augmentation on the device (`augment_on=device`): shapes, seeds, the same transforms as the
CPU path, and evaluation left alone."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import lightning as L
import numpy as np
import pytest
import torch

from conftest import make_datamodule
from glamor_lightning.data.datamodule import EmotionDataModule
from glamor_lightning.data.device_augment import DeviceAugment, center_crop, crop, flip_rotate
from glamor_lightning.module import EmotionModule


def _batch(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    face = torch.randint(0, 256, (n, 96, 96, 3), dtype=torch.uint8, generator=g)
    context = torch.randint(0, 256, (n, 128, 171, 3), dtype=torch.uint8, generator=g)
    return face, context


def _smooth_faces(n: int = 4) -> torch.Tensor:
    """Faces with structure (gradients and a blob), so rotations show."""
    y, x = np.mgrid[0:96, 0:96]
    faces = []
    for k in range(n):
        img = np.stack([x * 2.5, y * 2.5, ((x - 30 - 5 * k) ** 2 + (y - 40) ** 2 < 300) * 255.0], -1)
        faces.append(np.clip(img, 0, 255).astype(np.uint8))
    return torch.from_numpy(np.stack(faces))


def test_shapes_dtypes_and_device():
    face, context = _batch()
    out_f, out_c = DeviceAugment()(face, context, torch.Generator().manual_seed(0))
    assert out_f.dtype == out_c.dtype == torch.uint8
    assert out_f.shape == (8, 96, 96, 3) and out_c.shape == (8, 112, 112, 3)
    assert out_f.device == face.device and out_f.is_contiguous() and out_c.is_contiguous()


def test_same_seed_same_batch_other_seed_other_batch():
    face, context = _batch()
    aug = DeviceAugment(seed=3)
    a = aug(face, context, aug.generator_for(epoch=1, batch=2))
    b = aug(face, context, aug.generator_for(epoch=1, batch=2))
    c = aug(face, context, aug.generator_for(epoch=1, batch=3))
    d = aug(face, context, aug.generator_for(epoch=2, batch=2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for other in (c, d):
        assert not torch.equal(a[0], other[0]) and not torch.equal(a[1], other[1])
    e = DeviceAugment(seed=4)(face, context, DeviceAugment(seed=4).generator_for(1, 2))
    assert not torch.equal(a[0], e[0])


def test_flip_alone_mirrors_about_half_the_faces():
    face, context = _batch(64)
    aug = DeviceAugment(rotate_limit=0.0)
    out, _ = aug(face, context, torch.Generator().manual_seed(1))
    same = [torch.equal(out[i], face[i]) for i in range(64)]
    mirrored = [torch.equal(out[i], face[i].flip(1)) for i in range(64)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 16 <= sum(mirrored) <= 48
    no_flip, _ = DeviceAugment(rotate_limit=0.0, flip=False)(face, context)
    assert torch.equal(no_flip, face)


def test_rotation_is_applied_within_the_limit():
    faces = _smooth_faces(4)
    out = flip_rotate(faces, torch.tensor([0.0, 10.0, -20.0, 20.0]), torch.zeros(4, dtype=torch.bool))
    assert torch.equal(out[0], faces[0])  # 0°: exact
    for i in (1, 2, 3):
        assert (out[i].float() - faces[i].float()).abs().mean() > 5
        assert out[i][0, 0].sum() == 0  # zero fill in the corners
    params = DeviceAugment(rotate_limit=20.0).sample(1000, (128, 171), torch.Generator().manual_seed(0))
    assert params.angle.abs().max() <= 20.0 and params.angle.min() < -18 and params.angle.max() > 18
    assert 0.4 < params.flip.float().mean() < 0.6


@pytest.mark.parametrize("angle", [-15.0, 7.5])
@pytest.mark.parametrize("flip", [False, True])
def test_flip_rotate_matches_albumentations(angle, flip):
    """Same flip, rotation sign, centre and zero fill as the CPU path (PairTransform)."""
    faces = _smooth_faces(3)
    ops = ([A.HorizontalFlip(p=1.0)] if flip else []) + [A.Rotate(limit=(angle, angle), border_mode=0, fill=0, p=1.0)]
    ref = np.stack([A.Compose(ops)(image=f)["image"] for f in faces.numpy()])
    out = flip_rotate(faces, torch.full((3,), angle), torch.full((3,), flip)).numpy()
    diff = np.abs(ref.astype(int) - out.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.05


def test_context_crop_is_random_and_a_true_crop():
    face, context = _batch(16)
    aug = DeviceAugment()
    params = aug.sample(16, (128, 171), torch.Generator().manual_seed(5))
    _, out = aug.apply(face, context, params)
    for i in range(16):
        t, left = int(params.top[i]), int(params.left[i])
        assert 0 <= t <= 16 and 0 <= left <= 59
        assert torch.equal(out[i], context[i, t : t + 112, left : left + 112])
    assert len(set(params.top.tolist())) > 1 and len(set(params.left.tolist())) > 1
    assert torch.equal(crop(context, [8] * 16, [29] * 16, 112), center_crop(context, 112))
    with pytest.raises(ValueError, match="uint8 NHWC"):
        aug.apply(face.float(), context, params)


@pytest.mark.gpu
def test_runs_on_cuda_like_on_cpu():
    face, context = _batch()
    aug = DeviceAugment()
    cpu = aug(face, context, aug.generator_for(0, 0))
    gpu = aug(face.cuda(), context.cuda(), aug.generator_for(0, 0))
    assert gpu[0].is_cuda and torch.equal(gpu[1].cpu(), cpu[1])
    assert (gpu[0].cpu().int() - cpu[0].int()).abs().max() <= 1


# -- the data module option -------------------------------------------------------------------------
_dm = make_datamodule


def test_datamodule_device_option_leaves_eval_alone(synth_root):
    cpu, dev = _dm(synth_root), _dm(synth_root, augment_on="device")
    face, context, label, row = next(iter(dev.train_dataloader()))
    assert face.shape == (4, 96, 96, 3) and context.shape == (4, 128, 171, 3)  # not augmented yet
    assert torch.equal(face[0], torch.from_numpy(np.array(dev.cache.faces[int(row[0])])))
    out = dev.augment_batch([face, context, label, row], epoch=0, batch_idx=0)
    assert out[1].shape == (4, 112, 112, 3) and out[2] is label and out[3] is row
    assert torch.equal(out[0], dev.augment_batch([face, context, label, row], 0, 0)[0])
    for stage in ("val", "test"):
        a, b = next(iter(cpu._loader(stage))), next(iter(dev._loader(stage)))
        assert all(torch.equal(x, y) for x, y in zip(a, b))
        assert dev.on_after_batch_transfer(b, 0) is b  # no trainer: nothing happens
    with pytest.raises(ValueError, match="augment_on"):
        EmotionDataModule(str(synth_root), augment_on="gpu")
    assert _dm(synth_root, augment_on="device", augment=False).dataset("train")[0][1].shape == (112, 112, 3)


class _Spy(EmotionModule):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.seen: dict[str, list] = {"train": [], "val": []}

    def training_step(self, batch, batch_idx):
        self.seen["train"].append((batch[0].clone(), batch[1].clone()))
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        self.seen["val"].append(tuple(batch[1].shape))
        return super().validation_step(batch, batch_idx)


def _fit(root: Path, out: Path) -> _Spy:
    L.seed_everything(0)
    model = _Spy(backbone="original", lr=1e-3)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(out),
    )
    trainer.fit(model, datamodule=_dm(root, augment_on="device"))
    return model


def test_trainer_augments_training_batches_on_the_device_reproducibly(synth_root, tmp_path):
    a, b = _fit(synth_root, tmp_path / "a"), _fit(synth_root, tmp_path / "b")
    assert [tuple(c.shape) for _, c in a.seen["train"]] == [(4, 112, 112, 3)] * 2
    assert a.seen["val"] == [(4, 112, 112, 3)]
    for (fa, ca), (fb, cb) in zip(a.seen["train"], b.seen["train"]):
        assert torch.equal(fa, fb) and torch.equal(ca, cb)
    # batch i of epoch 0 is augmented with the generator of (seed, epoch 0, batch i, rank 0)
    dm = _dm(synth_root, augment_on="device")
    for i, raw in zip(range(2), dm.train_dataloader()):
        face, context = dm.augment_batch(raw, epoch=0, batch_idx=i)[:2]
        assert torch.equal(face, a.seen["train"][i][0]) and torch.equal(context, a.seen["train"][i][1])
