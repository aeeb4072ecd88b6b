"""Fusion of the face vector v_f [B, Df] and the context vector v_c [B, Dc].

Interface of every module: `forward(v_f, v_c) -> (fused [B, out_features], weights [B, 2] or None)`
and an `out_features` attribute. `fusion_net` is GLAMOR-Net's; `add`, `max` and `concat` are the
paper's Table 6 ablations; `none` is the pass-through for single-input models (paper Table 4).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .registry import Registry

FUSIONS: Registry[nn.Module] = Registry("fusion")
#: the checkpoint entry that holds the gate floor a `FusionNet` was in when the checkpoint was saved: a training
#: callback may change the floor (`callbacks.gate_floor`), and a checkpoint must be evaluated with the floor its
#: weights trained and validated under, not the configured one (checkpoints without it used the configured one)
FLOOR_KEY = "fusion_floor_in_force"


def _scorer(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))


@FUSIONS.register("fusion_net")
class FusionNet(nn.Module):
    """GLAMOR-Net's fusion: each branch scores itself (Linear → ReLU → Linear → 1), a softmax over
    the pair gives (w_f, w_c), and the output is [w_f·v_f; w_c·v_c]. Returns the weights [B, 2].

    Gate regularisation, off with the defaults (the paper's gate): `temperature` τ divides the scores
    before the softmax (τ > 1 flattens the gate, so a score gap must be τ times larger to close a branch);
    `floor` f keeps each weight in [f, 1 - f]: w = f + (1 - 2f)·softmax(s/τ), so no branch is ever shut
    out entirely and its gradient never vanishes (a floor on the mixture weights, as in the mixture-of-
    experts practice of bounding the gate away from 0).
    """

    def __init__(
        self, face_dim: int, context_dim: int, hidden: int = 128, temperature: float = 1.0, floor: float = 0.0
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"fusion_temperature must be > 0, got {temperature}")
        self.face_score = _scorer(face_dim, hidden)
        self.context_score = _scorer(context_dim, hidden)
        self.out_features = face_dim + context_dim
        self.temperature = float(temperature)
        self.set_floor(floor)

    def set_floor(self, floor: float) -> None:
        """The floor f of each weight from now on (the gate's own weights are untouched); a plain float, so the
        forward's arithmetic is that of a floor configured at construction."""
        if not 0.0 <= floor < 0.5:
            raise ValueError(f"fusion_floor must be in [0, 0.5), got {floor}")
        self.floor = float(floor)

    def forward(self, v_f: Tensor, v_c: Tensor) -> tuple[Tensor, Tensor]:
        scores = torch.cat([self.face_score(v_f), self.context_score(v_c)], dim=1)
        weights = torch.softmax(scores / self.temperature, dim=1)
        if self.floor:
            weights = self.floor + (1.0 - 2.0 * self.floor) * weights
        w = weights.to(v_f.dtype)
        return torch.cat([w[:, :1] * v_f, w[:, 1:] * v_c], dim=1), weights


class _Elementwise(nn.Module):
    """Base of element-wise fusions, which need equal face and context widths."""

    name = ""

    def __init__(self, face_dim: int, context_dim: int, hidden: int = 128) -> None:
        super().__init__()
        if face_dim != context_dim:
            raise ValueError(
                f"fusion '{self.name}' is element-wise and needs equal face and context widths, "
                f"got {face_dim} and {context_dim}; use 'concat' or 'fusion_net'"
            )
        self.out_features = face_dim


@FUSIONS.register("add")
class AddFusion(_Elementwise):
    """v_f + v_c."""

    name = "add"

    def forward(self, v_f: Tensor, v_c: Tensor) -> tuple[Tensor, None]:
        return v_f + v_c, None


@FUSIONS.register("max")
class MaxFusion(_Elementwise):
    """Element-wise max(v_f, v_c)."""

    name = "max"

    def forward(self, v_f: Tensor, v_c: Tensor) -> tuple[Tensor, None]:
        return torch.maximum(v_f, v_c), None


@FUSIONS.register("concat")
class ConcatFusion(nn.Module):
    """[v_f; v_c], unweighted."""

    def __init__(self, face_dim: int, context_dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.out_features = face_dim + context_dim

    def forward(self, v_f: Tensor, v_c: Tensor) -> tuple[Tensor, None]:
        return torch.cat([v_f, v_c], dim=1), None


@FUSIONS.register("none")
class NoFusion(nn.Module):
    """No fusion, for single-input models: passes on the one branch there is.

    Exactly one of `face_dim` / `context_dim` must be 0 (the absent branch), and `forward` gets
    None for that branch.
    """

    def __init__(self, face_dim: int, context_dim: int, hidden: int = 128) -> None:
        super().__init__()
        if (face_dim == 0) == (context_dim == 0):
            raise ValueError(
                "fusion 'none' passes on a single branch: exactly one of face_dim and context_dim must be 0, "
                f"got {face_dim} and {context_dim}; fuse two branches with 'fusion_net', 'add', 'max' or 'concat'"
            )
        self.use_face = face_dim > 0
        self.out_features = face_dim or context_dim

    def forward(self, v_f: Tensor | None, v_c: Tensor | None) -> tuple[Tensor, None]:
        v = v_f if self.use_face else v_c
        if v is None:
            raise ValueError(f"fusion 'none' expects the {'face' if self.use_face else 'context'} vector, got None")
        return v, None


def create_fusion(
    name: str, face_dim: int, context_dim: int, hidden: int = 128, temperature: float = 1.0, floor: float = 0.0
) -> nn.Module:
    """Build the fusion registered as `name` (`hidden` and the gate settings matter to `fusion_net` only:
    another fusion with a gate setting other than the default is an error, as it would change nothing)."""
    if name == "fusion_net":
        return FusionNet(face_dim, context_dim, hidden=hidden, temperature=temperature, floor=floor)
    if (temperature, floor) != (1.0, 0.0):
        raise ValueError(
            f"fusion '{name}' has no gate: set fusion_temperature=1 and fusion_floor=0, or use fusion='fusion_net'"
        )
    return FUSIONS.create(name, face_dim=face_dim, context_dim=context_dim, hidden=hidden)
