"""Accuracy by face strength / distractors on SynthCAER: the groups come from the generator, checked against
faces.csv."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from glamor_lightning.analysis.predictions import write_predictions
from glamor_lightning.analysis.synth_breakdown import SynthBreakdownError, breakdown, main
from glamor_lightning.data.classes import CLASSES
from glamor_lightning.data.index import INDEX_NAME, read_index
from glamor_lightning.data.synth import CONFIG_NAME, SynthConfig, generate, load_config, sample_scene

# a non-default seed and weak share, so a root read with the defaults would not match
CFG = SynthConfig(per_class_train=1, per_class_val=1, per_class_test=6, weak_fraction=0.5, seed=7)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("synth") / "root", CFG, workers=1)


def _predictions(root: Path, out: Path, right_when) -> tuple[Path, list]:
    """A predictions file over the test rows: correct exactly where `right_when(scene)` holds."""
    rows = [r for r in read_index(root / INDEX_NAME) if r.split == "test"]
    scenes = [sample_scene(CFG, "test", r.label, int(r.path[-8:-4])) for r in rows]
    wrong = {c: CLASSES[(i + 1) % len(CLASSES)] for i, c in enumerate(CLASSES)}
    predicted = [r.label if right_when(s) else wrong[r.label] for r, s in zip(rows, scenes)]
    probs = np.full((len(rows), len(CLASSES)), 1 / len(CLASSES))
    write_predictions(out, [r.path for r in rows], [r.label for r in rows], predicted, probs, CLASSES)
    return out, scenes


def test_generate_writes_its_config(root: Path) -> None:
    assert (root / CONFIG_NAME).is_file()
    assert load_config(root) == CFG


def test_groups_count_weak_strong_and_distractors(root: Path, tmp_path: Path) -> None:
    f, scenes = _predictions(root, tmp_path / "predictions.csv", right_when=lambda s: s.weak)
    counts = breakdown(f, root)
    n_weak = sum(s.weak for s in scenes)
    n_weak_alone = sum(s.weak and len(s.bystanders) == 1 for s in scenes)  # the companion only
    assert 0 < n_weak < len(scenes)
    assert counts["all"] == (len(scenes), n_weak)
    assert counts["weak"] == (n_weak, n_weak)
    assert counts["strong"] == (len(scenes) - n_weak, 0)
    assert counts["weak, 0 distractors"] == (n_weak_alone, n_weak_alone)
    assert counts["weak, 1+ distractors"] == (n_weak - n_weak_alone, n_weak - n_weak_alone)


def _companion_in_crop(scene, cfg: SynthConfig = CFG) -> bool:
    """By hand, in pixels of the 128×171 resized context: the centre crop keeps columns 29..140 and rows 8..119."""
    if scene.companion is None:
        return False
    x1, y1, x2, y2 = scene.bystanders[scene.companion].box
    x, y = (x1 + x2) / 2 * 171 / cfg.width, (y1 + y2) / 2 * 128 / cfg.height
    return 29 <= x < 141 and 8 <= y < 120


def test_weak_faces_split_by_whether_the_test_crop_keeps_the_companion(root: Path, tmp_path: Path) -> None:
    f, scenes = _predictions(root, tmp_path / "predictions.csv", right_when=_companion_in_crop)
    counts = breakdown(f, root, crop=((128, 171), 112))
    weak = [s for s in scenes if s.weak]
    kept = sum(_companion_in_crop(s) for s in weak)
    assert 0 < kept < len(weak), "the fixture should have weak faces of both kinds"
    assert counts["weak, companion in the crop"] == (kept, kept)
    assert counts["weak, companion cropped out"] == (len(weak) - kept, 0)
    assert "weak, companion in the crop" not in breakdown(f, root)  # only when asked


def test_a_root_made_with_another_config_is_an_error(root: Path, tmp_path: Path) -> None:
    other = tmp_path / "copy"
    shutil.copytree(root, other)
    (other / CONFIG_NAME).unlink()  # read with the defaults (seed 0): boxes differ
    f, _ = _predictions(other, tmp_path / "predictions.csv", right_when=lambda s: True)
    with pytest.raises(SynthBreakdownError, match=r"predictions\.csv: test/.*face box .* another config"):
        breakdown(f, other)
    (other / CONFIG_NAME).write_text('{"seed": 7, "colour": 1}')
    with pytest.raises(ValueError, match=r"synthcaer\.json: unknown SynthConfig field\(s\) colour"):
        breakdown(f, other)


def test_cli_prints_a_row_per_run_and_fails_clearly(root: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    _predictions(root, run / "predictions.csv", right_when=lambda s: not s.weak)
    assert main([str(run), "--data", str(root)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"| {run} | 0.0 (n=") and "| 100.0 (n=" in line
    bad = tmp_path / "bad.csv"
    write_predictions(bad, ["test/Happy/photo.png"], ["Happy"], ["Happy"], np.ones((1, 7)) / 7, CLASSES)
    assert main([str(bad), "--data", str(root)]) == 2
    err = capsys.readouterr().err
    assert "bad.csv" in err and "'test/Happy/photo.png'" in err


def test_defaults_round_trip(tmp_path: Path) -> None:
    from glamor_lightning.data.synth import save_config

    save_config(tmp_path, SynthConfig())
    assert load_config(tmp_path) == SynthConfig() == load_config(tmp_path / "nothing-here")
    assert dataclasses.asdict(load_config(tmp_path))["weak_intensity"] == (0.05, 0.2)


def test_ablation_page_gets_the_breakdown_per_setting(root: Path, tmp_path: Path) -> None:
    from glamor_lightning.analysis.ablation import Run, results_page

    runs = []
    for seed, right_when in ((0, lambda s: s.weak), (1, lambda s: True)):
        run = tmp_path / f"run{seed}"
        _, scenes = _predictions(root, run / "predictions.csv", right_when)
        runs.append(
            Run(
                path=run,
                experiment="table4_both_gla",
                seed=seed,
                factors={"inputs": "both"},
                recipe={"data.root": str(root)},
                test_acc=0.5,
            )
        )
    runs.append(
        Run(
            path=tmp_path / "elsewhere",
            experiment="table4_face",
            seed=0,
            factors={"inputs": "face"},
            recipe={"data.root": str(tmp_path)},
            test_acc=0.5,
        )
    )  # not SynthCAER: left out
    page = results_page(runs, "4", params=False)
    n_weak = sum(s.weak for s in scenes)
    strong_pct = 100 * 0.5 * (len(scenes) - n_weak) / (len(scenes) - n_weak)  # seed 0: 0 %, seed 1: 100 %
    row = next(line for line in page.splitlines() if line.startswith("| `table4_both_gla` |"))
    assert row.split("|")[1:4] == [" `table4_both_gla` ", " 100.0 ", f" {strong_pct:.1f} "]
    assert row.rstrip().endswith("| 2 |") and f"weak (n={n_weak})" in page
    assert "| `table4_face` |" not in page.split("by what the image demands")[1]


def test_ensemble_multiplies_probabilities(root: Path, tmp_path: Path, capsys) -> None:
    rows = [r for r in read_index(root / INDEX_NAME) if r.split == "test"]
    labels = [CLASSES.index(r.label) for r in rows]
    sure_a, sure_b = np.full((len(rows), 7), 0.02), np.full((len(rows), 7), 0.1)
    for i, y in enumerate(labels):  # a: sure of the next class; b: mildly sure of the true one
        sure_a[i, (y + 1) % 7] = 0.88
        sure_b[i, y] = 0.4
    sure_a[::2] = 1 / 7  # ... except on every other image, where a knows nothing
    for name, probs in (("a", sure_a), ("b", sure_b)):
        predicted = [CLASSES[int(k)] for k in probs.argmax(1)]
        write_predictions(
            tmp_path / f"{name}.csv", [r.path for r in rows], [r.label for r in rows], predicted, probs, CLASSES
        )
    assert main([str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--data", str(root), "--ensemble"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    n = len(rows)
    assert last.startswith("| ensemble (product of probabilities) |")
    assert last.rstrip().endswith(f"| {100 * ((n + 1) // 2) / n:.1f} (n={n}) |")  # right where a knows nothing


def _run_folder(run: Path, data_root: Path) -> Path:
    """A run folder as training leaves it: predictions beside the saved config that names its data root."""
    (run / "csv").mkdir(parents=True)
    (run / "csv" / "hparams.yaml").write_text(f"config:\n  data:\n    root: {data_root}\n  seed: 0\n")
    return run


def test_a_run_folder_is_read_against_the_root_it_was_tested_on(root: Path, tmp_path: Path, capsys) -> None:
    """Without --data a run is split by its own root's scenes, not by data/synthcaer's (file names repeat from
    one SynthCAER to another, so the wrong root would be counted silently)."""
    run = _run_folder(tmp_path / "run", root)
    f, scenes = _predictions(root, run / "predictions.csv", right_when=lambda s: s.weak)
    assert main([str(run)]) == 0
    n_weak = sum(s.weak for s in scenes)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"| {run} | 100.0 (n={n_weak}) | 0.0 (n={len(scenes) - n_weak}) |")


def test_another_synthcaer_than_the_runs_is_refused(root: Path, tmp_path: Path, capsys) -> None:
    other = generate(tmp_path / "other", dataclasses.replace(CFG, seed=8), workers=1)
    run = _run_folder(tmp_path / "run", root)
    _predictions(root, run / "predictions.csv", right_when=lambda s: True)
    assert main([str(run), "--data", str(other)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no table: not even its header
    assert captured.err.strip() == (
        f"synth_breakdown: error: {run} was tested on {root} (SynthConfig seed 7); --data {other} is another "
        "SynthCAER (seed 8): its scenes are not this run's. Leave --data out"
    )
    assert main([str(run), "--data", str(root)]) == 0  # the same root, named: fine
    gone = _run_folder(tmp_path / "gone", tmp_path / "deleted")
    shutil.copy(run / "predictions.csv", gone / "predictions.csv")
    capsys.readouterr()
    assert main([str(gone)]) == 2
    err = capsys.readouterr().err
    assert f"was tested on {tmp_path / 'deleted'}, which holds no faces.csv here: pass --data" in err
