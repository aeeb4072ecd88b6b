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

from .depthwise import use_fast_strided_depthwise
from .fused_bn import bn_pool_relu, fusable_blocks
from .maxpool import use_fast_max_pool
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
        #: whether `forward` normalises: mean 0 and std 1 (the original encoder's) leave every value as it is, bit
        #: for bit, and computing them cost two passes over each input (0.15 ms for a batch of 4 contexts, 1.2 ms
        #: for 32, on an Intel Xeon with AMX, 2026-12-08)
        self.normalises = any(m != 0 for m in mean) or any(d != 1 for d in std)

    def features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """[B, 3, H, W] in [0, 1] → [B, out_channels, h, w]."""
        if not self.normalises:
            return self.features(x)
        return self.features((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))


@ENCODERS.register("original")
class OriginalEncoder(Encoder):
    """The paper's encoder (its Fig. 3): 5 × (conv3×3 'same' with bias → BN → ReLU), 2×2 max-pool
    after blocks 1–4. Face 96 → 6×6×256, context 112 → 7×7×256. Uses no input normalisation, as
    the authors' code.

    Blocks 1–4 run conv → BN → max-pool → ReLU: the ReLU is moved after the pooling. The two commute
    exactly (ReLU is monotone, so the ReLU of a window's maximum is the maximum of its ReLUs; a window
    whose largest value is ≤ 0 gets a zero gradient either way; a positive maximum is the same element
    in both orders), so outputs and gradients are bit-identical to the paper's order
    (tests/models/test_encoders.py), while the ReLU and its backward touch a quarter of the values.
    Measured: 1.11× the training step in bf16 channels-last, 1.01× in fp32, on an AMX machine (`make bench`,
    "rewrites", 2026-12-06).
    Parameter-free layers only move, so state-dict keys are those of the paper's order.

    Its 2×2 pools take their bf16 backward on the CPU from `max_unpool2d` (`maxpool.TilingMaxPool2d`: the same
    gradients, torch's own kernel for them being slow at few channels)."""

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
            layers += [nn.Conv2d(in_ch, width, 3, padding=1, bias=True), nn.BatchNorm2d(width, **KERAS_BN)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            layers.append(nn.ReLU(inplace=True))
            in_ch = width
        self.body = nn.Sequential(*layers)
        use_fast_max_pool(self.body)
        if pretrained_path is not None:
            self.load_state_dict(load_state_dict(pretrained_path))
        elif pretrained:
            raise SetupError(
                "backbone 'original' has no published pretrained weights; "
                f"pass {PATH_OPTION} (a state dict of this encoder) or set model.pretrained=false"
            )

    #: whether training on the CPU runs each block's BN → max-pool → ReLU as one kernel (`fused_bn`, to rounding;
    #: `use_fused_bn_pool_relu` sets it)
    fuse_bn_pool_relu: bool = False

    def features(self, x: Tensor) -> Tensor:
        blocks = fusable_blocks(self.body) if self.fuse_bn_pool_relu and self.training else None
        if blocks is None:
            return self.body(x)
        for layer, bn, pool in blocks:
            x = bn_pool_relu(layer(x), bn, pool)
        return x


def use_fused_bn_pool_relu(model: nn.Module, enable: bool = True) -> int:
    """Sets `fuse_bn_pool_relu` on every `OriginalEncoder` of `model`; returns how many there are. Parameters,
    buffers and state-dict keys are unchanged either way."""
    found = 0
    for module in model.modules():
        if isinstance(module, OriginalEncoder):
            module.fuse_bn_pool_relu = enable
            found += 1
    return found


class TimmEncoder(Encoder):
    """Any timm model as a backbone: its last feature map (`features_only`), its own mean/std.

    Rewrites make it train faster and compute the same function: its ReLU6 run out of place
    (`set_hardtanh_inplace`), its strided depthwise convolutions take their bf16 input gradient on the CPU from a
    stride-1 convolution (`depthwise.use_fast_strided_depthwise`, 1.4x MobileNetV2's bf16 step on an AMX machine),
    and any tiling max-pool its bf16 backward from `max_unpool2d` (`maxpool.use_fast_max_pool`; none in the
    MobileNetV2 and ResNet-18 of the paper's Table 7).

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
        set_hardtanh_inplace(model, False)
        use_fast_strided_depthwise(model)
        use_fast_max_pool(model)

    def features(self, x: Tensor) -> Tensor:
        return self.model(x)[-1]


def set_hardtanh_inplace(model: nn.Module, inplace: bool) -> int:
    """Sets `inplace` on every `nn.Hardtanh` of `model` (timm's ReLU6: MobileNetV2, MNASNet, EfficientNet-Lite...);
    returns how many there are. `TimmEncoder` sets them out of place: autograd saves a clone of an in-place
    hardtanh's input for its backward (the derivative reads the input, which the op overwrites), so in place costs
    a full copy of every activated tensor in training and saves no memory. Out of place it is the same function,
    bit for bit (tests/models/test_encoders.py); MobileNetV2's training step ran 1.02× faster in fp32 and 1.04× in
    bf16 on an AMX machine (`make bench`, "rewrites", 2026-12-06)."""
    found = 0
    for module in model.modules():
        if isinstance(module, nn.Hardtanh):
            module.inplace = inplace
            found += 1
    return found


def paper_order(encoder: OriginalEncoder) -> nn.Sequential:
    """The same modules as `encoder.body` in the paper's order, conv → BN → ReLU → max-pool (the encoder runs the
    pooling before the ReLU: its docstring). For the tests and the benchmark that compare the two."""
    layers = list(encoder.body)
    for i, layer in enumerate(layers[:-1]):
        if isinstance(layer, nn.MaxPool2d) and isinstance(layers[i + 1], nn.ReLU):
            layers[i], layers[i + 1] = layers[i + 1], layer
    return nn.Sequential(*layers)


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
