"""The README's benchmark tables, regenerated from `benchmarks/results/` rather than typed by hand.

For each machine kind (a processor name with its AMX and native-bf16 flags, or a GPU) it takes the `make bench`
result file with the most sections, the latest of those on a tie, so a later partial run (`--only allocator`) does not
hide a full one, and renders it with `make bench`'s own table (`benchmarks.table.table`) between the README's markers:

    <!-- bench:begin (python -m benchmarks.readme) -->
    <!-- bench:end -->

    python -m benchmarks.readme            # rewrite that block of README.md
    python -m benchmarks.readme --check    # exit 1 when the block is not what the result files give

Quick runs and files that are not `make bench` results (`*-authors.json`, `latest.json`, a copy of a dated file) are
left out. Partial runs and the history of each kind stay in docs/speed-log.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/readme.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO  # noqa: E402
from benchmarks.common import machine_kind as common_machine_kind  # noqa: E402

BEGIN = "<!-- bench:begin (python -m benchmarks.readme) -->"
END = "<!-- bench:end -->"
RESULTS = REPO / "benchmarks" / "results"


#: how each `common.machine_kind` flag reads after the machine's name in the README
_KIND_WORDS = {"GPU": " (GPU)", "AMX": " with AMX", "no native bf16": " without native bf16", None: ", no AMX"}


def machine_kind(doc: dict) -> str:
    """The kind a result was measured on, in words (`common.machine_kind`): the GPU's name, or the processor's with
    what decides its bf16 speed."""
    name, flag = common_machine_kind(doc["machine"])
    return name + _KIND_WORDS[flag]


def bench_results(folder: Path = RESULTS) -> list[tuple[Path, dict]]:
    """Every full-size `make bench` result under `folder` (sub-folders too), oldest first."""
    found = []
    for path in sorted(folder.rglob("*.json")):
        if path.name == "latest.json" or "quick" in path.relative_to(folder).parts:
            continue
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not a JSON document ({e})") from e
        if "schema" not in doc or doc.get("quick"):
            continue
        found.append((path, doc))
    return sorted(found, key=lambda pd: pd[1].get("timestamp", pd[1]["date"]))


def pick(results: Sequence[tuple[Path, dict]]) -> dict[str, tuple[Path, dict]]:
    """Per machine kind, the result with the most sections (the latest of those), kinds in order of that result's date,
    newest first."""
    best: dict[str, tuple[Path, dict]] = {}
    for path, doc in results:  # oldest first: on a tie the later one wins
        kind = machine_kind(doc)
        if kind not in best or len(doc["settings"]["sections"]) >= len(best[kind][1]["settings"]["sections"]):
            best[kind] = (path, doc)
    return dict(sorted(best.items(), key=lambda kv: kv[1][1].get("timestamp", kv[1][1]["date"]), reverse=True))


def render(picked: dict[str, tuple[Path, dict]]) -> str:
    """The block between the markers: one collapsed table per machine kind (`pick`'s choice)."""
    from benchmarks.table import table

    out = [BEGIN, ""]
    for kind, (path, doc) in picked.items():
        sections = doc["settings"]["sections"]
        where = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else str(path)
        summary = (
            f"{kind}: <code>make bench</code> of {doc['date']} ({len(sections)} sections, "
            f"{doc['elapsed_s'] / 60:.0f} min; <code>{where}</code>)"
        )
        body = table(doc).splitlines()[1:]  # the table's own title repeats the summary
        while body and not body[0]:
            body.pop(0)
        # its section titles in bold, not headings: they would crowd the README's table of contents four times over
        body = [f"**{line.lstrip('#').strip()}**" if line.startswith("#") else line for line in body]
        out += ["<details>", f"<summary>{summary}</summary>", "", *body, "</details>", ""]
    out.append(END)
    return "\n".join(out)


def replace_block(text: str, block: str, name: str = "README.md") -> str:
    """`text` with its marked block replaced by `block`; a ValueError naming the file when a marker is missing."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{name}: no '{BEGIN}' ... '{END}' block to regenerate")
    return text[:start] + block + text[end + len(END) :]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.readme", description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 if README.md's block is out of date; change nothing")
    p.add_argument("--readme", default=str(REPO / "README.md"))
    p.add_argument("--results", default=str(RESULTS))
    args = p.parse_args(argv)
    readme = Path(args.readme)
    try:
        text = readme.read_text()
        picked = pick(bench_results(Path(args.results)))
        new = replace_block(text, render(picked), readme.name)
    except (OSError, ValueError) as e:
        print(f"benchmarks.readme: {e}", file=sys.stderr)
        return 2
    if args.check:
        if new != text:
            print(f"{readme}: its benchmark tables are out of date; run: python -m benchmarks.readme", file=sys.stderr)
            return 1
        return 0
    if new != text:
        readme.write_text(new)
    print(f"{readme}: benchmark tables of {len(picked)} machine kinds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
