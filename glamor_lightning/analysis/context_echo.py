"""Does a model's context branch read the scene, or echo the face through GLA's guide?

Global-Local Attention computes where to look from the face vector v_f, so the context vector v_c can carry
the face's own expression (docs/training.md, "A context branch that echoes the face"). This command decides
each test image from the context alone twice: with GLA guided by the image's own face, and by the face of a
test image of another class (the next one in the split's order, `other_class_partners`). A branch that
reads the scene keeps much of its accuracy under the other face (what it loses is the guide's legitimate
use: the target's look, e.g. SynthCAER's hair colour); an echo falls below chance, as it names the other
image's class.

"From the context alone" is, by model: the auxiliary context head when the model has one (one that reads
the pooled context map, `context_head_input='pooled'`, answers alike under both guides: no face enters it);
the fused head with v_f zeroed for face + context models; the classifier of a context-only model. On SynthCAER the
accuracy is also split by what the image demands (`synth_breakdown.GROUPS`): an echo is right on strong
faces and wrong on weak ones, which a scene reader cannot tell apart.

    python -m glamor_lightning.analysis.context_echo CKPT [CKPT ...] [--data ROOT]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from glamor_lightning.callbacks.branch_diagnostics import other_class_partners
from glamor_lightning.models.glamor import GlamorNet

#: the two guides each image's context is read under
GUIDES = ("own face", "another class's face")


@torch.no_grad()
def context_alone(net: GlamorNet, v_f: torch.Tensor, v_c: torch.Tensor, context_map: torch.Tensor) -> torch.Tensor:
    """Logits from the context vector alone (see the module docstring for which head); a head that reads the
    pooled context map (`context_head_input='pooled'`) reads it, whatever the guide."""
    if net.context_head is not None:
        pooled = net.context_head_input == "pooled"
        return net.context_head(net.pooled_context(context_map) if pooled else v_c)
    if net.classifies_face:
        return net.decide(torch.zeros_like(v_f), v_c)[0]
    return net.decide(v_f, v_c)[0]


@torch.no_grad()
def echo_predictions(
    module, datamodule, batch_size: int = 64
) -> tuple[list[str], torch.Tensor, dict[str, torch.Tensor]]:
    """(paths, targets, {guide: predicted classes}) over the test split of a set-up data module, in fp32."""
    from glamor_lightning.analysis.attention_maps import dataset_batch
    from glamor_lightning.module import to_float_nchw

    net: GlamorNet = module.net.eval()
    if not net.attention_reads_face:
        raise ValueError("the model's context attention is not guided by the face (attention='gla' only): no echo")
    dataset = datamodule.dataset("test")
    batches = [range(s, min(s + batch_size, len(dataset))) for s in range(0, len(dataset), batch_size)]
    loaded = [dataset_batch(dataset, b) for b in batches]
    targets = torch.as_tensor([int(t) for _, _, labels, _ in loaded for t in labels])
    partners = other_class_partners(targets)
    if partners is None:
        raise ValueError(f"every test image of {datamodule.root} has the same class: no other class's face to use")
    cl = module.hparams.channels_last
    v_f = torch.cat([net.face_encoder(to_float_nchw(faces, cl)).mean(dim=(2, 3)) for faces, *_ in loaded])
    guides = {GUIDES[0]: v_f, GUIDES[1]: v_f[partners]}
    preds: dict[str, list[torch.Tensor]] = {g: [] for g in GUIDES}
    start = 0
    for faces, contexts, _, _ in loaded:
        fmap = net.context_encoder(to_float_nchw(contexts, cl))
        end = start + len(faces)
        for name, guide in guides.items():
            v_c, _ = net.attention(guide[start:end], fmap)
            preds[name].append(context_alone(net, v_f[start:end], v_c, fmap).argmax(dim=1))
        start = end
    paths = [datamodule.rows[int(r)].path for _, _, _, rows in loaded for r in rows]
    return paths, targets, {g: torch.cat(p) for g, p in preds.items()}


def echo_table(path: str, module, datamodule) -> list[str]:
    """Markdown rows: accuracy (%) from the context alone under each guide, by SynthCAER group when it is one."""
    from glamor_lightning.analysis.synth_breakdown import GROUPS, count_groups, is_synthcaer

    paths, targets, preds = echo_predictions(module, datamodule)
    rows = []
    for guide, pred in preds.items():
        correct = (pred == targets).tolist()
        if is_synthcaer(datamodule.root):
            groups = count_groups(paths, correct, datamodule.root, path)
            cells = [f"{100 * c / n:.1f}" if n else "-" for n, c in (groups[g] for g in ("all", *GROUPS))]
        else:
            cells = [f"{100 * sum(correct) / len(correct):.1f}"] + ["-"] * len(GROUPS)
        rows.append(f"| {path} | {guide} | " + " | ".join(cells) + " |")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    from glamor_lightning.analysis.synth_breakdown import GROUPS
    from glamor_lightning.checkpoints import module_from_checkpoint, read_checkpoint
    from glamor_lightning.data.contract import test_ready_datamodule

    p = argparse.ArgumentParser(
        prog="python -m glamor_lightning.analysis.context_echo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("ckpts", nargs="+", help="checkpoints of models with GLA")
    p.add_argument("--data", default=None, help="the data root (default: the checkpoint's)")
    args = p.parse_args(argv)
    print("Test accuracy (%) from the context alone, GLA guided by each image's own face or another class's:\n")
    print("| checkpoint | GLA guided by | all | " + " | ".join(GROUPS) + " |")
    print("|---|---|---:|" + "---:|" * len(GROUPS))
    try:
        for path in args.ckpts:
            ckpt = read_checkpoint(path)
            module = module_from_checkpoint(ckpt, path)
            datamodule = test_ready_datamodule(ckpt, module.data_contract, args.data, where=path)
            print("\n".join(echo_table(path, module, datamodule)), flush=True)
    except (ValueError, FileNotFoundError) as err:
        print(f"context_echo: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
