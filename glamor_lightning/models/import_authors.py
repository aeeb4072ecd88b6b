"""The authors' trained GLAMOR-Net (minhnhatvt/glamor-net, TensorFlow 2 / Keras) as one of our checkpoints.

Their `model.save_weights` writes a TF2 object-based checkpoint: one tensor per variable, named by the
attribute path from the model, e.g. `FaceEncodingNet/blocks/0/conv/kernel/.ATTRIBUTES/VARIABLE_VALUE`
(`tf_checkpoint.TFCheckpoint` reads it without TensorFlow). Their network is ours, part for part:

| theirs (Keras attribute)                        | ours (`GlamorNet`)                                 |
| ----------------------------------------------- | -------------------------------------------------- |
| `FaceEncodingNet/blocks/i/{conv,bn}`, i = 0..4  | `face_encoder.body`: i-th Conv2d and BatchNorm2d   |
| `ContextEncodingNet/blocks/i/{conv,bn}`         | `context_encoder.body`                             |
| `attention_fc1`, `attention_fc1_bn`, `attention_fc2` | `attention.fc1`, `attention.bn`, `attention.fc2` |
| `face_weight1/2`, `context_weight1/2`           | `fusion.face_score.{0,2}`, `fusion.context_score.{0,2}` |
| `final_fc1`, `final_classify`                   | `classifier.0`, `classifier.3`                     |

Layouts: Keras Conv2D kernels are HWIO (PyTorch: OIHW), Dense kernels are [in, out] (Linear: [out, in]);
BatchNormalization's gamma, beta, moving_mean and moving_variance are BatchNorm's weight, bias, running_mean
and running_var, with Keras' epsilon 1e-3 (our `KERAS_BN`). Their concatenations have our order: [v_f; v_ij]
in the attention, [w_f v_f; w_c v_c] after the fusion. Their last layer applies a softmax; ours gives the
logits, so probabilities are equal after our softmax.

Class order: their output j is `config.class_names[j]` = Anger, Disgust, Fear, Happy, Neutral, Sad, Surprise
(`AUTHORS_CLASSES`), which is ours; the rows of our last layer are permuted by class name all the same, so a
checkpoint of another order would be converted, not mislabelled. (Their data loader looks each folder name up
in that list and gives -1 to any other name: CAER-S's `train/Angry` folder gets label -1, not Anger.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from glamor_lightning.data.classes import CLASSES, UnknownClassError, canonical_label
from glamor_lightning.errors import CheckpointError
from glamor_lightning.models.glamor import GlamorNet

#: their `config.class_names`: output j of their model is class AUTHORS_CLASSES[j]
AUTHORS_CLASSES: tuple[str, ...] = ("Anger", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")
#: our `GlamorNet` settings that are their architecture (model.py and config.py at commit c12e1b9)
AUTHORS_ARCHITECTURE: dict[str, object] = dict(
    backbone="original", attention="gla", fusion="fusion_net", inputs="both", num_classes=7,
    gla_batchnorm=True, hidden=128, dropout=0.5,
)  # fmt: skip
#: where the model's variables sit in a checkpoint: `model.save_weights` (no prefix), or their training
#: loop's `tf.train.Checkpoint(step=..., optimizer=..., model=model)` (under `model/`)
MODEL_ROOTS: tuple[str, ...] = ("", "model/")
VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
#: tensors that are not the model's variables: the object graph, optimizer state, counters
BOOKKEEPING = ("_CHECKPOINTABLE_OBJECT_GRAPH", ".OPTIMIZER_SLOT", "optimizer/", "step/", "save_counter/")

_BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}


class AuthorsWeightsError(CheckpointError):
    """A checkpoint that is not the authors' GLAMOR-Net as our `GlamorNet` can hold it."""


@dataclass(frozen=True)
class Rule:
    """One tensor of theirs → one entry of our state dict, with the layout change between them."""

    theirs: str  #: Keras attribute path, without the root and `/.ATTRIBUTES/VARIABLE_VALUE`
    ours: str  #: our state-dict key
    layout: str  #: `conv` (HWIO → OIHW), `dense` ([in, out] → [out, in]) or `same`

    def their_shape(self, our_shape: Sequence[int]) -> tuple[int, ...]:
        """The shape their tensor must have for our `our_shape`."""
        if self.layout == "conv":
            o, i, h, w = our_shape
            return (h, w, i, o)
        if self.layout == "dense":
            return tuple(reversed(our_shape))
        return tuple(our_shape)

    def convert(self, value: np.ndarray) -> np.ndarray:
        if self.layout == "conv":
            return value.transpose(3, 2, 0, 1)
        if self.layout == "dense":
            return value.T
        return value


@dataclass
class ImportedWeights:
    """What `convert_authors_weights` gives: our state dict and what of theirs was left out."""

    state_dict: dict[str, torch.Tensor]
    root: str  #: where the model sat in their checkpoint ('' or 'model/')
    unused: list[str] = field(default_factory=list)  #: their tensors not used (bookkeeping, optimizer slots)
    class_order: tuple[int, ...] = ()  #: our class j is their output class_order[j]


def _linear(theirs: str, ours: str) -> list[Rule]:
    return [Rule(f"{theirs}/kernel", f"{ours}.weight", "dense"), Rule(f"{theirs}/bias", f"{ours}.bias", "same")]


def _batchnorm(theirs: str, ours: str) -> list[Rule]:
    return [Rule(f"{theirs}/{k}", f"{ours}.{v}", "same") for k, v in _BN.items()]


def _encoder_rules(theirs: str, ours: str, encoder: nn.Module) -> list[Rule]:
    """Block i of their EncodingNet is our encoder's i-th Conv2d and i-th BatchNorm2d (in module order)."""
    convs = [n for n, m in encoder.body.named_children() if isinstance(m, nn.Conv2d)]
    bns = [n for n, m in encoder.body.named_children() if isinstance(m, nn.BatchNorm2d)]
    rules = []
    for i, (conv, bn) in enumerate(zip(convs, bns)):
        rules += [
            Rule(f"{theirs}/blocks/{i}/conv/kernel", f"{ours}.body.{conv}.weight", "conv"),
            Rule(f"{theirs}/blocks/{i}/conv/bias", f"{ours}.body.{conv}.bias", "same"),
        ]
        rules += _batchnorm(f"{theirs}/blocks/{i}/bn", f"{ours}.body.{bn}")
    return rules


def authors_rules(net: GlamorNet) -> list[Rule]:
    """Every tensor of the authors' model, mapped onto `net` (their architecture: `AUTHORS_ARCHITECTURE`)."""
    return [
        *_encoder_rules("FaceEncodingNet", "face_encoder", net.face_encoder),
        *_encoder_rules("ContextEncodingNet", "context_encoder", net.context_encoder),
        *_linear("attention_fc1", "attention.fc1"),
        *_batchnorm("attention_fc1_bn", "attention.bn"),
        *_linear("attention_fc2", "attention.fc2"),
        *_linear("face_weight1", "fusion.face_score.0"),
        *_linear("face_weight2", "fusion.face_score.2"),
        *_linear("context_weight1", "fusion.context_score.0"),
        *_linear("context_weight2", "fusion.context_score.2"),
        *_linear("final_fc1", "classifier.0"),
        *_linear("final_classify", "classifier.3"),
    ]


def class_order(theirs: Sequence[str], ours: Sequence[str]) -> tuple[int, ...]:
    """For each of our classes, the index of the same class among theirs (names compared as class labels,
    so `Angry` is Anger). Raises when the two lists are not the same classes."""

    def label(name: str) -> str:
        try:
            return canonical_label(name)
        except UnknownClassError:
            return name

    canon, wanted = [label(c) for c in theirs], [label(c) for c in ours]
    if sorted(canon) != sorted(wanted) or len(set(canon)) != len(canon):
        raise AuthorsWeightsError(f"their classes {list(theirs)} are not ours {list(ours)}: cannot map the outputs")
    return tuple(canon.index(c) for c in wanted)


def _model_root(names: Sequence[str], rules: Sequence[Rule]) -> str:
    """The root under which the model's tensors sit: the first of `MODEL_ROOTS` that holds any of them."""
    present = set(names)
    for root in MODEL_ROOTS:
        if any(f"{root}{rule.theirs}{VALUE_SUFFIX}" in present for rule in rules):
            return root
    shown = ", ".join(sorted(n for n in names if not n.startswith(BOOKKEEPING[0]))[:5]) or "none"
    raise AuthorsWeightsError(
        f"not the authors' GLAMOR-Net: none of its tensors (e.g. {rules[0].theirs}{VALUE_SUFFIX}), nor under "
        f"model/; the checkpoint has {len(names)} tensors, e.g. {shown}"
    )


def _is_bookkeeping(name: str, root: str) -> bool:
    return not name.startswith(root) or any(mark in name for mark in BOOKKEEPING)


def convert_authors_weights(
    tensors: Mapping[str, np.ndarray],
    net: GlamorNet,
    their_classes: Sequence[str] = AUTHORS_CLASSES,
    our_classes: Sequence[str] = CLASSES,
) -> ImportedWeights:
    """Our state dict for `net` from the authors' checkpoint tensors (name → array, e.g. a `TFCheckpoint`).

    Every tensor of their model is looked up by name, its shape checked against what `net` needs (in their
    layout) and converted; every entry of `net`'s state dict must be filled (BatchNorm's `num_batches_tracked`
    counters, which Keras lacks, are kept as they are). Raises `AuthorsWeightsError` naming the tensors that
    are missing or mis-shaped, and the model tensors of theirs that `net` has no place for (another
    architecture). Tensors that are not model variables (object graph, optimizer slots, step counters) are
    returned in `unused`.
    """
    rules = authors_rules(net)
    names = list(tensors)
    root = _model_root(names, rules)
    own = net.state_dict()
    order = class_order(their_classes, our_classes)
    state: dict[str, torch.Tensor] = {}
    missing, shapes = [], []
    for rule in rules:
        name = f"{root}{rule.theirs}{VALUE_SUFFIX}"
        want = rule.their_shape(own[rule.ours].shape)
        if name not in tensors:
            missing.append(f"{name} (for {rule.ours})")
            continue
        value = np.asarray(tensors[name])
        if tuple(value.shape) != want:
            shapes.append(f"{name} has shape {tuple(value.shape)}, GLAMOR-Net's is {want} (for {rule.ours})")
            continue
        converted = rule.convert(value)
        if rule.ours.startswith("classifier.3."):  # rows of the last layer in our class order
            converted = converted[list(order)]
        state[rule.ours] = torch.from_numpy(np.ascontiguousarray(converted, dtype=np.float32))
    used = {f"{root}{r.theirs}{VALUE_SUFFIX}" for r in rules}
    foreign = sorted(n for n in names if n not in used and not _is_bookkeeping(n, root))
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensor(s) missing: {'; '.join(missing)}")
    if shapes:
        problems.append(f"{len(shapes)} of another shape: {'; '.join(shapes)}")
    if foreign:
        problems.append(f"{len(foreign)} model tensor(s) GLAMOR-Net does not have: {', '.join(foreign)}")
    if problems:
        raise AuthorsWeightsError(
            "the checkpoint is not the authors' GLAMOR-Net (model.py at commit c12e1b9, 7 classes): "
            + " | ".join(problems)
        )
    for key, value in own.items():  # what Keras has no counterpart of: BatchNorm's step counters
        if key not in state:
            if not key.endswith("num_batches_tracked"):
                raise AuthorsWeightsError(f"no tensor of theirs maps onto our {key}")  # a rule is missing: a bug
            state[key] = value.clone()
    unused = sorted(n for n in names if n not in used)
    return ImportedWeights(state_dict=state, root=root, unused=unused, class_order=order)
