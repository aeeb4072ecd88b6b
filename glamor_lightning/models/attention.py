"""Context attention: pool a context feature map into one vector, with a spatial attention map.

Interface of every module: `forward(v_f [B, Df] or None, fmap_c [B, Dc, H, W]) -> (v_c [B, Dc],
attn [B, H, W])`, where `attn` sums to 1 over H×W and `v_c = Σ_ij attn_ij · fmap_c[:, :, i, j]`.
Only `gla` reads the face vector `v_f`; the others accept None for it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .encoders import KERAS_BN
from .registry import Registry

ATTENTIONS: Registry[nn.Module] = Registry("attention")


def _attend(scores: Tensor, cells: Tensor, h: int, w: int) -> tuple[Tensor, Tensor]:
    """Spatial softmax of scores [B, N] and the weighted sum of cells [B, N, D] → ([B, D], [B, H, W])."""
    attn = torch.softmax(scores, dim=1)
    v_c = torch.einsum("bn,bnd->bd", attn.to(cells.dtype), cells)
    return v_c, attn.view(-1, h, w)


def _cells(fmap: Tensor) -> Tensor:
    """[B, D, H, W] → [B, H·W, D], row-major over (H, W)."""
    return fmap.flatten(2).transpose(1, 2)


@ATTENTIONS.register("none")
class NoAttention(nn.Module):
    """Global average pooling: the attention map is uniform, 1 / (H·W)."""

    def __init__(self, face_dim: int = 0, context_dim: int = 0, hidden: int = 128, batchnorm: bool = True) -> None:
        super().__init__()

    def forward(self, v_f: Tensor | None, fmap_c: Tensor) -> tuple[Tensor, Tensor]:
        b, _, h, w = fmap_c.shape
        attn = fmap_c.new_full((b, h, w), 1.0 / (h * w))
        return fmap_c.mean(dim=(2, 3)), attn


@ATTENTIONS.register("standard")
class StandardAttention(nn.Module):
    """CAER-Net-S context attention: scores from the context map alone (conv3×3 → BN → ReLU →
    conv3×3 → 1 channel), spatial softmax, weighted sum."""

    def __init__(self, face_dim: int, context_dim: int, hidden: int = 128, batchnorm: bool = True) -> None:
        super().__init__()
        self.score = nn.Sequential(
            nn.Conv2d(context_dim, hidden, 3, padding=1),
            nn.BatchNorm2d(hidden, **KERAS_BN),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 3, padding=1),
        )

    def forward(self, v_f: Tensor | None, fmap_c: Tensor) -> tuple[Tensor, Tensor]:
        _, _, h, w = fmap_c.shape
        return _attend(self.score(fmap_c).flatten(1), _cells(fmap_c), h, w)


@ATTENTIONS.register("gla")
class GlobalLocalAttention(nn.Module):
    """GLAMOR-Net's Global-Local Attention: s_ij = MLP([v_f; v_ij]), a = softmax over all cells,
    v_c = Σ a_ij v_ij. The MLP (weights shared across cells) is

    - `batchnorm=True` (the authors' code): Linear(Df+Dc → hidden) → ReLU → BatchNorm1d over
      batch × cells → ReLU → Linear(hidden → 1);
    - `batchnorm=False` (the paper's Fig. 4): Linear(Df+Dc → hidden) → ReLU → Linear(hidden → 1).

    The first Linear is one layer (`fc1`, input order [v_f; v_ij]) but is applied in two parts,
    the face part once per image and the context part once per cell: the same result as
    concatenating, without materialising [B, H·W, Df+Dc].
    """

    def __init__(self, face_dim: int, context_dim: int, hidden: int = 128, batchnorm: bool = True) -> None:
        super().__init__()
        self.face_dim = face_dim
        self.fc1 = nn.Linear(face_dim + context_dim, hidden)
        self.bn = nn.BatchNorm1d(hidden, **KERAS_BN) if batchnorm else None
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, v_f: Tensor | None, fmap_c: Tensor) -> tuple[Tensor, Tensor]:
        if v_f is None:
            raise ValueError("attention 'gla' needs the face vector v_f")
        b, _, h, w = fmap_c.shape
        cells = _cells(fmap_c)  # [B, N, Dc]
        w_face, w_ctx = self.fc1.weight[:, : self.face_dim], self.fc1.weight[:, self.face_dim :]
        hid = F.linear(cells, w_ctx) + F.linear(v_f, w_face, self.fc1.bias).unsqueeze(1)  # [B, N, hidden]
        hid = F.relu(hid)
        if self.bn is not None:
            hid = F.relu(self.bn(hid.flatten(0, 1))).view(b, h * w, -1)
        scores = self.fc2(hid).squeeze(-1)  # [B, N]
        return _attend(scores, cells, h, w)


def create_attention(
    name: str, face_dim: int, context_dim: int, hidden: int = 128, batchnorm: bool = True
) -> nn.Module:
    """Build the attention registered as `name` (`batchnorm` matters to `gla` only)."""
    return ATTENTIONS.create(name, face_dim=face_dim, context_dim=context_dim, hidden=hidden, batchnorm=batchnorm)
