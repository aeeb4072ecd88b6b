"""The ablation runner's table writer on crafted Hydra run folders, and its multirun command."""

from __future__ import annotations

import csv
import statistics
import sys
from pathlib import Path

import pytest
import yaml

from glamor_lightning.analysis import ablation as ab
from glamor_lightning.analysis import ablation_runs

TABLE4 = [
    "table4_face",
    "table4_context_none",
    "table4_context_standard",
    "table4_context_gla",
    "table4_context_visible_none",
    "table4_context_visible_standard",
    "table4_context_visible_gla",
    "table4_both_none",
    "table4_both_standard",
    "table4_both_gla",
]


def make_run(
    folder: Path,
    experiment: str,
    seed: int,
    test_acc: float | None,
    val_best=(0.3, 0.5),
    inputs="both",
    attention="gla",
    fusion="fusion_net",
    backbone="original",
    w_face=None,
    overrides=(),
) -> Path:
    """A Hydra run folder as `python -m glamor_lightning.train -m ... logger=csv` leaves it."""
    (folder / ".hydra").mkdir(parents=True)
    model = {"backbone": backbone, "attention": attention, "fusion": fusion, "inputs": inputs, "lr": 0.01}
    cfg = {
        "seed": seed,
        "task_name": "table4",
        "model": model,
        "data": {"root": "${paths.data_dir}/synthcaer", "batch_size": 32},
        "trainer": {"max_epochs": len(val_best), "precision": "bf16-mixed"},
    }
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (folder / ".hydra" / "hydra.yaml").write_text(
        yaml.safe_dump({"hydra": {"runtime": {"choices": {"experiment": experiment, "model": "glamor"}}}})
    )
    (folder / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump([f"experiment={experiment}", f"seed={seed}", *overrides])
    )
    (folder / "csv").mkdir()
    resolved = dict(cfg, data={"root": "/data/synthcaer", "batch_size": 32})
    (folder / "csv" / "hparams.yaml").write_text(yaml.safe_dump({"config": resolved}))
    with (folder / "csv" / "metrics.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "step", "train/loss_epoch", "val/acc", "val/acc_best", "val/w_face", "test/acc"])
        for epoch, v in enumerate(val_best):  # the face weight drifts to its final value
            w.writerow([epoch, 10 * epoch + 9, 1.0, v, v, "" if w_face is None else w_face - 0.1 / (1 + epoch), ""])
        if test_acc is not None:  # trainer.test logs with the epoch after the last
            w.writerow([len(val_best), 10 * len(val_best), "", "", "", "", test_acc])
    return folder


@pytest.fixture()
def sweep(tmp_path) -> Path:
    """Three settings x 3 seeds (one failed run), Hydra's numbered job folders."""
    root = tmp_path / "multirun"
    specs = [
        ("table4_face", dict(inputs="face", attention="none", fusion="none"), [0.50, 0.52, 0.54]),
        ("table4_both_gla", {}, [0.80, 0.90, 0.85]),
        ("table4_context_gla", dict(inputs="context", fusion="none"), [0.40, 0.45, None]),
    ]
    job = 0
    for name, factors, accs in specs:
        for seed, acc in enumerate(accs):
            make_run(root / str(job), name, seed, acc, **factors)
            job += 1
    (root / "multirun.yaml").write_text("{}")
    return root


def test_collect_reads_setting_seed_and_test_accuracy(sweep):
    runs = ab.find_runs([sweep])
    assert len(runs) == 9
    r = next(r for r in runs if r.experiment == "table4_both_gla" and r.seed == 1)
    assert r.test_acc == pytest.approx(0.90) and r.val_acc_best == pytest.approx(0.5) and r.epochs == 2
    assert r.factors == {"inputs": "both", "attention": "gla", "fusion": "fusion_net", "backbone": "original"}
    assert r.recipe["data.root"] == "/data/synthcaer"  # the resolved config, not `${paths...}`
    failed = [r for r in runs if r.test_acc is None]
    assert [(r.experiment, r.seed) for r in failed] == [("table4_context_gla", 2)]


def test_table_rows_in_paper_order_with_mean_and_std(sweep):
    text = ab.markdown_table(ab.find_runs([sweep]))
    lines = text.splitlines()
    assert lines[0] == "| Input | Attention | Fusion | Params | Test acc (%) | Val acc best (%) | Seeds | Config |"
    rows = lines[2:]
    assert [r.rsplit("`", 2)[1] for r in rows] == ["table4_face", "table4_context_gla", "table4_both_gla"]
    face = rows[0].split(" | ")
    assert face[:3] == ["| face only", "none (average pool)", "-"]
    mean, std = 100 * statistics.mean([0.50, 0.52, 0.54]), 100 * statistics.stdev([0.50, 0.52, 0.54])
    assert f"{mean:.1f} ± {std:.1f}" == "52.0 ± 2.0" and "52.0 ± 2.0" in rows[0]
    assert "**85.0 ± 5.0**" in rows[2]  # the best mean is bold
    assert "2,158,602" in rows[2]  # parameters of GLAMOR-Net
    assert "42.5 ± 3.5" in rows[1] and "2 of 3 (rest failed)" in rows[1]


def test_one_seed_gives_no_std(tmp_path):
    make_run(tmp_path / "0", "table6_add", 0, 0.7, fusion="add")
    make_run(tmp_path / "1", "table6_max", 0, 0.6, fusion="max")
    text = ab.markdown_table(ab.find_runs([tmp_path]), params=False)
    assert text.splitlines()[0].startswith("| Fusion | Test acc (%)")  # only the factor that varies
    assert "| add | **70.0** | 50.0 | 1 |" in text and "±" not in text


def test_a_model_factor_override_is_a_setting_of_its_own(tmp_path):
    """`experiment=table4_both_none model.fusion=add` must not be pooled with table4_both_none's runs."""
    make_run(tmp_path / "0", "table4_both_none", 0, 0.70, attention="none")
    make_run(
        tmp_path / "1",
        "table4_both_none",
        0,
        0.80,
        attention="none",
        fusion="add",
        overrides=["model.fusion=add", "trainer.max_epochs=30"],
    )
    runs = ab.find_runs([tmp_path])
    assert sorted(r.experiment for r in runs) == ["table4_both_none", "table4_both_none model.fusion=add"]
    rows = ab.markdown_table(runs, params=False).splitlines()[2:]
    assert len(rows) == 2
    assert "| fusion net | 70.0 |" in rows[0] and rows[0].endswith("| 1 | `table4_both_none` |")
    assert "| add | **80.0** |" in rows[1] and rows[1].endswith("| 1 | `table4_both_none model.fusion=add` |")


def test_face_weight_column_is_the_last_validation_mean_over_seeds(tmp_path):
    make_run(tmp_path / "0", "table4_both_gla", 0, 0.7, w_face=0.9)
    make_run(tmp_path / "1", "table4_both_gla", 1, 0.7, w_face=0.6)
    make_run(tmp_path / "2", "table4_face", 0, 0.6, inputs="face", attention="none", fusion="none")
    runs = ab.find_runs([tmp_path])
    assert sorted((r.experiment, r.w_face) for r in runs)[:2] == [
        ("table4_both_gla", pytest.approx(0.6 - 0.1 / 2)),
        ("table4_both_gla", pytest.approx(0.9 - 0.1 / 2)),
    ]
    lines = ab.markdown_table(runs, params=False).splitlines()
    assert lines[0] == "| Input | Attention | Fusion | Test acc (%) | Val acc best (%) | Face weight | Seeds | Config |"
    assert "| 0.70 | 2 | `table4_both_gla` |" in lines[3] and "| - | 1 | `table4_face` |" in lines[2]


def test_write_results_makes_page_and_per_run_csv(sweep, tmp_path, capsys):
    out = tmp_path / "results" / "table4.md"
    assert (
        ab.main(["collect", str(sweep), "--table", "4", "--out", str(out), "--command", "make ablation TABLE=4"]) == 0
    )
    page = out.read_text()
    assert page.startswith("## Table 4: input setting x context attention")
    assert "make ablation TABLE=4" in page and "`trainer.max_epochs=2`" in page and "seeds 0, 1, 2" in page
    assert page in capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "results" / "table4_runs.csv").open()))
    assert len(rows) == 9 and {r["experiment"] for r in rows} == {
        "table4_face",
        "table4_both_gla",
        "table4_context_gla",
    }


def test_results_name_runs_relative_to_the_working_directory(sweep, tmp_path, monkeypatch):
    monkeypatch.chdir(sweep.parent)
    out = tmp_path / "results" / "table4.md"
    assert ab.main(["collect", sweep.name, "--table", "4", "--out", str(out)]) == 0
    assert f"Runs: {sweep.name} (9 runs;" in out.read_text()
    assert "`data.root=/data/synthcaer`" in out.read_text()  # outside the working directory: as it was
    monkeypatch.chdir("/")
    assert ablation_runs._recipe_value({"data": {"root": "/data/synthcaer"}}, "data.root") == "data/synthcaer"
    rows = list(csv.DictReader((out.parent / "table4_runs.csv").open()))
    assert all(not Path(r["path"]).is_absolute() and r["path"].startswith(sweep.name) for r in rows)


def test_collect_with_no_runs_is_an_error(tmp_path, capsys):
    assert ab.main(["collect", str(tmp_path), "--out", str(tmp_path / "t.md")]) == 2
    assert "no runs found" in capsys.readouterr().err


def test_table_experiments_exist_in_paper_order():
    assert ab.table_experiments("4") == TABLE4
    assert ab.table_experiments("6") == ["table6_fusion_net", "table6_add", "table6_max", "table6_concat"]
    assert ab.table_experiments("7") == ["table7_original", "table7_mobilenetv2", "table7_resnet18"]
    with pytest.raises(ValueError, match="no experiment configs for table '5'"):
        ab.table_experiments("5")


def test_multirun_command(tmp_path):
    cmd = ab.multirun_command(["table6_add", "table6_max"], [0, 1], tmp_path / "sw", "data/x", ["trainer.max_epochs=3"])
    assert cmd[:4] == [sys.executable, "-m", "glamor_lightning.train", "-m"]
    assert cmd[4:7] == ["experiment=table6_add,table6_max", "seed=0,1", "logger=csv"]
    assert cmd[7] == f"hydra.sweep.dir={(tmp_path / 'sw').resolve()}"
    assert cmd[8] == f"data.root={Path('data/x').resolve()}" and cmd[-1] == "trainer.max_epochs=3"


def test_run_dry_run_prints_the_command(capsys):
    assert ab.main(["run", "--table", "4", "--seeds", "0", "1", "--dry-run", "--", "trainer.max_epochs=2"]) == 0
    out = capsys.readouterr().out
    assert "10 settings x 2 seed(s) = 20 runs" in out and "experiment=table4_face,table4_context_none" in out
    assert out.rstrip().endswith("trainer.max_epochs=2")


@pytest.mark.slow
def test_run_table_end_to_end(synth_root, tmp_path):
    """A real two-run multirun (two processes), then the table."""
    out = tmp_path / "t.md"
    status = ab.main(
        [
            "run",
            "--table",
            "6",
            "--seeds",
            "0",
            "--data",
            str(synth_root),
            "--sweep-dir",
            str(tmp_path / "sw"),
            "--out",
            str(out),
            "--",
            "experiment=table6_add,table6_max",
            "trainer.max_epochs=1",
            "data.cache_workers=0",
            "data.batch_size=16",
            "callbacks.rich_progress_bar=null",
            "callbacks.model_summary=null",
        ]
    )
    assert status == 0
    runs = ab.find_runs([tmp_path / "sw"])
    assert sorted(r.experiment for r in runs) == ["table6_add", "table6_max"]
    assert all(r.test_acc is not None for r in runs) and "table6_max" in out.read_text()


def test_run_a_subset_of_the_table(capsys):
    assert ab.main(["run", "--table", "4", "--dry-run", "--", "experiment=table4_both_gla,table4_face", "x=1"]) == 0
    out = capsys.readouterr().out
    assert "2 settings x 1 seed(s) = 2 runs" in out and "experiment=table4_both_gla,table4_face seed=0" in out
    assert out.count("experiment=") == 1


def test_eval_runs_are_not_collected(sweep):
    (sweep / "0" / "eval" / ".hydra").mkdir(parents=True)
    (sweep / "0" / "eval" / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"task_name": "eval", "seed": 1}))
    assert len(ab.find_runs([sweep])) == 9


@pytest.mark.parametrize(
    "callbacks, shown",
    [
        (
            {"stages": {"enabled": True, "stages": [{"name": "a", "start": 0}, {"name": "b", "start": 0.5}]}},
            "a@0 -> b@0.5",
        ),
        ({"stages": {"enabled": False, "stages": [{"name": "a", "start": 0}]}}, "off (end to end)"),
        ({"stages": None}, "off (end to end)"),
        ({}, None),
    ],
)
def test_protocol_says_whether_training_was_staged(callbacks, shown):
    assert ablation_runs._recipe_value({"callbacks": callbacks}, "callbacks.stages") == shown


def test_a_recipe_override_is_a_setting_of_its_own_and_the_protocol_names_it(tmp_path):
    """`experiment=table4_both_gla recipe=context` trains another recipe: never pooled with the plain runs."""
    make_run(tmp_path / "0", "table4_both_gla", 0, 0.70)
    ctx = make_run(tmp_path / "1", "table4_both_gla", 0, 0.76, overrides=["recipe=context"])
    hparams = ctx / "csv" / "hparams.yaml"
    cfg = yaml.safe_load(hparams.read_text())
    cfg["config"]["recipe"] = {"name": "context"}
    hparams.write_text(yaml.safe_dump(cfg))
    runs = ab.find_runs([tmp_path])
    assert sorted(r.experiment for r in runs) == ["table4_both_gla", "table4_both_gla recipe=context"]
    assert {r.recipe["recipe.name"] for r in runs} == {None, "context"}
    assert len(ab.markdown_table(runs, params=False).splitlines()[2:]) == 2
