"""Trainable-parameter counts of GLAMOR-Net settings (backbone × attention × fusion).

    glamor params                          markdown table, paper backbones x attentions x fusions
    glamor params --backbones original --format csv
    python -m glamor_lightning.analysis.params

Counts come from building each `GlamorNet` (no weights are downloaded: `pretrained` does not change the
count). The original GLAMOR-Net (original backbone, GLA with BatchNorm, fusion net) has 2,158,602.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass

#: the paper's Table 7 backbones, attention types (Table 4) and fusions (Table 6), in the paper's order
BACKBONES = ("original", "mobilenetv2", "resnet18")
ATTENTIONS = ("none", "standard", "gla")
FUSIONS = ("fusion_net", "add", "max", "concat")
#: the authors' TF2 model, counted by Keras
GLAMOR_NET_PARAMS = 2_158_602


@dataclass(frozen=True)
class ParamCount:
    backbone: str
    attention: str
    fusion: str
    inputs: str
    params: int | None  #: None: the setting does not build (the reason is in `error`)
    error: str = ""


def count_trainable(module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def count_params(
    backbone: str = "original",
    attention: str = "gla",
    fusion: str = "fusion_net",
    inputs: str = "both",
    gla_batchnorm: bool = True,
    num_classes: int = 7,
    hidden: int = 128,
) -> int:
    """Trainable parameters of the `GlamorNet` with these settings."""
    from glamor_lightning.models.glamor import GlamorNet

    return count_trainable(
        GlamorNet(
            backbone=backbone,
            attention=attention,
            fusion=fusion,
            inputs=inputs,
            gla_batchnorm=gla_batchnorm,
            num_classes=num_classes,
            hidden=hidden,
        )
    )


def param_table(
    backbones: Sequence[str] = BACKBONES,
    attentions: Sequence[str] = ATTENTIONS,
    fusions: Sequence[str] = FUSIONS,
    inputs: str = "both",
    gla_batchnorm: bool = True,
) -> list[ParamCount]:
    """One `ParamCount` per backbone × attention × fusion (a setting that cannot be built keeps its error)."""
    rows = []
    for b in backbones:
        for a in attentions:
            for f in fusions:
                try:
                    rows.append(ParamCount(b, a, f, inputs, count_params(b, a, f, inputs, gla_batchnorm)))
                except (ValueError, RuntimeError) as err:
                    rows.append(ParamCount(b, a, f, inputs, None, str(err)))
    return rows


def _fmt(n: int | None) -> str:
    return f"{n:,}" if n is not None else "n/a"


def to_markdown(rows: Sequence[ParamCount]) -> str:
    """Rows backbone × attention, one column per fusion; counts with thousands separators."""
    fusions = list(dict.fromkeys(r.fusion for r in rows))
    by_key = {(r.backbone, r.attention, r.fusion): r for r in rows}
    lines = ["| Backbone | Attention | " + " | ".join(fusions) + " |", "|---|---|" + "---:|" * len(fusions)]
    for b, a in dict.fromkeys((r.backbone, r.attention) for r in rows):
        cells = []
        for f in fusions:
            r = by_key.get((b, a, f))
            cell = _fmt(r.params if r else None)
            if r and r.params == GLAMOR_NET_PARAMS and (b, a, f) == ("original", "gla", "fusion_net"):
                cell = f"**{cell}**"
            cells.append(cell)
        lines.append(f"| {b} | {a} | " + " | ".join(cells) + " |")
    errors = [r for r in rows if r.params is None]
    note = f"\nTrainable parameters, inputs={rows[0].inputs if rows else 'both'}."
    if any("**" in line for line in lines[2:]):
        note += f" **Bold**: GLAMOR-Net as the authors build it ({GLAMOR_NET_PARAMS:,})."
    notes = [note]
    notes += [f"- n/a {r.backbone}/{r.attention}/{r.fusion}: {r.error}" for r in errors]
    return "\n".join(lines + notes)


def to_csv(rows: Sequence[ParamCount]) -> str:
    lines = ["backbone,attention,fusion,inputs,params"]
    lines += [f"{r.backbone},{r.attention},{r.fusion},{r.inputs},{'' if r.params is None else r.params}" for r in rows]
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backbones",
        nargs="+",
        default=list(BACKBONES),
        help="backbone names (registry aliases or any timm model); default: the paper's",
    )
    p.add_argument("--attentions", nargs="+", default=list(ATTENTIONS), help="default: none standard gla")
    p.add_argument("--fusions", nargs="+", default=list(FUSIONS), help="default: fusion_net add max concat")
    p.add_argument(
        "--inputs",
        default="both",
        help="input setting (face/context/context_visible need --fusions none; face needs --attentions none)",
    )
    p.add_argument("--no-gla-batchnorm", action="store_true", help="GLA as the paper draws it (no BatchNorm)")
    p.add_argument("--format", choices=("markdown", "csv"), default="markdown")
    p.add_argument("--out", default=None, help="also write the table to this file")


def run(args: argparse.Namespace) -> int:
    rows = param_table(
        args.backbones, args.attentions, args.fusions, inputs=args.inputs, gla_batchnorm=not args.no_gla_batchnorm
    )
    text = to_markdown(rows) if args.format == "markdown" else to_csv(rows)
    print(text)
    if args.out:
        from pathlib import Path

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m glamor_lightning.analysis.params",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
