"""`glamor import-weights --format glamor-tf PREFIX --out model.ckpt`: another implementation's trained weights
as one of our checkpoints.

`glamor-tf`: the authors' TensorFlow GLAMOR-Net (minhnhatvt/glamor-net), as their `model.save_weights` or their
training loop writes it: PREFIX is the path without `.index` (e.g. weights/glamor-net/Model, beside
Model.index and Model.data-*-of-*). No TensorFlow is needed. Every tensor is mapped by name, shape-checked and
converted (HWIO kernels to OIHW, Dense kernels transposed); the result is a normal checkpoint for `eval`,
`predict`, `attention` and `export`. See docs/authors-weights.md for how their preprocessing differs from ours.
"""

from __future__ import annotations

import argparse

from glamor_lightning.arguments import output_file

#: the source formats known (the import module itself is loaded lazily, with torch)
FORMATS = ("glamor-tf",)


def _import(args: argparse.Namespace) -> int:
    from glamor_lightning.data.classes import CLASSES
    from glamor_lightning.import_weights import import_authors_checkpoint

    report = import_authors_checkpoint(args.prefix, args.out, verify=not args.no_verify)
    order = "the same as ours" if report.class_order == tuple(range(len(CLASSES))) else str(report.class_order)
    print(
        f"wrote {report.out} ({report.out.stat().st_size / 1e6:.1f} MB) from {report.source}: "
        f"{report.tensors} tensors mapped; their class order is {order} ({', '.join(CLASSES)})"
    )
    if report.unused:
        print(f"not used ({len(report.unused)}, not model weights): {', '.join(report.unused)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-weights",
        help="turn another implementation's trained weights (the authors' TF GLAMOR-Net) into our checkpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("prefix", help="the checkpoint path without .index (e.g. weights/glamor-net/Model)")
    p.add_argument("--format", required=True, choices=FORMATS, help="the source's format")
    p.add_argument("--out", required=True, type=output_file, help="the .ckpt file to write")
    p.add_argument("--no-verify", action="store_true", help="skip the CRC32C check of every tensor")
    p.set_defaults(func=_import)
