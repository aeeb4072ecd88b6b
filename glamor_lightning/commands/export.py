"""`glamor export --ckpt CKPT --out model.onnx`: the model as ONNX, checked against PyTorch.

Inputs `face` float [N, 3, 96, 96] and `context` float [N, 3, 112, 112] (RGB in [0, 1]; N dynamic);
outputs `logits` [N, 7] and `attention` [N, h, w]. After writing, the file is run with ONNX Runtime on
random inputs and the largest difference from PyTorch is printed (`--no-check` skips this).
"""

from __future__ import annotations

import argparse

from glamor_lightning.arguments import output_file


def _export(args: argparse.Namespace) -> int:
    from glamor_lightning.checkpoints import load_module
    from glamor_lightning.export import check_onnx, export_onnx

    module = load_module(args.ckpt, map_location="cpu")
    path = export_onnx(module.net, args.out, module.data_contract, opset=args.opset)
    hp = module.hparams
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): backbone={hp.backbone}, attention={hp.attention}, "
        f"fusion={hp.fusion}, inputs={hp.inputs}; classes {', '.join(module.class_names)}"
    )
    if not args.no_check:
        diff = check_onnx(module.net, path, module.data_contract)
        print(
            f"ONNX Runtime vs PyTorch, max |difference|: logits {diff['logits']:.2e}, attention {diff['attention']:.2e}"
        )
        if diff["logits"] > args.tolerance:
            raise RuntimeError(f"ONNX logits differ from PyTorch by {diff['logits']:.2e} > {args.tolerance}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX (face + context in, logits + attention out)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ckpt", required=True, help="a checkpoint trained by glamor_lightning.train")
    p.add_argument("--out", required=True, type=output_file, help="the .onnx file to write (not a folder)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime comparison")
    p.add_argument(
        "--tolerance", type=float, default=1e-4, help="largest accepted logits difference in the check (default 1e-4)"
    )
    p.set_defaults(func=_export)
