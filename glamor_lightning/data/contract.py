"""The data contract: what a model's inputs were, saved in every checkpoint and read by everything downstream.

In the spirit of timm's `resolve_data_config`, a trained model states its own inputs: the face (target) crop
size, the context size before cropping, the crop size, whether the face box was masked out of the context,
the class names in output order, the face-less image policy, and the data root it was trained on.
`EmotionModule` writes it into every checkpoint (`checkpoint["data_contract"]`, plain values, so weights-only
loading reads it); `eval`, `predict`, `export`, `attention` and the ONNX shapes read it from there and assume
no default. A checkpoint written before the contract existed gets one from its saved data-module
hyper-parameters (where Lightning kept them) and the defaults otherwise, with a warning that says so.

`datamodule_from_checkpoint` rebuilds the test-ready data module a checkpoint was trained on: its root and
split settings, its geometry and masking. What a user passes explicitly is applied on top and logged; a
geometry that differs from the contract is refused, since testing a model on inputs it was not trained on
gives a wrong number without an error.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glamor_lightning.data.classes import CLASSES
from glamor_lightning.data.geometry import CONTEXT_SIZE, CROP_SIZE, FACE_SIZE

if TYPE_CHECKING:
    from glamor_lightning.data.datamodule import EmotionDataModule

log = logging.getLogger(__name__)

#: the checkpoint key that holds the contract
CHECKPOINT_KEY = "data_contract"
#: the contract's fields that decide the pixels a model sees: they must match between training and use
GEOMETRY = ("face_size", "context_size", "crop_size", "mask_face")
#: data-module settings (beside the contract) that decide which images make up each split
SPLIT_SETTINGS = ("val_from", "val_fraction", "seed", "cache_dir")


@dataclass(frozen=True)
class DataContract:
    """What a model was trained on. Sizes in pixels; `context_size` is (H, W) before the square crop."""

    face_size: int = FACE_SIZE
    context_size: tuple[int, int] = CONTEXT_SIZE
    crop_size: int = CROP_SIZE
    mask_face: bool = True
    class_names: tuple[str, ...] = CLASSES
    no_face: str = "whole_image"
    root: str | None = None

    def __post_init__(self) -> None:
        # plain values only (checkpoints stay loadable with weights_only=True), checked once here
        object.__setattr__(self, "context_size", (int(self.context_size[0]), int(self.context_size[1])))
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        object.__setattr__(self, "face_size", int(self.face_size))
        object.__setattr__(self, "crop_size", int(self.crop_size))
        object.__setattr__(self, "mask_face", bool(self.mask_face))
        if self.root is not None:
            object.__setattr__(self, "root", str(self.root))
        if min(self.face_size, self.crop_size, *self.context_size) < 1:
            raise ValueError(f"data contract: sizes must be positive, got {self.describe()}")
        if self.crop_size > min(self.context_size):
            raise ValueError(
                f"data contract: crop_size {self.crop_size} is larger than the context "
                f"{self.context_size[0]}x{self.context_size[1]}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain values for a checkpoint (tuples as lists)."""
        d = asdict(self)
        d["context_size"], d["class_names"] = list(self.context_size), list(self.class_names)
        return d

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "data contract") -> DataContract:
        """The contract saved as `to_dict`; unknown keys (a newer version's) are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"{where}: unknown data-contract field(s) {unknown} (made by another version of "
                f"glamor-lightning?); known: {', '.join(sorted(known))}"
            )
        return cls(**dict(values))

    def describe(self) -> str:
        """One line for logs: `face 96, context 128x171 -> crop 112, face masked, 7 classes`."""
        h, w = self.context_size
        mask = "face masked" if self.mask_face else "face visible"
        return (
            f"face {self.face_size}, context {h}x{w} -> crop {self.crop_size}, {mask}, {len(self.class_names)} classes"
        )

    def geometry_differences(self, other: Mapping[str, Any]) -> list[str]:
        """`name: mine vs given` for each geometry field of `other` that differs from this contract."""
        out = []
        for name in GEOMETRY:
            if name not in other or other[name] is None:
                continue
            given = other[name]
            given = (int(given[0]), int(given[1])) if name == "context_size" else type(getattr(self, name))(given)
            if given != getattr(self, name):
                out.append(f"{name}: trained with {getattr(self, name)!r}, given {given!r}")
        return out


def contract_of_datamodule(dm: EmotionDataModule) -> DataContract:
    """The contract of what `dm` feeds a model (its masking as resolved; None masks, as its cache does)."""
    hp = dm.hparams
    return DataContract(
        face_size=hp.face_size,
        context_size=tuple(hp.context_size),
        crop_size=hp.crop_size,
        mask_face=True if dm.mask_face is None else dm.mask_face,
        class_names=CLASSES,
        no_face=hp.no_face,
        root=str(Path(dm.root).resolve()),
    )


def contract_from_checkpoint(
    ckpt: Mapping[str, Any], where: str = "checkpoint", masks_face: bool | None = None
) -> DataContract:
    """The checkpoint's contract; for a checkpoint older than the contract, one rebuilt from what it kept
    (the data module's hyper-parameters, the model's class names and masking), with a warning."""
    saved = ckpt.get(CHECKPOINT_KEY)
    if isinstance(saved, Mapping):
        return DataContract.from_dict(saved, where)
    dm = dict(ckpt.get("datamodule_hyper_parameters") or {})
    hp = dict(ckpt.get("hyper_parameters") or {})
    values: dict[str, Any] = {
        k: dm[k] for k in ("face_size", "context_size", "crop_size", "no_face", "root") if dm.get(k) is not None
    }
    if dm.get("mask_face") is not None:
        values["mask_face"] = dm["mask_face"]
    elif masks_face is not None:
        values["mask_face"] = masks_face
    if hp.get("class_names"):
        values["class_names"] = tuple(hp["class_names"])
    contract = DataContract(**values)
    kept = "its data module's settings" if dm else "the defaults"
    log.warning(
        "%s has no data contract (saved before glamor-lightning wrote one): using %s: %s",
        where,
        kept,
        contract.describe(),
    )
    return contract


def datamodule_from_checkpoint(
    ckpt: Mapping[str, Any],
    contract: DataContract,
    overrides: Mapping[str, Any] | None = None,
    where: str = "checkpoint",
) -> EmotionDataModule:
    """The data module a checkpoint was trained on, ready for `trainer.test` (not yet set up).

    Root, split settings, geometry and masking come from the checkpoint. `overrides` (non-None values of
    any `EmotionDataModule` argument) are applied on top: a new `root` is logged (the cache directory of
    the training root is then not reused); loader settings (batch sizes, workers) simply apply; a geometry
    different from the contract raises a ValueError, and so does a checkpoint that names no root when
    no root is given.
    """
    import inspect

    from glamor_lightning.data.datamodule import EmotionDataModule

    overrides = {k: v for k, v in dict(overrides or {}).items() if v is not None and k != "_target_"}
    accepted = set(inspect.signature(EmotionDataModule.__init__).parameters) - {"self"}
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise ValueError(f"unknown data setting(s) {unknown}; the data module takes: {', '.join(sorted(accepted))}")
    differ = contract.geometry_differences(overrides)
    if differ:
        raise ValueError(
            f"{where} was trained on other inputs than the data settings given ({'; '.join(differ)}): "
            "a model tested on inputs it was not trained on gives wrong numbers. Drop those "
            "data.* overrides; the checkpoint's own are used."
        )
    saved = dict(ckpt.get("datamodule_hyper_parameters") or {})
    kwargs: dict[str, Any] = {k: saved[k] for k in SPLIT_SETTINGS if k in saved and k in accepted}
    kwargs.update(
        face_size=contract.face_size,
        context_size=contract.context_size,
        crop_size=contract.crop_size,
        mask_face=contract.mask_face,
        no_face=contract.no_face,
        root=contract.root,
    )
    root = overrides.pop("root", None)
    if root is not None:
        root = str(Path(root).resolve())
        if contract.root and root != contract.root:
            log.warning("data root %s (given) instead of %s, the root %s was trained on", root, contract.root, where)
            kwargs.pop("cache_dir", None)
        kwargs["root"] = root
    elif not contract.root:
        raise ValueError(
            f"{where} does not name the data root it was trained on: pass the data to test on "
            "(make eval DATA=ROOT, or data.root=ROOT)"
        )
    else:
        log.info("data root %s: the one %s was trained on", contract.root, where)
    kwargs.update(overrides)
    if not Path(kwargs["root"]).is_dir():
        raise FileNotFoundError(
            f"data root {kwargs['root']} does not exist"
            + ("" if root else f" (the root {where} was trained on): pass DATA=ROOT")
        )
    return EmotionDataModule(**kwargs)


def test_ready_datamodule(
    ckpt: Mapping[str, Any], contract: DataContract, root: str | None = None, where: str = "checkpoint"
) -> EmotionDataModule:
    """`datamodule_from_checkpoint` (over `root` when given), prepared and set up for testing: for commands
    that read a split themselves (attention figures, SynthCAER diagnostics)."""
    dm = datamodule_from_checkpoint(ckpt, contract, {"root": root, "batch_size": 32, "cache_workers": 0}, where)
    dm.prepare_data()
    dm.setup("test")
    return dm
