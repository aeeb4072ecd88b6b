"""Write one of our checkpoints from the authors' TensorFlow weights (`glamor import-weights --format glamor-tf`).

The result is a plain `EmotionModule` checkpoint: `state_dict` (the net under `net.`, fresh metric states),
`hyper_parameters` (their architecture, and their training recipe where ours has the same setting: SGD lr 5e-4,
momentum 0.9, steps at epochs 25 and 40 by 0.1, floor 1e-5, Keras BatchNorm momentum 0.99 = ours 0.01) and the
data contract of their inputs (face 96, context 128×171 centre-cropped to 112, face masked, our class names).
It loads weights-only through `checkpoints.read_checkpoint` / `load_module`, so `eval`, `predict`, `attention`
and `export` take it like any other. An `imported_from` entry records the source and what was left out of it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning
import torch

from glamor_lightning.data.classes import CLASSES
from glamor_lightning.data.contract import DataContract
from glamor_lightning.models.import_authors import AUTHORS_ARCHITECTURE, AUTHORS_CLASSES, convert_authors_weights
from glamor_lightning.models.tf_checkpoint import TFCheckpoint, checkpoint_prefix

#: their config.py's training settings, under our names (they only matter to a fine-tuning run)
AUTHORS_RECIPE: dict[str, Any] = dict(
    lr=5e-4, momentum=0.9, lr_schedule="multistep", lr_milestones=(25, 40), lr_gamma=0.1, min_lr=1e-5,
    bn_momentum=0.01, weight_decay=0.0,
)  # fmt: skip
#: their inputs (data_utils.py): face box resized to 96×96; context resized to 128×171, centre crop 112
AUTHORS_CONTRACT = DataContract(
    face_size=96, context_size=(128, 171), crop_size=112, mask_face=True, class_names=CLASSES, no_face="whole_image"
)


@dataclass
class ImportReport:
    """What `import_authors_checkpoint` did."""

    out: Path
    source: Path  #: the checkpoint prefix read
    tensors: int  #: tensors mapped onto our model
    unused: list[str]  #: their tensors left out (object graph, optimizer slots, counters)
    class_order: tuple[int, ...]  #: our class j is their output class_order[j]


def import_authors_checkpoint(prefix: str | os.PathLike, out: str | os.PathLike, verify: bool = True) -> ImportReport:
    """Read the authors' checkpoint at `prefix` (without `.index`), write ours to `out`, and load it back
    (as every command loads checkpoints) to prove it is whole. `verify` checks every tensor's CRC32C."""
    from glamor_lightning.checkpoints import load_module
    from glamor_lightning.module import EmotionModule

    source = checkpoint_prefix(prefix)
    tensors = TFCheckpoint(source, verify=verify)
    module = EmotionModule(**AUTHORS_ARCHITECTURE, **AUTHORS_RECIPE, class_names=CLASSES)
    imported = convert_authors_weights(tensors, module.net, their_classes=AUTHORS_CLASSES, our_classes=CLASSES)
    module.net.load_state_dict(imported.state_dict)
    module.data_contract = AUTHORS_CONTRACT
    state = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
    checkpoint: dict[str, Any] = {
        "state_dict": state,
        "hyper_parameters": {k: v for k, v in module.hparams.items()},
        "pytorch-lightning_version": lightning.__version__,
        "epoch": 0,
        "global_step": 0,
        "imported_from": {
            "format": "glamor-tf",
            "source": str(source),
            "class_order": list(imported.class_order),
            "unused_tensors": list(imported.unused),
        },
    }
    module.on_save_checkpoint(checkpoint)  # the data contract, as every checkpoint of ours has it
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    torch.save(checkpoint, partial)
    os.replace(partial, out)
    load_module(out)  # the one safe loading path: raises if the file does not rebuild this model
    mapped = sum(1 for k in imported.state_dict if not k.endswith("num_batches_tracked"))
    return ImportReport(out, source, mapped, imported.unused, imported.class_order)
