"""The LightningModule: GlamorNet plus loss, metrics, optimiser and schedule."""
from __future__ import annotations

from typing import Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from glamor_lightning.data.classes import CLASSES
from glamor_lightning.models.glamor import GlamorNet, GlamorOutput
from glamor_lightning.schedules import make_schedule

# (face uint8 NHWC, context uint8 NHWC, label, row of the data root's faces.csv)
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def to_float_nchw(images: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """uint8 NHWC batch → float NCHW in [0, 1]; the permute is free and channels-last in memory."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    return x if channels_last else x.contiguous()


class EmotionModule(L.LightningModule):
    """Trains and tests a `GlamorNet`.

    Every argument is a plain value and is saved as a hyper-parameter, so
    `EmotionModule.load_from_checkpoint(path)` rebuilds the model with no config at hand.
    Optimiser: SGD with momentum; schedule by name (see `schedules.make_schedule`).
    """

    def __init__(self, backbone: str = "original", attention: str = "gla", fusion: str = "fusion_net",
                 inputs: str = "both", num_classes: int = len(CLASSES), gla_batchnorm: bool = True,
                 hidden: int = 128, dropout: float = 0.5, pretrained: bool = False,
                 pretrained_path: str | None = None, bn_momentum: float | None = 0.1,
                 lr: float = 0.01, momentum: float = 0.9,
                 weight_decay: float = 0.0, nesterov: bool = False, lr_schedule: str = "cosine",
                 lr_milestones: Sequence[int] = (25, 40), lr_gamma: float = 0.1, min_lr: float = 0.0,
                 warmup_epochs: int = 0, channels_last: bool = False,
                 class_names: Sequence[str] = CLASSES) -> None:
        super().__init__()
        # plain tuples, not Hydra's ListConfig: checkpoints stay loadable with weights_only=True
        lr_milestones, class_names = tuple(int(m) for m in lr_milestones), tuple(map(str, class_names))
        self.save_hyperparameters()
        self.net = GlamorNet(backbone=backbone, attention=attention, fusion=fusion, inputs=inputs,
                             num_classes=num_classes, gla_batchnorm=gla_batchnorm, hidden=hidden,
                             dropout=dropout, pretrained=pretrained, pretrained_path=pretrained_path,
                             bn_momentum=bn_momentum)
        self.class_names = list(class_names)
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        acc = lambda avg: MulticlassAccuracy(num_classes=num_classes, average=avg)  # noqa: E731
        self.train_acc, self.val_acc, self.test_acc = acc("micro"), acc("micro"), acc("micro")
        self.test_class_acc = acc("none")
        self.test_confusion = MulticlassConfusionMatrix(num_classes=num_classes)
        self.val_acc_best = MaxMetric()
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)

    def forward(self, face: torch.Tensor, context: torch.Tensor) -> GlamorOutput:
        """face, context: uint8 NHWC batches straight from the data module."""
        cl = self.hparams.channels_last
        return self.net(to_float_nchw(face, cl), to_float_nchw(context, cl))

    def _step(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, GlamorOutput]:
        face, context, target = batch[:3]
        out = self(face, context)
        loss = F.cross_entropy(out.logits.float(), target)
        return loss, out.logits.argmax(dim=1), target, out

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss, preds, target, _ = self._step(batch)
        self.train_loss(loss)
        self.train_acc(preds, target)
        self.log("train/loss", self.train_loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def on_train_start(self) -> None:
        self.val_acc_best.reset()  # the sanity check must not count as a best

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        loss, preds, target, _ = self._step(batch)
        self.val_loss(loss, weight=len(target))
        self.val_acc(preds, target)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=False, prog_bar=True)

    def test_step(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """Returns the batch's predictions for callbacks (reports, attention maps)."""
        loss, preds, target, out = self._step(batch)
        self.test_loss(loss, weight=len(target))
        self.test_acc(preds, target)
        self.test_class_acc.update(preds, target)
        self.test_confusion.update(preds, target)
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True)
        self.log("test/acc", self.test_acc, on_step=False, on_epoch=True, prog_bar=True)
        return {"row": batch[3], "target": target, "pred": preds, "probs": out.logits.float().softmax(1),
                "attention": out.attention.float()}

    def on_test_epoch_end(self) -> None:
        per_class = self.test_class_acc.compute()
        for name, value in zip(self.class_names, per_class):
            self.log(f"test/acc_{name}", value)
        self.test_class_acc.reset()

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum,
                                    weight_decay=hp.weight_decay, nesterov=hp.nesterov)
        max_epochs = self.trainer.max_epochs if self._trainer is not None and self.trainer.max_epochs else 1
        scheduler = make_schedule(optimizer, hp.lr_schedule, hp.lr, max(1, max_epochs), hp.lr_milestones,
                                  hp.lr_gamma, hp.min_lr, hp.warmup_epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
