"""`glamor attention --ckpt CKPT [--split test] [--n 16] --out DIR [--data ROOT]`: attention maps.

Per image, OUT gets `<k>_<class>_<name>.png` (three panels: the original with the face box, the
masked context crop the model saw, and the attention map upsampled over it — as the paper's Figure 9)
and the three panels as `*_original.png`, `*_context.png`, `*_attention.png`; plus `attention_grid.png`
(all images) and `attention.csv`. Images are taken round-robin over the classes. The data root and
split settings default to those the checkpoint was trained with. A model with `attention=none`
(average pooling) has a uniform map, drawn as a uniform overlay.
"""
from __future__ import annotations

import argparse
import inspect
from pathlib import Path

DEFAULT_ROOT = "data/synthcaer"


def checkpoint_datamodule(ckpt: dict, root: str | None, module):
    """The test-ready data module a checkpoint was trained on (or over `root`), with its sizes and split."""
    from glamor_lightning.data.datamodule import EmotionDataModule

    saved = dict(ckpt.get("datamodule_hyper_parameters") or {})
    accepted = set(inspect.signature(EmotionDataModule.__init__).parameters) - {"self"}
    keep = ("root", "val_from", "val_fraction", "seed", "no_face", "face_size", "context_size", "crop_size",
            "cache_dir")
    kwargs = {k: saved[k] for k in keep if k in saved and k in accepted}
    if root is not None:
        kwargs["root"] = root
        kwargs.pop("cache_dir", None)
    kwargs.setdefault("root", DEFAULT_ROOT)
    if not Path(kwargs["root"]).is_dir():
        raise FileNotFoundError(f"data root {kwargs['root']} does not exist: pass --data ROOT")
    dm = EmotionDataModule(**kwargs, batch_size=32, cache_workers=0, mask_face=module.net.masks_face)
    dm.prepare_data()
    dm.setup("test")
    return dm


def _attention(args: argparse.Namespace) -> int:
    from glamor_lightning.analysis.attention_maps import write_attention_figures
    from glamor_lightning.checkpoints import module_from_checkpoint, read_checkpoint

    ckpt = read_checkpoint(args.ckpt)
    module = module_from_checkpoint(ckpt, args.ckpt)
    if args.device != "cpu":
        module.to(args.device)
    dm = checkpoint_datamodule(ckpt, args.data, module)
    records = write_attention_figures(module, dm, args.split, args.n, args.out)
    hp = module.hparams
    note = " (attention=none: average pooling, the maps are uniform)" if hp.attention == "none" else ""
    correct = sum(r["true"] == r["predicted"] for r in records)
    print(f"{len(records)} {args.split} images of {dm.root} ({correct} predicted right), attention "
          f"'{hp.attention}'{note}: figures in {args.out} (overview: {Path(args.out) / 'attention_grid.png'})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attention", help="attention-map figures of a checkpoint on a data split",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="a checkpoint trained by glamor_lightning.train")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="default test")
    p.add_argument("--n", type=int, default=16, help="number of images (default 16)")
    p.add_argument("--data", default=None,
                   help=f"data root (default: the checkpoint's training root, else {DEFAULT_ROOT})")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, ...")
    p.set_defaults(func=_attention)
