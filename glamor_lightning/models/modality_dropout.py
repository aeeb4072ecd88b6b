"""Modality dropout: in training, a whole branch's vector is dropped for a random share of the samples.

A fused model can learn to lean on the branch that is easier early in training (here the face) and leave
the other one untrained: the fusion net's gate then shuts it out for good (paper §4.2: the weights "take a
value near 0 or 1"). Dropping a whole modality per sample, as in ModDrop (Neverova et al., "ModDrop:
adaptive multi-modal gesture recognition", TPAMI 2016) and modality dropout in audio-visual models, makes
each branch carry the decision on its own for some samples, so neither can be ignored.

With probability `p` a sample loses one branch, the face or the context with equal odds (never both), by
zeroing its vector before the fusion; the kept branch is not rescaled, so evaluation (no dropout) sees the
vectors at their training scale. It draws from torch's global generator, which the `StepSeed` callback
reseeds per step, so runs stay reproducible and resumable.

With Global-Local Attention the face also reaches the context vector: GLA's attention is guided by v_f,
so *where* it looks can carry the face's own expression, and a context branch can learn that echo instead
of reading the scene (docs/training.md). Zeroing v_f at the fusion leaves the echo in v_c, and then
rewards it: the fused head must decide from v_c alone and the echo is the easiest signal there.
`GlamorNet(modality_dropout_guide=True)` therefore drops a dropped face from GLA's guide as well.
"""

from __future__ import annotations

import torch
from torch import Tensor


def keep_masks(batch: int, p: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """Per-sample keep masks [B, 1] (True keeps) of the face and the context vector: a share `p` of the
    samples loses one branch, the face or the context with equal odds, never both."""
    dropped = torch.rand(batch, device=device) < p
    face_side = torch.rand(batch, device=device) < 0.5
    return ~(dropped & face_side)[:, None], ~(dropped & ~face_side)[:, None]


def drop_modalities(v_f: Tensor, v_c: Tensor, p: float) -> tuple[Tensor, Tensor]:
    """v_f, v_c with one branch zeroed for a share `p` of the samples (see `keep_masks`)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"modality_dropout must be in [0, 1), got {p}")
    if p == 0.0:
        return v_f, v_c
    return apply_masks(v_f, v_c, *keep_masks(v_f.shape[0], p, v_f.device))


def apply_masks(v_f: Tensor, v_c: Tensor, keep_face: Tensor, keep_context: Tensor) -> tuple[Tensor, Tensor]:
    """v_f, v_c with the samples that `keep_masks` drops zeroed."""
    return v_f * keep_face.to(v_f.dtype), v_c * keep_context.to(v_c.dtype)
