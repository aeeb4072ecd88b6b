"""The LightningModule: GlamorNet plus loss, metrics, optimiser and schedule."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import lightning as L
import torch
from torchmetrics import MaxMetric, SumMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from glamor_lightning.data.classes import CLASSES
from glamor_lightning.data.contract import (
    CHECKPOINT_KEY,
    DataContract,
    contract_from_checkpoint,
    contract_of_datamodule,
)
from glamor_lightning.losses import (
    LOSSES,
    check_loss_settings,
    gate_negentropy,
    head_losses,
    shuffled_partners,
    true_class_hits,
    true_class_mass,
)
from glamor_lightning.metrics import NanMean
from glamor_lightning.models.encoders import use_fused_bn_pool_relu
from glamor_lightning.models.fusion import FLOOR_KEY, FusionNet
from glamor_lightning.models.glamor import GlamorNet, GlamorOutput
from glamor_lightning.optimizers import check_optimizer_settings, lr_scale_dict, make_optimizer, part_groups
from glamor_lightning.precision_choice import PRECISION_KEY
from glamor_lightning.schedules import make_schedule, planned_epochs

log = logging.getLogger(__name__)

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
    Optimiser: SGD with momentum (or AdamW), one parameter group per top-level part of the net (named after
    it: `GlamorNet.PARTS`), so that `callbacks.stages.StageScheduler` can freeze and re-open parts;
    schedule by name (see `schedules.make_schedule`), over the epochs the trainer will train
    (`schedules.planned_epochs`: max_epochs, or fewer when max_steps ends the run first).

    `aux_heads`: auxiliary face-only and context-only heads (`GlamorNet(aux_heads=True)`) for staged
    training, added where the model has both branches (inputs='both'): a single-branch model's one
    head already is its branch's, so it gets none. The training loss is
    `sum(loss_weights[k] * CE_k)` over the heads k in `LOSSES` that exist; `loss_weights` is
    `{"fused": 1}` unless a stage scheduler sets it. Heads whose weight is 0 still enter the sum
    (times 0) so that every parameter is in every step's graph, which DDP requires.

    Remedies for a fusion gate that shuts one branch out (all off by default; docs/training.md):
    `aux_loss_weight` adds the auxiliary heads' losses to every step with this weight (needs
    `aux_heads`); `residual_context` trains the auxiliary context head through its product with the
    (detached) face head (`losses.residual_logits`), so the context branch learns what the face does not
    tell; `context_head_guide='shuffled'` trains that head on v_c with GLA guided by another sample's face
    (`losses.shuffled_partners`), so it cannot profit from an echo of the face (GLA only; the fused prediction keeps
    each sample's own face); `context_head_input='pooled'` trains that head on the context map average-pooled
    instead of v_c (no attention, no face: it cannot echo the face); `modality_dropout`, `modality_dropout_guide`,
    `fusion_temperature` and `fusion_floor` are `GlamorNet`'s; `gate_entropy` adds the gate's negative entropy
    (`gate_negentropy`) times this weight to the loss. `optimizer`: `sgd` (with `momentum`, `nesterov`) or
    `adamw` (`optimizers.OPTIMIZERS`); `fused_sgd`: SGD as torch's fused kernel (`optimizers.make_optimizer`), false
    for its per-tensor loop. `lr_scale`: per-part learning-rate multipliers by part name (e.g.
    `{context_encoder: 3}`), to let a slow branch learn faster.
    `fused_bn_pool_relu`: the original encoder's BN → max-pool → ReLU as one kernel in CPU training
    (`models.fused_bn`: the same maths to rounding, 1.8-2.5x those layers); false for torch's layers.
    `compile`: False, True (inductor) or a `torch.compile` backend name (`aot_eager`, `eager`, ...);
    the net is compiled in place in `configure_model`, so checkpoint keys do not change.
    """

    def __init__(
        self,
        backbone: str = "original",
        attention: str = "gla",
        fusion: str = "fusion_net",
        inputs: str = "both",
        num_classes: int = len(CLASSES),
        gla_batchnorm: bool = True,
        hidden: int = 128,
        dropout: float = 0.5,
        pretrained: bool = False,
        pretrained_path: str | None = None,
        bn_momentum: float | None = 0.1,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        lr_schedule: str = "cosine",
        lr_milestones: Sequence[int] = (25, 40),
        lr_gamma: float = 0.1,
        min_lr: float = 0.0,
        warmup_epochs: int = 0,
        channels_last: bool = True,
        compile: bool | str = False,
        aux_heads: bool = False,
        class_names: Sequence[str] = CLASSES,
        aux_loss_weight: float = 0.0,
        modality_dropout: float = 0.0,
        fusion_temperature: float = 1.0,
        fusion_floor: float = 0.0,
        gate_entropy: float = 0.0,
        optimizer: str = "sgd",
        fused_sgd: bool = True,
        residual_context: bool = False,
        modality_dropout_guide: bool = False,
        lr_scale: Mapping[str, float] | None = None,
        context_head_guide: str = "own",
        context_head_input: str = "attention",
        fused_bn_pool_relu: bool = True,
    ) -> None:
        super().__init__()
        # plain tuples, not Hydra's ListConfig: checkpoints stay loadable with weights_only=True
        lr_milestones, class_names = tuple(int(m) for m in lr_milestones), tuple(map(str, class_names))
        lr_scale = lr_scale_dict(lr_scale)
        self.save_hyperparameters()
        self.net = GlamorNet(
            backbone=backbone,
            attention=attention,
            fusion=fusion,
            inputs=inputs,
            num_classes=num_classes,
            gla_batchnorm=gla_batchnorm,
            hidden=hidden,
            dropout=dropout,
            pretrained=pretrained,
            pretrained_path=pretrained_path,
            bn_momentum=bn_momentum,
            aux_heads=bool(aux_heads) and inputs == "both",
            modality_dropout=modality_dropout,
            modality_dropout_guide=modality_dropout_guide,
            fusion_temperature=fusion_temperature,
            fusion_floor=fusion_floor,
            context_head_input=context_head_input,
        )
        check_loss_settings(
            self.net, aux_loss_weight, gate_entropy, residual_context, context_head_guide, context_head_input
        )
        check_optimizer_settings(optimizer, nesterov, lr_scale, [name for name, _ in self.net.named_children()])
        self.class_names = list(class_names)
        #: what the model's inputs are (`data.contract`): the defaults until `bind_data` or a checkpoint sets it
        self.data_contract = DataContract(mask_face=self.net.masks_face, class_names=class_names)
        #: weight of each head's loss in the training loss (see the class docstring)
        self.loss_weights: dict[str, float] = {"fused": 1.0}
        if aux_loss_weight:
            self.loss_weights.update(face=float(aux_loss_weight), context=float(aux_loss_weight))
        #: per training batch, each auxiliary head's summed probability of the true class (face, context),
        #: detached: what gradient modulation (`callbacks.modulation`) compares; None without aux heads
        self.branch_scores: tuple[torch.Tensor, torch.Tensor] | None = None
        #: per training batch, how many samples each auxiliary head gets right (face, context), detached: what
        #: `callbacks.gate_floor` tests against chance; None without aux heads
        self.branch_hits: tuple[torch.Tensor, torch.Tensor] | None = None
        # epoch means in which a NaN (a diverged step) makes the mean NaN rather than being dropped (`metrics.NanMean`)
        self.train_loss, self.val_loss, self.test_loss = NanMean(), NanMean(), NanMean()
        acc = lambda avg: MulticlassAccuracy(num_classes=num_classes, average=avg)  # noqa: E731
        # the training accuracy skips torchmetrics' argument checks at every step: its predictions are argmaxes and
        # its targets are the ones the loss has just used (cross-entropy refuses a target out of range)
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro", validate_args=False)
        self.val_acc, self.test_acc = acc("micro"), acc("micro")
        self.val_acc_face, self.val_acc_context = acc("micro"), acc("micro")  # auxiliary heads
        # per-class accuracy from the confusion matrix: a class without test samples has none (not 0)
        self.test_confusion = MulticlassConfusionMatrix(num_classes=num_classes)
        self.test_n = SumMetric()  # samples tested: under DDP every sample must count once
        self.val_acc_best = MaxMetric()
        # mean fusion weights (w_face, w_context) per epoch: a collapse to 0 or 1 shows here
        self.train_w_face, self.train_w_context = NanMean(), NanMean()
        self.val_w_face, self.val_w_context = NanMean(), NanMean()
        # metrics that span a training epoch (or the run) are saved in checkpoints, so that a run
        # resumed mid-epoch logs what the uninterrupted run logs
        for metric in (self.train_loss, self.train_acc, self.train_w_face, self.train_w_context, self.val_acc_best):
            metric.persistent(True)
        self._compiled = False
        #: (epoch, trainer) whose epoch-only training metrics were handed to Lightning (`training_step`)
        self._epoch_metrics_logged: tuple[int, int] | None = None
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        use_fused_bn_pool_relu(self.net, fused_bn_pool_relu)

    def forward(
        self, face: torch.Tensor, context: torch.Tensor, head_guide: torch.Tensor | None = None
    ) -> GlamorOutput:
        """face, context: uint8 NHWC batches straight from the data module; `head_guide`: `GlamorNet.forward`'s."""
        cl = self.hparams.channels_last
        return self.net(to_float_nchw(face, cl), to_float_nchw(context, cl), head_guide)

    # -- the data contract ------------------------------------------------------------------------
    def bind_data(self, datamodule) -> None:
        """Make `datamodule` feed this model what it needs, and take its data contract.

        The face is masked out of the context unless the model's setting is `context_visible`
        (`data.mask_face=null`, the default; an explicit true/false is the user's choice). The data's
        class names must be the model's. Called by the entry points before fitting, and again in `setup`
        for code that calls `trainer.fit` itself.
        """
        if datamodule.mask_face is None:
            if getattr(datamodule, "cache", None) is not None and not self.net.masks_face:
                raise ValueError(
                    "the data module built its cache with the face masked before it knew the model "
                    f"(inputs={self.net.inputs!r} needs it visible): call "
                    "module.bind_data(datamodule) before fitting, or set data.mask_face=false"
                )
            datamodule.mask_face = self.net.masks_face
        contract = contract_of_datamodule(datamodule)
        if tuple(contract.class_names) != tuple(self.class_names):
            raise ValueError(
                f"the data's classes {list(contract.class_names)} are not the model's "
                f"{self.class_names} (model.class_names)"
            )
        self.data_contract = contract

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and datamodule is not None and hasattr(datamodule, "mask_face"):
            self.bind_data(datamodule)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = self.data_contract.to_dict()
        if isinstance(self.net.fusion, FusionNet):  # the floor in force, which `callbacks.gate_floor` may change
            checkpoint[FLOOR_KEY] = self.net.fusion.floor
        if self._trainer is not None:  # what `eval` tests in when asked for trainer.precision=auto
            checkpoint[PRECISION_KEY] = str(self._trainer.precision)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.data_contract = contract_from_checkpoint(checkpoint, masks_face=self.net.masks_face)
        if FLOOR_KEY in checkpoint and isinstance(self.net.fusion, FusionNet):
            self.net.fusion.set_floor(checkpoint[FLOOR_KEY])

    def configure_model(self) -> None:
        """Compile the net in place when `compile` asks for it (once; Lightning calls this per fit/test)."""
        option = self.hparams.get("compile", False)
        if option and not self._compiled:
            self.net.compile(backend="inductor" if option is True else str(option))
            self._compiled = True

    def _step(
        self, batch: Batch, heads: Sequence[str] = ("fused",)
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, GlamorOutput]:
        """The batch through the model: the losses of `heads` (`head_losses`), the targets and the output."""
        face, context, target = batch[:3]
        head_guide = None
        if self.training and self.hparams.context_head_guide == "shuffled":
            head_guide = shuffled_partners(len(target), target.device)
        out = self(face, context, head_guide)
        return head_losses(out, target, heads, self.hparams.residual_context), target, out

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        losses, target, out = self._step(batch, LOSSES)
        unknown = set(self.loss_weights) - set(losses)
        if unknown:
            raise ValueError(
                f"loss_weights name {sorted(unknown)}, which this model lacks; it has "
                f"{sorted(losses)} (auxiliary heads need aux_heads=true)"
            )
        # every head enters the sum, weight 0 included: DDP needs each parameter in each step's graph
        loss = torch.stack([self.loss_weights.get(k, 0.0) * v for k, v in losses.items()]).sum()
        if self.hparams.gate_entropy and out.fusion_weights is not None:
            loss = loss + self.hparams.gate_entropy * gate_negentropy(out.fusion_weights)
        if out.face_logits is not None:
            self.branch_scores = (true_class_mass(out.face_logits, target), true_class_mass(out.context_logits, target))
            self.branch_hits = (true_class_hits(out.face_logits, target), true_class_hits(out.context_logits, target))
        self.train_acc.update(out.logits.argmax(dim=1), target)
        epoch_metrics = {"train/acc": self.train_acc}
        # the step's loss goes to Lightning only on the steps its loggers write (every trainer.log_every_n_steps,
        # where the progress bar's train/loss_step changes too); the epoch mean still counts every step
        if self._writes_step_metrics():
            self.train_loss(loss)
            self.log("train/loss", self.train_loss, on_step=True, on_epoch=True, prog_bar=True)
        else:
            self.train_loss.update(loss)
        if out.fusion_weights is not None:
            w = out.fusion_weights.detach().float()
            self.train_w_face.update(w[:, 0])
            self.train_w_context.update(w[:, 1])
            epoch_metrics.update({"train/w_face": self.train_w_face, "train/w_context": self.train_w_context})
        # the epoch-only metrics are updated at every step but handed to Lightning once per epoch (and once after
        # a resume): it computes, syncs and resets them at the epoch's end all the same, and each `self.log` call
        # costs about a millisecond of its bookkeeping (cProfile of a fit: 7 calls made 8 % of a step at batch 4)
        if self._epoch_metrics_logged != (self.current_epoch, id(self.trainer)):
            self._epoch_metrics_logged = (self.current_epoch, id(self.trainer))
            for name, metric in epoch_metrics.items():
                self.log(name, metric, on_step=False, on_epoch=True, prog_bar=name == "train/acc")
        return loss

    def _writes_step_metrics(self) -> bool:
        """Whether Lightning's loggers write this training step's metrics: the step is a multiple of
        `log_every_n_steps` (counted 1-based, in optimiser steps, as Lightning counts them) or training is to stop
        after it (`trainer.should_stop`), as Lightning decides; or it is the epoch's first, so that every epoch
        logs `train/loss` (Lightning drops a logged value at each epoch's end until it is logged again).
        A `self.log` call costs about a millisecond of bookkeeping: 3-4 % of a step at batch 4 when made at
        every step (docs/speed-log.md)."""
        trainer = self.trainer
        if self._epoch_metrics_logged != (self.current_epoch, id(trainer)) or trainer.should_stop:
            return True
        every = trainer.log_every_n_steps
        return every > 0 and (trainer.global_step + 1) % every == 0

    def validation_step(self, batch: Batch, batch_idx: int) -> dict[str, GlamorOutput]:
        """Returns the batch's outputs for callbacks (the collapse diagnostics)."""
        losses, target, out = self._step(batch)
        loss, preds = losses["fused"], out.logits.argmax(dim=1)
        self.val_loss(loss, weight=len(target))
        self.val_acc(preds, target)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)
        if out.face_logits is not None:
            self.val_acc_face(out.face_logits.argmax(dim=1), target)
            self.val_acc_context(out.context_logits.argmax(dim=1), target)
            self.log("val/acc_face", self.val_acc_face, on_step=False, on_epoch=True)
            self.log("val/acc_context", self.val_acc_context, on_step=False, on_epoch=True)
        if out.fusion_weights is not None:
            w = out.fusion_weights.float()
            self.val_w_face(w[:, 0])
            self.val_w_context(w[:, 1])
            self.log("val/w_face", self.val_w_face, on_step=False, on_epoch=True)
            self.log("val/w_context", self.val_w_context, on_step=False, on_epoch=True)
        return {"out": out}

    def on_train_epoch_end(self) -> None:
        """Stops the run after an epoch whose mean training loss is not finite: a step diverged, and every step
        after it would too. One error line says so; the best checkpoint so far stays the run's (a diverged model's
        val/acc does not beat it), and `make train` tests that one."""
        if not self.train_loss.update_count:  # an epoch without training steps has no mean
            return
        loss = self.train_loss.compute()
        if not torch.isfinite(loss):
            log.error(
                "epoch %d: the training loss was %s (training diverged); stopping here, the best checkpoint so far "
                "is kept. Lower model.lr (now %g), or look for bad inputs.",
                self.current_epoch,
                float(loss),
                self.hparams.lr,
            )
            self.trainer.should_stop = True

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:  # the sanity check must not count as a best
            return
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=False, prog_bar=True)

    def test_step(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """Returns the batch's predictions for callbacks (reports, attention maps)."""
        losses, target, out = self._step(batch)
        loss, preds = losses["fused"], out.logits.argmax(dim=1)
        self.test_loss(loss, weight=len(target))
        self.test_acc(preds, target)
        self.test_confusion.update(preds, target)
        self.test_n.update(torch.tensor(float(len(target)), device=target.device))
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True)
        self.log("test/n", self.test_n, on_step=False, on_epoch=True)
        self.log("test/acc", self.test_acc, on_step=False, on_epoch=True, prog_bar=True)
        return {
            "row": batch[3],
            "target": target,
            "pred": preds,
            "probs": out.logits.float().softmax(1),
            "attention": out.attention.float(),
        }

    def on_test_epoch_start(self) -> None:
        self.test_confusion.reset()  # a test interrupted earlier leaves nothing behind

    def on_test_epoch_end(self) -> None:
        """Logs `test/acc_<class>` for every class with test samples; a class without any has no accuracy
        (`per_class_accuracy.csv` says nan), so nothing is logged for it rather than a false 0."""
        counts = self.test_confusion.compute()  # synced over DDP ranks: every rank logs the same keys
        self.test_confusion.reset()
        for name, correct, samples in zip(self.class_names, counts.diagonal(), counts.sum(dim=1)):
            if samples > 0:
                self.log(f"test/acc_{name}", correct.float() / samples)

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = make_optimizer(
            self.param_groups(), hp.optimizer, hp.lr, hp.momentum, hp.weight_decay, hp.nesterov, hp.fused_sgd
        )
        scheduler = make_schedule(
            optimizer,
            hp.lr_schedule,
            hp.lr,
            self._schedule_epochs(),
            hp.lr_milestones,
            hp.lr_gamma,
            hp.min_lr,
            hp.warmup_epochs,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def _schedule_epochs(self) -> int:
        """The epochs the per-epoch schedule spans: those the trainer will train (`schedules.planned_epochs`)."""
        epochs = planned_epochs(self.trainer) if self._trainer is not None else 1
        if epochs is None:
            if self.hparams.lr_schedule == "cosine":
                raise ValueError(
                    "model.lr_schedule='cosine' anneals over the run's length, but this run has no known length: "
                    f"set trainer.max_epochs (now {self.trainer.max_epochs}) or trainer.max_steps (now "
                    f"{self.trainer.max_steps}), or choose model.lr_schedule=constant or multistep"
                )
            epochs = 1  # constant and multistep do not depend on the length
        return max(1, epochs)

    def param_groups(self) -> list[dict]:
        """The optimiser's parameter groups: one per part of the net, `lr_scale` applied (`optimizers.part_groups`)."""
        return part_groups(self, self.net, self.hparams.lr, self.hparams.get("lr_scale") or {})
