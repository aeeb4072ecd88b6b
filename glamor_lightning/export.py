"""ONNX export of a trained GLAMOR-Net.

The ONNX model takes `face` float [N, 3, S, S] and `context` float [N, 3, C, C] (RGB in [0, 1], no mean/std:
the encoders normalise inside; the context is masked as the model was trained, resized and centre-cropped),
N dynamic, and returns `logits` [N, classes] and `attention` [N, h, w]. S and C are the checkpoint's data
contract (`data.contract`: face_size, crop_size; 96 and 112 by default), never assumed; the whole contract
(class names in output order, masking, context size) is written into the file's metadata as
`glamor.<field>` = JSON value, so an ONNX user can read what the model expects.

It uses PyTorch's TorchScript-based exporter (`torch.onnx.export(..., dynamo=False)`), which runs
offline with no extra packages and handles every backbone here; torch 2.9+ defaults to the
`torch.export`-based exporter, which needs onnxscript and is still changing. Every exported model has
both inputs, also a setting that reads only one (e.g. `inputs=face`: its `context` is accepted and ignored).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from glamor_lightning.data.contract import DataContract

INPUT_NAMES = ("face", "context")
OUTPUT_NAMES = ("logits", "attention")
DEFAULT_OPSET = 17


class ExportWrapper(nn.Module):
    """GlamorNet with a tuple output (logits, attention), as ONNX wants."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, face: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        out = self.net(face, context)
        logits, attention = out.logits, out.attention
        # keep both inputs in the graph when the setting reads only one (the exporter prunes unused
        # inputs): every exported model has the same signature; adding 0 × one pixel changes nothing
        if not getattr(self.net, "uses_face", True):
            logits = logits + 0.0 * face[:, :1, 0, 0]
        if not getattr(self.net, "uses_context", True):
            attention = attention + 0.0 * context[:, :1, :1, 0]
        return logits, attention


def example_inputs(contract: DataContract, batch: int = 2, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Random float inputs of the sizes the model was trained on."""
    g = torch.Generator().manual_seed(seed)
    f, c = contract.face_size, contract.crop_size
    return torch.rand(batch, 3, f, f, generator=g), torch.rand(batch, 3, c, c, generator=g)


def export_onnx(net: nn.Module, path: str | os.PathLike, contract: DataContract, opset: int = DEFAULT_OPSET) -> Path:
    """Write `net` (a GlamorNet, or an EmotionModule's `.net`) to `path` as ONNX with a dynamic batch, its
    input sizes those of `contract` (the `data_contract` of the module it comes from)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ExportWrapper(net).eval().cpu()
    axes = {"face": {0: "batch"}, "context": {0: "batch"}, "logits": {0: "batch"}, "attention": {0: "batch"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(
            wrapper,
            example_inputs(contract),
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    write_contract_metadata(path, contract)
    return path


def write_contract_metadata(path: Path, contract: DataContract) -> None:
    """Store `contract` in the ONNX file's metadata_props (`glamor.<field>` = JSON value)."""
    import onnx

    model = onnx.load(str(path))
    for key, value in contract.to_dict().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = f"glamor.{key}", json.dumps(value)
    onnx.save(model, str(path))


def onnx_session(path: str | os.PathLike):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def check_onnx(
    net: nn.Module, path: str | os.PathLike, contract: DataContract, batch: int = 3, seed: int = 1
) -> dict[str, float]:
    """Max absolute difference between ONNX Runtime (CPU) and PyTorch on random inputs of `contract`'s sizes."""
    face, context = example_inputs(contract, batch, seed)
    session = onnx_session(path)
    given = {"face": face.numpy(), "context": context.numpy()}
    feeds = {i.name: given[i.name] for i in session.get_inputs()}  # an unused input may be pruned
    logits_ort, attention_ort = session.run(list(OUTPUT_NAMES), feeds)
    with torch.no_grad():
        out = net.eval().cpu()(face, context)
    return {
        "logits": float(np.abs(logits_ort - out.logits.numpy()).max()),
        "attention": float(np.abs(attention_ort - out.attention.numpy()).max()),
    }
