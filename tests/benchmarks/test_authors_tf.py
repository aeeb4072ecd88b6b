"""`python -m benchmarks.authors_tf`: ours against the authors' TensorFlow code. TensorFlow is not in the project's
environment, so these check what runs without it: the layout their pipeline reads, the table's ratios, and one
clear line when the checkout or the TensorFlow Python cannot be used."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `benchmarks/` is a folder of the repository, not of the package
    sys.path.insert(0, str(REPO))

from benchmarks import authors_tf  # noqa: E402
from benchmarks.authors_step import their_layout  # noqa: E402


def test_their_layout_holds_every_training_image_and_its_box_where_their_config_reads_them(synth_root, tmp_path):
    with open(synth_root / "faces.csv", newline="") as f:
        train = [r for r in csv.DictReader(f) if r["split"] == "train"]
    base = their_layout(synth_root, tmp_path) / "data" / "NCAER-S"
    images = sorted((base / "images" / "train").glob("*/*"))
    assert len(images) == len(train)
    for row in train:
        name = Path(row["path"])
        image = base / "images" / "train" / row["label"] / name.name
        assert image.resolve() == (synth_root / name).resolve()  # linked, not copied
        box = (base / "crop" / "train" / row["label"] / f"{name.stem}.txt").read_text()
        assert [int(v) for v in box.split(",")] == [int(row[k]) for k in ("x1", "y1", "x2", "y2")]


def test_each_ratio_is_the_median_of_the_rounds_ratios_of_the_figures_its_target_names():
    figs = dict(
        authors_eager=[20.0, 20.0, 20.0],
        authors_function=[50.0, 40.0, 100.0],
        authors_tfdata=[40.0, 40.0, 40.0],
        ours_fp32=[55.0, 60.0, 50.0],  # per round 1.1, 1.5, 0.5 of their function: median 1.1
        ours_bf16=[90.0, 90.0, 90.0],
        ours_fit=[100.0, 120.0, 80.0],  # of their tf.data step 2.5, 3.0, 2.0; of their function 2.0, 3.0, 0.8
    )
    results = {
        "4": {
            "median": {k: sorted(v)[1] for k, v in figs.items()},
            "ratios": {n: sorted(authors_tf.ratios(figs, *pair))[1] for n, pair in authors_tf.RATIOS.items()},
            "fit_precision": "bf16-mixed",
        }
    }
    row = authors_tf.table(results).splitlines()[-1]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:2] == ["4", "20.0"] and cells[6] == "100.0 (bf16-mixed)"
    assert cells[7:] == ["1.10×", "2.50×", "2.00×"]  # fp32 / function, fit / (function + tf.data), fit / function


def test_a_folder_that_is_not_their_checkout_is_one_line_naming_it(tmp_path, capsys):
    (tmp_path / "model.py").write_text("")
    code = authors_tf.main(["--authors-repo", str(tmp_path), "--tf-python", sys.executable])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert str(tmp_path) in err[0] and "config.py, data_utils.py" in err[0] and "minhnhatvt/glamor-net" in err[0]


def test_a_python_without_tensorflow_is_one_line_saying_what_to_install(tmp_path, capsys):
    for name in authors_tf.AUTHORS_FILES:
        (tmp_path / name).write_text("")
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("this Python has TensorFlow")
    code = authors_tf.main(["--authors-repo", str(tmp_path), "--tf-python", sys.executable])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert sys.executable in err[0] and "pip install tensorflow-cpu tf-keras" in err[0]


def test_a_tf_python_that_does_not_exist_is_named(tmp_path, capsys):
    for name in authors_tf.AUTHORS_FILES:
        (tmp_path / name).write_text("")
    missing = tmp_path / "no-such-python"
    assert authors_tf.main(["--authors-repo", str(tmp_path), "--tf-python", str(missing)]) == 2
    assert f"{missing}: cannot run it" in capsys.readouterr().err
