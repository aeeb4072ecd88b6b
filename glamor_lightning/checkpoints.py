"""Safe checkpoint loading: weights only, never pickled code, and clear errors for a wrong architecture.

Every command that reads a checkpoint goes through `load_module`:

- the file is read with `torch.load(..., weights_only=True)`, PyTorch's restricted unpickler that only
  rebuilds tensors and plain containers; a checkpoint that holds any other object (a class to import,
  a function to call, e.g. a malicious `__reduce__`) is refused with `CheckpointError` before
  anything in it runs;
- the model is rebuilt from the checkpoint's plain hyper-parameters (no config needed), then the
  weights of its `net` must match that model key for key and shape for shape; otherwise
  `CheckpointError` lists the missing, unexpected and mis-shaped keys. (Metric states saved for
  resuming are loaded when present and left fresh when a checkpoint of another version lacks them.)
"""

from __future__ import annotations

import inspect
import logging
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from glamor_lightning.checkpoint_files import EXPECTED, MAX_LISTED, file_kind, folder_error
from glamor_lightning.errors import CheckpointError

if TYPE_CHECKING:
    from glamor_lightning.module import EmotionModule

#: the state-dict prefix of the model's weights (the LightningModule's `net`)
NET_PREFIX = "net."
log = logging.getLogger(__name__)


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dictionary, read with the weights-only unpickler (no code from the file runs).

    A path that is not a checkpoint file is a `CheckpointError` that says what it is instead: a folder
    (naming the .ckpt files in it), an empty file, or a file whose first bytes show another kind (text,
    CSV, JSON, an image, ONNX, a zip or pickle not written by `torch.save`...). A missing path is a
    `FileNotFoundError`.
    """
    path = Path(path)
    if path.is_dir():
        raise folder_error(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes); {EXPECTED} (an interrupted save or copy?)")
    kind = file_kind(path)
    if kind is not None:
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (it looks like {kind}); {EXPECTED}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message: a boilerplate first line, then the reason (naming the offending global)
        lines = [
            ln.strip()
            for ln in str(err).splitlines()[1:]
            if ln.strip() and not ln.strip().startswith(("Check the documentation", "Please file an issue"))
        ]
        found = [ln for ln in lines if "global" in ln.lower()]
        if found:
            raise CheckpointError(
                f"Refused to load {path}: it holds a Python object that loading would import and run "
                f"({found[0]}). glamor loads checkpoints with torch.load(weights_only=True) only, which "
                "allows tensors and plain values. If you made this file yourself and trust it, re-save "
                "its 'state_dict' and 'hyper_parameters' as plain values."
            ) from None
        raise CheckpointError(
            f"Refused to load {path}: it is not a weights-only PyTorch checkpoint (corrupt, not made by "
            f"torch.save, or holding pickled code): {lines[-1] if lines else str(err)[:200]}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as err:
        # a damaged file that starts like a torch.save file: torch's own reason, whatever its type
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (damaged or truncated?): {type(err).__name__}: {err}"
        ) from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), Mapping):
        raise CheckpointError(f"{path} is not a Lightning checkpoint: no 'state_dict' in it")
    return ckpt


def _summarise(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED])
    return shown + (f" … and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else "")


def state_dict_mismatch(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> str | None:
    """A description of how `found` differs from `expected` (keys and shapes), or None when they match."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [
        f"{k} {tuple(found[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in found and hasattr(found[k], "shape") and tuple(found[k].shape) != tuple(v.shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_summarise(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_summarise(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es) (checkpoint vs model): {_summarise(shapes)}")
    return "; ".join(parts) or None


def build_module(hparams: Mapping[str, Any], where: str = "checkpoint") -> EmotionModule:
    """An `EmotionModule` from saved hyper-parameters; encoders start empty (the weights come next)."""
    from glamor_lightning.module import EmotionModule

    hp = dict(hparams)
    accepted = set(inspect.signature(EmotionModule.__init__).parameters) - {"self"}
    unknown = sorted(set(hp) - accepted)
    if unknown:
        raise CheckpointError(
            f"{where} has hyper-parameters this version of EmotionModule does not know: "
            f"{', '.join(unknown)} (made by another version of glamor-lightning?)"
        )
    # the weights are in the checkpoint: never fetch or read pretrained encoder weights again
    hp["pretrained"], hp["pretrained_path"] = False, None
    try:
        return EmotionModule(**hp)
    except (RuntimeError, ValueError, TypeError) as err:
        raise CheckpointError(f"{where}: its hyper-parameters do not build a model: {err}") from None


def module_from_checkpoint(
    ckpt: Mapping[str, Any], where: str = "checkpoint", map_location: str | torch.device = "cpu", eval_mode: bool = True
) -> EmotionModule:
    """Rebuild an `EmotionModule` from a checkpoint dictionary read by `read_checkpoint`."""
    hparams = ckpt.get("hyper_parameters")
    if not isinstance(hparams, Mapping):
        raise CheckpointError(f"{where} has no 'hyper_parameters': it was not saved from an EmotionModule")
    module = build_module(hparams, where=where)
    ckpt = dict(ckpt)
    module.on_load_checkpoint(ckpt)  # the module's own hook may upgrade an older checkpoint in place
    state = ckpt["state_dict"]
    # the architecture is the net's weights: they must match exactly. Other entries are metric states
    # saved for resuming (which checkpoints of other versions may lack): loaded when present.
    own = module.state_dict()
    problem = state_dict_mismatch(
        {k: v for k, v in own.items() if k.startswith(NET_PREFIX)},
        {k: v for k, v in state.items() if k.startswith(NET_PREFIX)},
    )
    if problem:
        raise CheckpointError(
            f"{where}: the weights do not fit the architecture its hyper-parameters describe "
            f"({_architecture(hparams)}): {problem}"
        )
    extra = state_dict_mismatch(
        {k: v for k, v in own.items() if not k.startswith(NET_PREFIX)},
        {k: v for k, v in state.items() if not k.startswith(NET_PREFIX)},
    )
    if extra:
        log.debug("%s: metric states differ from this version's (%s); using fresh ones", where, extra)
    module.load_state_dict(
        {k: v for k, v in state.items() if k in own and tuple(getattr(v, "shape", ())) == tuple(own[k].shape)},
        strict=False,
    )
    module.to(torch.device(map_location))
    return module.eval() if eval_mode else module


def load_module(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", eval_mode: bool = True
) -> EmotionModule:
    """Load an `EmotionModule` checkpoint safely (see the module docstring); in eval mode by default."""
    return module_from_checkpoint(read_checkpoint(path, map_location), str(path), map_location, eval_mode)


#: parts of the net a weights-only start may lack in its source: the auxiliary heads start fresh then
FRESH_PARTS = ("face_head.", "context_head.")


def load_net_weights(module: EmotionModule, path: str | os.PathLike) -> list[str]:
    """Start `module`'s net from the net weights of the checkpoint at `path` (fine-tuning: a weights-only start,
    with this run's own optimiser, schedule and epoch count). The architecture must be the same; auxiliary
    heads the source lacks keep their fresh weights (returned). Raises a CheckpointError naming what differs."""
    source = load_module(path).net.state_dict()
    own = module.net.state_dict()
    fresh = [k for k in own if k.startswith(FRESH_PARTS) and k not in source]
    problem = state_dict_mismatch({k: v for k, v in own.items() if k not in fresh}, source)
    if problem:
        raise CheckpointError(
            f"{path}: its weights do not fit this run's model ({_architecture(module.hparams)}); set the model "
            f"config to the checkpoint's architecture to start from it: {problem}"
        )
    module.net.load_state_dict(source, strict=False)
    return sorted({k.split(".")[0] for k in fresh})


def _architecture(hparams: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{k}={hparams.get(k)!r}"
        for k in ("backbone", "attention", "fusion", "inputs", "num_classes", "aux_heads")
        if k in hparams
    )
