"""`python -m benchmarks.readme`: the README's benchmark tables are made from the result files, one per machine kind."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `benchmarks/` is a folder of the repository, not of the package
    sys.path.insert(0, str(REPO))

from benchmarks import readme  # noqa: E402


def test_the_readme_tables_are_what_the_committed_result_files_give():
    """Fails when a table is edited by hand, or a result file is added without `python -m benchmarks.readme`."""
    assert readme.main(["--check"]) == 0


def _doc(date: str, sections: list[str], cpu: str = "AMD EPYC", amx=False, native_bf16=True, cuda=None, quick=False):
    machine = {"cpu": cpu, "amx": amx, "native_bf16": native_bf16, "cores": 2, "torch_threads": 2, "torch": "2.14.1",
               "device": "cuda" if cuda else "cpu"}  # fmt: skip
    if cuda:
        machine["cuda"] = {"name": cuda}
    return {
        "schema": 1, "date": date, "timestamp": f"{date}T12:00:00", "quick": quick, "elapsed_s": 600.0,
        "machine": machine, "settings": {"batch": 32, "repeats": 5, "sections": sections}, "backbones": {}, "raw": {},
    }  # fmt: skip


def _write(folder: Path, name: str, doc: dict) -> None:
    (folder / name).write_text(json.dumps(doc))


def test_each_kind_shows_its_fullest_run_not_a_later_partial_one_nor_quick_runs_or_other_files(tmp_path):
    full = ["flops", "model", "full", "lightning"]
    _write(tmp_path, "2026-12-01.json", _doc("2026-12-01", full))  # AMD, full
    _write(tmp_path, "2026-12-03-allocator.json", _doc("2026-12-03", ["allocator"]))  # AMD, later but partial
    _write(tmp_path, "2026-12-02-amx.json", _doc("2026-12-02", ["model"], cpu="Intel Xeon", amx=True))
    _write(tmp_path, "2026-12-02-nobf16.json", _doc("2026-12-02", ["model"], cpu="Intel Xeon", native_bf16=False))
    (tmp_path / "h200").mkdir()
    _write(tmp_path / "h200", "all.json", _doc("2026-11-26", ["model"], cpu="Intel Xeon", cuda="NVIDIA H200"))
    _write(tmp_path, "2026-12-04.json", _doc("2026-12-04", full + ["video"], quick=True))  # quick: never shown
    _write(tmp_path, "latest.json", _doc("2026-12-05", full + ["video", "detect"]))  # a copy: never shown
    (tmp_path / "2026-12-05-authors.json").write_text(json.dumps({"date": "2026-12-05", "machine": {}}))
    picked = readme.pick(readme.bench_results(tmp_path))
    assert {kind: path.name for kind, (path, _) in picked.items()} == {
        "Intel Xeon with AMX": "2026-12-02-amx.json",  # newest first
        "Intel Xeon without native bf16": "2026-12-02-nobf16.json",
        "AMD EPYC, no AMX": "2026-12-01.json",
        "NVIDIA H200 (GPU)": "all.json",
    }
    _write(tmp_path, "2026-12-06.json", _doc("2026-12-06", full))  # as many sections, later: it replaces the first
    assert readme.pick(readme.bench_results(tmp_path))["AMD EPYC, no AMX"][0].name == "2026-12-06.json"


def test_the_block_is_replaced_between_its_markers_and_a_readme_without_them_is_named(tmp_path):
    text = f"# Title\n\nbefore\n{readme.BEGIN}\nold table\n{readme.END}\nafter\n"
    assert readme.replace_block(text, "NEW") == "# Title\n\nbefore\nNEW\nafter\n"
    page = tmp_path / "README.md"
    page.write_text("# A README with no markers\n")
    assert readme.main(["--readme", str(page), "--check"]) == 2
    with pytest.raises(ValueError, match=r"README\.md: no '<!-- bench:begin"):
        readme.replace_block(page.read_text(), "NEW")


def test_a_result_file_that_is_not_json_is_named_in_one_line(tmp_path, capsys):
    page = tmp_path / "README.md"
    page.write_text(f"{readme.BEGIN}\n{readme.END}\n")
    (tmp_path / "2026-12-08.json").write_text('{"schema": 1, "date": ')  # a copy cut short
    assert readme.main(["--readme", str(page), "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "2026-12-08.json: not a JSON document" in err
