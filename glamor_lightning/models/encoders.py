"""Image encoders: float NCHW images in [0, 1] → the last feature map (NCHW).

`original` is the paper's five-block CNN; any timm model name gives a timm backbone
(`mobilenetv2` and `resnet18` are the paper's Table 7 aliases). Input normalisation is the
encoder's business: each encoder holds `mean`/`std` buffers ([1, 3, 1, 1]) and applies them in
`forward`, so data pipelines feed plain [0, 1] images whatever the backbone.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
from torch import Tensor, nn

from .registry import Registry

#: Keras BatchNormalization defaults, as in the authors' TF code (Keras momentum 0.99 = PyTorch 0.01).
KERAS_BN: dict[str, float] = {"eps": 1e-3, "momentum": 0.01}

ENCODERS: Registry[Encoder] = Registry(
    "backbone", hint="Any timm model name (see timm.list_models()) is accepted as well."
)

_PATH_OPTION = "model.pretrained_path=/path/to/weights"


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
            self.load_state_dict(_load_state_dict(pretrained_path))
        elif pretrained:
            raise RuntimeError(
                "backbone 'original' has no published pretrained weights; "
                f"pass {_PATH_OPTION} (a state dict of this encoder) or set model.pretrained=false"
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
        file = _weights_file(model_name, pretrained, pretrained_path)
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
    raise RuntimeError(ENCODERS.unknown_message(name))


# --- pretrained weights: local file, hub, or local cache; never a wait on the network ---------


def _check_file(path: str | os.PathLike[str]) -> str:
    if not Path(path).is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    return str(path)


def _load_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """A state dict from a .pth/.bin/.safetensors file (a `{"state_dict": ...}` wrapper is unwrapped)."""
    path = _check_file(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    return sd


def _weights_file(model_name: str, pretrained: bool, pretrained_path: str | os.PathLike[str] | None) -> str | None:
    """The local file to load timm weights from, or None to let timm use the hub (or no weights)."""
    if pretrained_path is not None:
        return _check_file(pretrained_path)
    if not pretrained:
        return None
    offline = _hub_offline()
    if not offline and _hub_reachable():
        return None
    cached = _cached_weights(model_name)
    if cached is not None:
        return cached
    why = "disabled (HF_HUB_OFFLINE=1)" if offline else "unreachable"
    raise RuntimeError(
        f"pretrained weights for '{model_name}' are not in the local cache and the Hugging Face hub is "
        f"{why}; download them where there is a network and pass {_PATH_OPTION} "
        "(a .pth or .safetensors state dict), or set model.pretrained=false"
    )


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


@functools.lru_cache(maxsize=1)
def _hub_reachable(timeout: float = 2.0) -> bool:
    """Whether a TCP connection to the hub (or the HTTPS proxy) opens within `timeout` seconds."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlparse(proxy or os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    if not host:
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _cached_weights(model_name: str) -> str | None:
    """A local copy of timm's default pretrained weights for `model_name` (HF or torch hub cache)."""
    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo_id, _, revision = cfg.hf_hub_id.partition("@")
        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        for filename in names:
            hit = try_to_load_from_cache(repo_id, filename, cache_dir=_hf_cache_dir(), revision=revision or None)
            if isinstance(hit, str):
                return hit
    if cfg.url:
        local = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name
        if local.is_file():
            return str(local)
    return None


def _hf_cache_dir() -> str:
    """The HF hub cache directory, read from the environment now (not at import time)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")
