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
from pathlib import Path

from glamor_lightning.arguments import output_folder, positive_int


def _attention(args: argparse.Namespace) -> int:
    from glamor_lightning.analysis.attention_maps import write_attention_figures
    from glamor_lightning.checkpoints import module_from_checkpoint, read_checkpoint
    from glamor_lightning.data.contract import test_ready_datamodule

    ckpt = read_checkpoint(args.ckpt)
    module = module_from_checkpoint(ckpt, args.ckpt)
    if args.device != "cpu":
        module.to(args.device)
    dm = test_ready_datamodule(ckpt, module.data_contract, args.data, where=args.ckpt)
    records = write_attention_figures(module, dm, args.split, args.n, args.out)
    hp = module.hparams
    note = " (attention=none: average pooling, the maps are uniform)" if hp.attention == "none" else ""
    correct = sum(r["true"] == r["predicted"] for r in records)
    print(
        f"{len(records)} {args.split} images of {dm.root} ({correct} predicted right), attention "
        f"'{hp.attention}'{note}: figures in {args.out} (overview: {Path(args.out) / 'attention_grid.png'})"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attention",
        help="attention-map figures of a checkpoint on a data split",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ckpt", required=True, help="a checkpoint trained by glamor_lightning.train")
    p.add_argument("--out", required=True, type=output_folder, help="output folder")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="default test")
    p.add_argument("--n", type=positive_int, default=16, help="number of images, at least 1 (default 16)")
    p.add_argument("--data", default=None, help="data root (default: the root the checkpoint was trained on)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, ...")
    p.set_defaults(func=_attention)
