"""Pretrained encoder weights: a local file, the Hugging Face hub, or the local caches; never a wait on the network.

Where weights come from, in order:

- `model.pretrained_path`: a local .pth/.bin/.safetensors state dict (wins over `model.pretrained`);
- `model.pretrained=true` with the hub on (no `HF_HUB_OFFLINE=1`) and reachable (a TCP connection to it,
  or to the HTTPS proxy, opens within 2 s, checked once per process): timm downloads or reuses its cache;
- otherwise a copy already in the HF hub cache or torch hub cache, found without the network;
- otherwise a RuntimeError at once that names `model.pretrained_path`, so an offline machine never hangs
  on a download.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
from torch import Tensor

from glamor_lightning.errors import SetupError

#: the option that error messages point to: weights from a local file
PATH_OPTION = "model.pretrained_path=/path/to/weights"


def _check_file(path: str | os.PathLike[str]) -> str:
    if not Path(path).is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    return str(path)


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
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


def weights_file(model_name: str, pretrained: bool, pretrained_path: str | os.PathLike[str] | None) -> str | None:
    """The local file to load timm weights from, or None to let timm use the hub (or no weights)."""
    if pretrained_path is not None:
        return _check_file(pretrained_path)
    if not pretrained:
        return None
    offline = hub_offline()
    if not offline and hub_reachable():
        return None
    cached = cached_weights(model_name)
    if cached is not None:
        return cached
    why = "disabled (HF_HUB_OFFLINE=1)" if offline else "unreachable"
    raise SetupError(
        f"pretrained weights for '{model_name}' are not in the local cache and the Hugging Face hub is "
        f"{why}; download them where there is a network and pass {PATH_OPTION} "
        "(a .pth or .safetensors state dict), or set model.pretrained=false"
    )


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE turns the hub off (read now, not at import time)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 2.0) -> bool:
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


def cached_weights(model_name: str) -> str | None:
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
