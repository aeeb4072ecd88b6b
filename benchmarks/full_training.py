"""Full training throughput: `EmotionDataModule`'s training loader feeding the model step, against the
model-only step, side by side.

Per backbone, at its best model-only setting (precision, memory format) and the same batch, three
figures are measured with their repeats interleaved (model-only, full, full with augment_on=device,
model-only, ...), so that the ratios full / model-only compare like with like even when the machine's
load changes during the run:

- `model_only_ips`: the step on a batch already on the device (as in model_throughput);
- `full_ips`: next batch from the data module's training loader (packed cache, per-sample
  albumentations in the loader: augment_on=cpu), moved to the device, then the step;
- `full_device_aug_ips`: the same with augment_on=device: the loader yields un-augmented arrays and
  the batch is augmented after the transfer (`EmotionDataModule.augment_batch`, the code the
  Lightning hook `on_after_batch_transfer` runs).

The loop is the step itself, not `Trainer.fit`, so the ratio shows whether data starves the model
and nothing else (Lightning's own per-step cost is not in it).
"""

from __future__ import annotations

import gc
from pathlib import Path

import torch

from benchmarks.common import Settings, Timing, TrainStep, log, make_module, measure_interleaved, random_batch
from glamor_lightning.data.datamodule import EmotionDataModule


class LoaderFeed:
    """Endless batches from a data module's training loader, epoch after epoch, on the device."""

    def __init__(self, dm: EmotionDataModule, device: torch.device) -> None:
        self.dm, self.device = dm, device
        self.loader = dm.train_dataloader()
        self.epoch, self.batch_idx = 0, 0
        self.it = iter(self.loader)

    def next(self):
        try:
            batch = next(self.it)
        except StopIteration:
            self.epoch += 1
            self.batch_idx = 0
            self.loader.sampler.set_epoch(self.epoch)
            self.it = iter(self.loader)
            batch = next(self.it)
        nb = self.device.type == "cuda"
        batch = [t.to(self.device, non_blocking=nb) for t in batch]
        if self.dm.device_augment is not None:
            batch = self.dm.augment_batch(batch, self.epoch, self.batch_idx)
        self.batch_idx += 1
        return batch


def make_datamodule(root: Path, augment_on: str, s: Settings, cache_dir: str | None = None) -> EmotionDataModule:
    cuda = s.device.type == "cuda"
    dm = EmotionDataModule(
        str(root),
        batch_size=s.batch,
        num_workers=s.full_workers,
        pin_memory=cuda,
        persistent_workers=s.full_workers > 0,
        seed=s.seed,
        augment_on=augment_on,
        cache_dir=cache_dir,
        cache_workers=0 if s.quick else 2,
    )
    dm.prepare_data()
    dm.setup("fit")
    if len(dm.indices["train"]) < s.batch:
        raise RuntimeError(f"{root}: {len(dm.indices['train'])} training images, fewer than a batch")
    return dm


def run(root: Path, best: dict[str, dict], s: Settings) -> dict[str, dict[str, Timing]]:
    """{backbone: {"model_only": T, "full": T, "full_device_aug": T}} at each backbone's best setting."""
    dms = {aug: make_datamodule(root, aug, s) for aug in ("cpu", "device")}
    out = {}
    for backbone in s.backbones:
        setting = best[backbone]
        torch.manual_seed(s.seed)
        module = make_module(backbone, setting["channels_last"], s.device)
        step = TrainStep(module, setting["precision"], s.device)
        face, context, target = random_batch(s.batch, s.device, seed=s.seed)
        feeds = {aug: LoaderFeed(dm, s.device) for aug, dm in dms.items()}

        def from_loader(feed: LoaderFeed):
            return lambda: step(*feed.next()[:3])

        fns = {
            "model_only": lambda: step(face, context, target),
            "full": from_loader(feeds["cpu"]),
            "full_device_aug": from_loader(feeds["device"]),
        }
        out[backbone] = measure_interleaved(fns, s.batch, s)
        t = out[backbone]
        log(
            f"full training {backbone:12s} ({setting['key']}): model-only {t['model_only'].median:.1f}, "
            f"full {t['full'].median:.1f} ({t['full'].median / t['model_only'].median:.2f}), "
            f"device aug {t['full_device_aug'].median:.1f} img/s "
            f"({t['full_device_aug'].median / t['model_only'].median:.2f})"
        )
        feeds = module = step = None  # free them before the next backbone (the lambdas close over them)
        gc.collect()
    return out
