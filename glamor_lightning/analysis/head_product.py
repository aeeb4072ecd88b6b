"""Does the fused head use what the two branches know? Test accuracy of each head and of their product.

A model trained with auxiliary heads (`model.aux_heads=true`) has a face-only head, a context-only head and
the fused head that makes its predictions. The product of the two auxiliary heads' probabilities (the product
of experts the context head is trained through with `residual_context`, `losses.residual_logits`) is what
the branches tell together, each read by its own head. When the product beats the fused head, the fusion
leaves knowledge of the branches unused; when it does not, what the context branch knows adds nothing to the
face, and no change of the fusion alone can make the model read its context (issue 17,
results/recipe_context_12ep.md). Everything in fp32, on the test split.

    python -m glamor_lightning.analysis.head_product CKPT [CKPT ...] [--data ROOT]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from glamor_lightning.losses import residual_logits

#: the columns: each head, and the product of the two auxiliary ones
HEADS = ("fused", "face head", "context head", "face × context")


@torch.no_grad()
def head_accuracies(module, datamodule) -> dict[str, float]:
    """Test accuracy (%) of each of `HEADS` over the test split of a set-up data module."""
    net = module.net.eval()
    if net.face_head is None or net.context_head is None:
        raise ValueError("the model has no auxiliary heads (trained without model.aux_heads=true): no product to read")
    correct = dict.fromkeys(HEADS, 0)
    n = 0
    for face, context, target, *_ in datamodule.test_dataloader():
        out = module(face, context)
        logits = {
            HEADS[0]: out.logits,
            HEADS[1]: out.face_logits,
            HEADS[2]: out.context_logits,
            HEADS[3]: residual_logits(out.context_logits, out.face_logits),
        }
        for name, x in logits.items():
            correct[name] += int((x.argmax(dim=1) == target).sum())
        n += len(target)
    return {name: 100.0 * c / n for name, c in correct.items()}


def main(argv: Sequence[str] | None = None) -> int:
    from glamor_lightning.checkpoints import module_from_checkpoint, read_checkpoint
    from glamor_lightning.data.contract import test_ready_datamodule

    p = argparse.ArgumentParser(
        prog="python -m glamor_lightning.analysis.head_product",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("ckpts", nargs="+", help="checkpoints of models with auxiliary heads")
    p.add_argument("--data", default=None, help="the data root (default: the checkpoint's)")
    args = p.parse_args(argv)
    print("Test accuracy (%) of each head, and of the product of the face and context heads (fp32):\n")
    print("| checkpoint | " + " | ".join(HEADS) + " |")
    print("|---|" + "---:|" * len(HEADS))
    try:
        for path in args.ckpts:
            ckpt = read_checkpoint(path)
            module = module_from_checkpoint(ckpt, path).float()
            datamodule = test_ready_datamodule(ckpt, module.data_contract, args.data, where=path)
            acc = head_accuracies(module, datamodule)
            print(f"| {path} | " + " | ".join(f"{acc[h]:.1f}" for h in HEADS) + " |", flush=True)
    except (ValueError, FileNotFoundError) as err:
        print(f"head_product: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
