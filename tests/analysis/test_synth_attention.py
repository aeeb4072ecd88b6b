"""Attention on the companion vs distractors (SynthCAER): box mapping, cell coverage, and the uniform baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import fit_checkpoint, make_datamodule
from glamor_lightning.analysis.synth_attention import cell_coverage, crop_box, main, measure
from glamor_lightning.data.synth import SynthConfig, generate
from glamor_lightning.module import EmotionModule

CFG = SynthConfig(per_class_train=1, per_class_val=1, per_class_test=3, max_distractors=2, seed=3)


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory: pytest.TempPathFactory):
    root = generate(tmp_path_factory.mktemp("synth") / "root", CFG, workers=1)
    dm = make_datamodule(root)
    dm.setup("test")
    return dm


def test_crop_box_follows_resize_and_centre_crop() -> None:
    # 320x180 -> 171x128 (W x H), centre crop 112: left (171-112)//2 = 29, top (128-112)//2 = 8
    x1, y1, x2, y2 = crop_box((0, 0, 320, 180), (180, 320), (128, 171), 112)
    assert (x1, y1) == (-29, -8) and (x2, y2) == pytest.approx((171 - 29, 128 - 8))


def test_cell_coverage_is_the_covered_share_of_each_cell() -> None:
    assert np.array_equal(cell_coverage((0, 0, 112, 112), (7, 7), 112), np.ones((7, 7)))
    one = cell_coverage((16, 32, 32, 48), (7, 7), 112)  # exactly cell (row 2, col 1)
    assert one[2, 1] == 1.0 and one.sum() == 1.0
    half = cell_coverage((-50, 0, 8, 16), (7, 7), 112)  # left half of cell (0, 0), outside the crop ignored
    assert half[0, 0] == 0.5 and half.sum() == 0.5


def test_uniform_attention_has_lift_one(datamodule) -> None:
    torch.manual_seed(0)
    uniform = measure(EmotionModule(attention="none", fusion="fusion_net", inputs="both").eval(), datamodule)
    assert uniform.images > 0
    assert uniform.companion_lift == pytest.approx(1.0) and uniform.distractor_lift == pytest.approx(1.0)
    assert 0 < uniform.companion_mass < 0.2 and 1 / 3 <= uniform.chance_first <= 1 / 2


def test_cli_scores_a_checkpoint_and_refuses_a_face_only_one(datamodule, tmp_path: Path, capsys) -> None:

    root = str(datamodule.root)
    gla = fit_checkpoint(datamodule.root, tmp_path / "gla.ckpt", attention="gla")
    assert main([str(gla), "--data", root]) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1].split("|")
    assert row[1].strip() == str(gla) and row[2:4] == [" both ", " gla "] and int(row[4]) > 0
    face = fit_checkpoint(datamodule.root, tmp_path / "face.ckpt", inputs="face", attention="none", fusion="none")
    assert main([str(face), "--data", root]) == 2
    assert "face.ckpt: a face-only model has no context attention" in capsys.readouterr().err


def test_companion_visibility_shares(datamodule, capsys) -> None:
    from glamor_lightning.analysis.synth_attention import companion_visibility

    shares = companion_visibility(datamodule.root)
    assert sum(shares.values()) == pytest.approx(1.0) and shares["no companion"] == 0.0
    assert companion_visibility(datamodule.root, context_hw=(112, 112))["whole"] == 1.0  # no crop: all inside
    assert main(["--visibility", "--data", str(datamodule.root)]) == 0
    assert f"companion head in the eval crop: whole {100 * shares['whole']:.1f} %" in capsys.readouterr().out
