"""Image encoders: float NCHW images in [0, 1] → the last feature map (NCHW).

`original` is the paper's five-block CNN; any timm model name gives a timm backbone
(`mobilenetv2` and `resnet18` are the paper's Table 7 aliases). Input normalisation is the
encoder's business: each encoder holds `mean`/`std` buffers ([1, 3, 1, 1]) and applies them in
`forward`, so data pipelines feed plain [0, 1] images whatever the backbone. Where pretrained weights
come from (a local file, the hub, the caches) is `pretrained.py`'s business.
"""

from __future__ import annotations

import functools
import os

import timm
import torch
from torch import Tensor, nn

from glamor_lightning.errors import SetupError

from .pretrained import PATH_OPTION, load_state_dict, weights_file
from .registry import Registry, UnknownNameError

#: Keras BatchNormalization defaults, as in the authors' TF code (Keras momentum 0.99 = PyTorch 0.01).
KERAS_BN: dict[str, float] = {"eps": 1e-3, "momentum": 0.01}

ENCODERS: Registry[Encoder] = Registry(
    "backbone", hint="Any timm model name (see timm.list_models()) is accepted as well."
)


class Encoder(nn.Module):
    """Base class: normalises its [0, 1] input with `mean`/`std`, then extracts features.

    Subclasses implement `features(x)` on the normalised input and set `out_channels`.
    """

    out_channels: int
    mean: Tensor
    std: Tensor

    def __init__(
        self,
        out_channels: int,
        mean: tuple[float, ...] = (0.0, 0.0, 0.0),
        std: tuple[float, ...] = (1.0, 1.0, 1.0),
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        # Not persistent: they follow from the backbone name, so state dicts hold only weights.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """[B, 3, H, W] in [0, 1] → [B, out_channels, h, w]."""
        return self.features((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))


@ENCODERS.register("original")
class OriginalEncoder(Encoder):
    """The paper's encoder (its Fig. 3): 5 × (conv3×3 'same' with bias → BN → ReLU), 2×2 max-pool
    after blocks 1–4. Face 96 → 6×6×256, context 112 → 7×7×256. Uses no input normalisation, as
    the authors' code."""

    def __init__(
        self,
        widths: tuple[int, ...] = (32, 64, 128, 256, 256),
        pretrained: bool = False,
        pretrained_path: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(out_channels=widths[-1])
        layers: list[nn.Module] = []
        in_ch = 3
        for i, width in enumerate(widths):
            layers += [
                nn.Conv2d(in_ch, width, 3, padding=1, bias=True),
                nn.BatchNorm2d(width, **KERAS_BN),
                nn.ReLU(inplace=True),
            ]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            in_ch = width
        self.body = nn.Sequential(*layers)
        if pretrained_path is not None:
            self.load_state_dict(load_state_dict(pretrained_path))
        elif pretrained:
            raise SetupError(
                "backbone 'original' has no published pretrained weights; "
                f"pass {PATH_OPTION} (a state dict of this encoder) or set model.pretrained=false"
            )

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)


class TimmEncoder(Encoder):
    """Any timm model as a backbone: its last feature map (`features_only`), its own mean/std.

    Args:
        model_name: a timm model name (`timm.is_model`).
        pretrained: load timm's pretrained weights (hub or local cache; fails at once when offline).
        pretrained_path: load weights from this local file instead (.pth/.bin/.safetensors state
            dict of the full timm model, e.g. `timm.create_model(name).state_dict()`).
    """

    def __init__(
        self,
        model_name: str,
        pretrained: bool = False,
        pretrained_path: str | os.PathLike[str] | None = None,
    ) -> None:
        file = weights_file(model_name, pretrained, pretrained_path)
        model = timm.create_model(
            model_name,
            pretrained=file is not None or (pretrained and pretrained_path is None),
            pretrained_cfg_overlay={"file": file} if file is not None else None,
            features_only=True,
            out_indices=(-1,),
        )
        cfg = model.pretrained_cfg
        super().__init__(
            out_channels=model.feature_info.channels()[-1],
            mean=tuple(cfg.get("mean", timm.data.IMAGENET_DEFAULT_MEAN)),
            std=tuple(cfg.get("std", timm.data.IMAGENET_DEFAULT_STD)),
        )
        self.model_name = model_name
        self.model = model

    def features(self, x: Tensor) -> Tensor:
        return self.model(x)[-1]


ENCODERS.register("mobilenetv2", functools.partial(TimmEncoder, "mobilenetv2_100"))
ENCODERS.register("resnet18", functools.partial(TimmEncoder, "resnet18"))


def create_encoder(
    name: str,
    pretrained: bool = False,
    pretrained_path: str | os.PathLike[str] | None = None,
) -> Encoder:
    """Build the encoder registered as `name`, or a `TimmEncoder` for any other timm model name.

    `pretrained_path` (a local file) wins over `pretrained`; `pretrained=True` without a path uses
    the hub or its local cache, and fails at once with a RuntimeError when the hub is off or
    unreachable and the weights are not cached. An unknown name raises a RuntimeError.
    """
    if name in ENCODERS:
        return ENCODERS.create(name, pretrained=pretrained, pretrained_path=pretrained_path)
    if timm.is_model(name):
        return TimmEncoder(name, pretrained=pretrained, pretrained_path=pretrained_path)
    raise UnknownNameError(ENCODERS.unknown_message(name))
