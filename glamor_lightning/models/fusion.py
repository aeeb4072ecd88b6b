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


def _scorer(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))


@FUSIONS.register("fusion_net")
class FusionNet(nn.Module):
    """GLAMOR-Net's fusion: each branch scores itself (Linear → ReLU → Linear → 1), a softmax over
    the pair gives (w_f, w_c), and the output is [w_f·v_f; w_c·v_c]. Returns the weights [B, 2]."""

    def __init__(self, face_dim: int, context_dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.face_score = _scorer(face_dim, hidden)
        self.context_score = _scorer(context_dim, hidden)
        self.out_features = face_dim + context_dim

    def forward(self, v_f: Tensor, v_c: Tensor) -> tuple[Tensor, Tensor]:
        weights = torch.softmax(torch.cat([self.face_score(v_f), self.context_score(v_c)], dim=1), dim=1)
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


def create_fusion(name: str, face_dim: int, context_dim: int, hidden: int = 128) -> nn.Module:
    """Build the fusion registered as `name` (`hidden` matters to `fusion_net` only)."""
    return FUSIONS.create(name, face_dim=face_dim, context_dim=context_dim, hidden=hidden)
