"""The losses of a training step and the per-branch scores, by name (`EmotionModule` counts them).

A step can count the cross-entropy of each head: the fused prediction's (`fused`) and the auxiliary
face-only and context-only heads' (`face`, `context`), weighted by `EmotionModule.loss_weights` (set by the
stage scheduler, or by `aux_loss_weight`). Beside them: the fusion gate's negative entropy (a penalty that
keeps the gate open) and each branch's score for gradient modulation. `check_loss_settings` refuses a loss
setting the model cannot honour, before anything trains.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from glamor_lightning.models.glamor import GlamorNet, GlamorOutput

#: The losses a step can count, by name: each is the cross-entropy of one head's logits (a `GlamorOutput`
#: field): the fused prediction's, and the auxiliary face-only and context-only heads'.
HEAD_LOGITS = {"fused": "logits", "face": "face_logits", "context": "context_logits"}
LOSSES = tuple(HEAD_LOGITS)


#: whose face guides GLA for the auxiliary context head in training (`context_head_guide`): each sample's own, or
#: that of another sample of the batch, drawn without regard to labels (`shuffled_partners`): the guide then says
#: nothing about the sample's class, so the head cannot profit from an echo of the face. (Pairing with a face of
#: another class instead leaks "not the guide's class": a 12-epoch probe's head fell to 4-7 %, below chance.)
CONTEXT_HEAD_GUIDES = ("own", "shuffled")


def check_loss_settings(
    net: GlamorNet,
    aux_loss_weight: float,
    gate_entropy: float,
    residual_context: bool,
    context_head_guide: str,
    context_head_input: str,
) -> None:
    """Refuse, naming what to set, a loss setting the model `net` cannot honour: auxiliary losses or a residual
    context head without auxiliary heads, a gate penalty without a gate, an unknown or inapplicable
    `context_head_guide` (`EmotionModule`'s arguments of the same names)."""
    if aux_loss_weight and not net.has_aux_heads:
        raise ValueError(
            "aux_loss_weight counts the auxiliary heads' losses: set aux_heads=true (a model "
            "with both branches), or aux_loss_weight=0"
        )
    if gate_entropy and net.config["fusion"] != "fusion_net":
        raise ValueError(
            f"gate_entropy regularises the fusion net's gate; fusion={net.config['fusion']!r} has none: "
            "set gate_entropy=0"
        )
    if residual_context and not net.has_aux_heads:
        raise ValueError(
            "residual_context trains the auxiliary context head through its product with the face head: "
            "set aux_heads=true (a model with both branches), or residual_context=false"
        )
    if context_head_guide not in CONTEXT_HEAD_GUIDES:
        raise ValueError(
            f"context_head_guide must be one of {', '.join(CONTEXT_HEAD_GUIDES)}; got {context_head_guide!r}"
        )
    if context_head_guide != "own" and not (
        net.has_aux_heads and net.attention_reads_face and context_head_input == "attention"
    ):
        raise ValueError(
            f"context_head_guide={context_head_guide!r} re-guides GLA for the auxiliary context head: it needs "
            "aux_heads=true, attention=gla and context_head_input=attention; or set context_head_guide=own"
        )


def gate_negentropy(weights: torch.Tensor) -> torch.Tensor:
    """Mean of sum_k w_k log w_k over the batch: the fusion gate's negative entropy, log(1/2) when balanced and
    0 when closed. Added to the loss times `gate_entropy`, it pulls the gate away from 0 and 1 (a balance
    penalty in the spirit of the load-balancing losses of mixtures of experts)."""
    w = weights.float().clamp_min(1e-8)
    return (w * w.log()).sum(dim=1).mean()


def true_class_mass(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of the softmax probability of each sample's true class (OGM-GE's branch score)."""
    probs = logits.detach().float().softmax(dim=1)
    return probs.gather(1, target[:, None]).sum()


def true_class_hits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """How many samples of the batch the logits classify right (argmax = target), as a detached count."""
    return (logits.detach().argmax(dim=1) == target).sum()


def head_losses(
    out: GlamorOutput, target: torch.Tensor, heads: Sequence[str] = LOSSES, residual_context: bool = False
) -> dict[str, torch.Tensor]:
    """Cross-entropy (in fp32) of each of `heads` (names in `LOSSES`) that the model has.

    `residual_context`: the context head's loss is that of its product with the face head, the face head's
    log-probabilities detached (`residual_logits`), so the context branch learns what the face does not tell."""
    logits = {name: getattr(out, HEAD_LOGITS[name]) for name in heads}
    if residual_context and logits.get("context") is not None and out.face_logits is not None:
        logits["context"] = residual_logits(out.context_logits, out.face_logits)
    return {name: F.cross_entropy(x.float(), target) for name, x in logits.items() if x is not None}


def residual_logits(logits: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of the product of experts softmax(logits) x softmax(known), `known` detached.

    Trained through this product, a head gets (almost) no gradient from the samples that `known` already
    classifies with confidence and learns the residual: what `known` gets wrong or is unsure of. This is the
    product-of-experts training of Clark et al. (EMNLP 2019, "Don't take the easy way out") and He et al.
    (2019, "Unlearn dataset bias ... by fitting the residual"), with the face head as the known expert: it
    stops the context branch from re-learning what the face already tells (docs/training.md)."""
    return known.detach().float().log_softmax(dim=1) + logits.float().log_softmax(dim=1)


def shuffled_partners(n: int, device: torch.device | str = "cpu") -> torch.Tensor | None:
    """For each of `n` samples, the index of another sample: the batch shifted cyclically by a random 1..n-1. The
    loader has shuffled the batch, so a partner's class is independent of the sample's (no sample is its own
    partner, and no class is avoided, either of which would tell the class). None for a batch of one."""
    if n < 2:
        return None
    shift = int(torch.randint(1, n, ()))
    return (torch.arange(n, device=device) + shift) % n
