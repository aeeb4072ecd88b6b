"""Gradient modulation of the dominant branch: OGM-GE.

OGM-GE ("On-the-fly Gradient Modulation with Generalization Enhancement") is from Peng, Wei, Deng, Wang
and Hu, "Balanced Multimodal Learning via On-the-fly Gradient Modulation", CVPR 2022
(https://arxiv.org/abs/2203.15332; the authors' code: https://github.com/GeWu-Lab/OGM-GE_CVPR2022).
Trained end to end, one branch of a two-branch model learns faster, the fused loss is then low already,
and the slower branch gets little gradient: in GLAMOR-Net the face branch dominates and the fusion gate
shuts the context out. OGM slows the dominant branch down at every optimiser step:

- per branch u, a score s_u: the summed softmax probability of the true class over the batch, from a
  classifier that sees branch u only (here the auxiliary heads of `EmotionModule(aux_heads=True)`, which
  the module leaves in `pl_module.branch_scores` at each training step);
- the ratio rho = s_face / s_context; the branch that leads (rho > 1: the face; rho < 1: the context,
  with 1 / rho) gets the coefficient k = 1 - tanh(alpha * (ratio - 1)), the other 1 (`coefficients`);
- the gradients of the leading branch's parameters are multiplied by k before the optimiser step;
- GE (`noise`): Gaussian noise with the standard deviation of each parameter's own gradient is added to
  the gradients of both branches, which restores some of the gradient's size and, the authors argue,
  helps generalisation.

Modulation is applied in the epochs [start_epoch, end_epoch). Where this differs from the authors' code
(docs/training.md, "Gradient modulation (OGM-GE)"): the scores come from the auxiliary heads, not from
the fused classifier's weights split per modality; every parameter of a branch's optimiser groups is
modulated (theirs: the 4-D convolution weights only); k is continuous at rho = 1 (their first version;
their current code and the paper's Eq. 10 use tanh(alpha * rho) once rho > 1); and the window's end is
excluded.

Where it runs: `on_before_optimizer_step`, i.e. after backward, after DDP's all-reduce and (16-mixed)
after the gradients are unscaled, before clipping and the step. Under DDP the two scores are summed over
the processes first, and the noise is drawn from a generator seeded from (seed, global_step) only, so
every process modulates the same all-reduced gradient in the same way and the replicas stay equal
(torch's global generator is reseeded per process by `StepSeed` and would differ). Scores of the
micro-batches of one step are summed (`accumulate_grad_batches`). Parameters without a gradient (parts a
stage scheduler freezes) are left alone.
"""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from glamor_lightning.callbacks.stages import StageScheduler
from glamor_lightning.models.glamor import GlamorNet

#: the optimiser parameter groups (`GlamorNet.PARTS`) of each branch
BRANCH_PARTS = GlamorNet.BRANCH_PARTS
#: what setup asks for when the branch scores are missing or meaningless
ENABLE_HINT = "set model.aux_heads=true model.aux_loss_weight=1.0 (or use callbacks=staged)"


def coefficients(s_face: float, s_context: float, alpha: float) -> tuple[float, float]:
    """OGM's gradient coefficients (k_face, k_context) from the branches' scores.

    The leading branch (higher score) gets 1 - tanh(alpha * (ratio - 1)), ratio = its score over the
    other's (> 1); the other branch gets 1; equal scores give (1, 1). A score of 0 counts as a tiny
    positive number (the leader's k is then about 0).
    """
    s_face, s_context = max(float(s_face), 1e-12), max(float(s_context), 1e-12)
    if s_face > s_context:
        return 1.0 - math.tanh(alpha * (s_face / s_context - 1.0)), 1.0
    if s_context > s_face:
        return 1.0, 1.0 - math.tanh(alpha * (s_context / s_face - 1.0))
    return 1.0, 1.0


def noise_generator(seed: int, step: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for GE's noise of optimiser step `step`: seeded from (seed, step) only, so every DDP
    process draws the same noise, whatever torch's global generator holds."""
    state = np.random.SeedSequence([int(seed), int(step)]).generate_state(2, np.uint64)[0] >> np.uint64(1)
    generator = torch.Generator(device=device)
    generator.manual_seed(int(state))
    return generator


class GradientModulation(Callback):
    """OGM-GE on `EmotionModule`'s two branches (see the module docstring).

    Args:
        enabled: False makes the callback do nothing (the default config keeps it at hand, off).
        alpha: how strongly the leading branch is slowed (the authors recommend 0.1 on VGGSound, 0.8 on
            CREMA-D; 0.1 is their default setting).
        noise: GE, the Gaussian noise with each gradient's standard deviation (OGM-GE); False is plain OGM.
        start_epoch: the first epoch modulated.
        end_epoch: the first epoch no longer modulated (None: modulate to the end).
        seed: seeds GE's noise, with the optimiser step.

    Logs per epoch (means over its steps) `train/ogm_coeff_face`, `train/ogm_coeff_context` (the
    coefficients applied: 1 outside the window) and `train/score_ratio` (s_face / s_context).
    """

    def __init__(
        self,
        enabled: bool = False,
        alpha: float = 0.1,
        noise: bool = True,
        start_epoch: int = 0,
        end_epoch: int | None = 50,
        seed: int = 0,
    ) -> None:
        if not alpha > 0:
            raise ValueError(f"callbacks.modulation.alpha must be > 0, got {alpha}")
        if start_epoch < 0:
            raise ValueError(f"callbacks.modulation.start_epoch must be >= 0, got {start_epoch}")
        if end_epoch is not None and end_epoch <= start_epoch:
            raise ValueError(
                f"callbacks.modulation.end_epoch ({end_epoch}) must be after start_epoch ({start_epoch}), "
                "or null for no end"
            )
        self.enabled = bool(enabled)
        self.alpha = float(alpha)
        self.noise = bool(noise)
        self.start_epoch = int(start_epoch)
        self.end_epoch = None if end_epoch is None else int(end_epoch)
        self.seed = int(seed)
        self.active = False
        #: the last step's (k_face, k_context), as applied
        self.last_coefficients: tuple[float, float] | None = None
        self._scores: torch.Tensor | None = None  # (s_face, s_context) summed over the step's micro-batches

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or not self.enabled:
            return
        net = getattr(pl_module, "net", None)
        if getattr(net, "inputs", "both") != "both":
            raise ValueError(
                f"callbacks.modulation balances two branches, but the model has one (model.inputs={net.inputs!r}): "
                "set callbacks.modulation.enabled=false"
            )
        if not getattr(net, "has_aux_heads", False):
            raise ValueError(
                "callbacks.modulation compares the branches' auxiliary heads, but the model has none: " + ENABLE_HINT
            )
        if not _aux_losses_count(trainer, pl_module):
            raise ValueError(
                "callbacks.modulation compares the branches' auxiliary heads, but their loss never counts "
                "(untrained heads score at chance): " + ENABLE_HINT
            )
        self.active = True

    def modulates(self, epoch: int) -> bool:
        """Whether `epoch` is in the modulation window [start_epoch, end_epoch)."""
        return self.start_epoch <= epoch and (self.end_epoch is None or epoch < self.end_epoch)

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        if not self.active:
            return
        scores = getattr(pl_module, "branch_scores", None)
        if scores is None:
            raise RuntimeError("callbacks.modulation: the module set no branch_scores in its training_step")
        scores = torch.stack([s.detach().float() for s in scores])
        self._scores = scores if self._scores is None else self._scores + scores

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if not self.active or self._scores is None:
            return
        scores, self._scores = self._scores, None
        s_face, s_context = trainer.strategy.reduce(scores, reduce_op="sum").tolist()  # the same on every rank
        modulate = self.modulates(trainer.current_epoch)
        k_face, k_context = coefficients(s_face, s_context, self.alpha) if modulate else (1.0, 1.0)
        if modulate:
            self._modulate(optimizer, {"face": k_face, "context": k_context}, trainer.global_step)
        self.last_coefficients = (k_face, k_context)
        for name, value in (
            ("train/ogm_coeff_face", k_face),
            ("train/ogm_coeff_context", k_context),
            ("train/score_ratio", s_face / max(s_context, 1e-12)),
        ):
            # equal on every rank; batch_size=1: the epoch value is the plain mean over the steps
            pl_module.log(name, value, on_step=False, on_epoch=True, batch_size=1, sync_dist=True)

    def _modulate(self, optimizer: torch.optim.Optimizer, coeffs: dict[str, float], step: int) -> None:
        """Multiply each branch's gradients by its coefficient; with `noise`, add GE's noise to them."""
        factor = {part: coeffs[branch] for branch, parts in BRANCH_PARTS.items() for part in parts}
        generators: dict[torch.device, torch.Generator] = {}
        for group in optimizer.param_groups:  # the same order on every rank: the same draws
            k = factor.get(group.get("name"))
            if k is None:
                continue
            for p in group["params"]:
                grad = p.grad
                if grad is None:  # a frozen part
                    continue
                if self.noise and grad.numel() > 1:
                    std = grad.float().std()  # of the gradient before modulation, as GE
                    if grad.device not in generators:
                        generators[grad.device] = noise_generator(self.seed, step, grad.device)
                    draw = torch.randn(grad.shape, generator=generators[grad.device], device=grad.device)
                    grad.mul_(k).add_((draw * std).to(grad.dtype))
                elif k != 1.0:
                    grad.mul_(k)


def _aux_losses_count(trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
    """Whether the auxiliary heads learn: their loss weight is set, or an enabled stage counts it."""
    weights = getattr(pl_module, "loss_weights", {})
    if weights.get("face") or weights.get("context"):
        return True
    stages = [cb for cb in trainer.callbacks if isinstance(cb, StageScheduler) and cb.enabled]
    return any(s.losses.get("face") or s.losses.get("context") for cb in stages for s in cb.stages)
