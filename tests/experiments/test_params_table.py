"""`glamor params`: parameter counts per backbone x attention x fusion."""

from __future__ import annotations

import pytest

from glamor_lightning.analysis.params import GLAMOR_NET_PARAMS, count_params, param_table, to_csv, to_markdown
from glamor_lightning.cli import main


def test_original_glamor_net_has_the_authors_count():
    assert GLAMOR_NET_PARAMS == 2_158_602
    assert count_params("original", "gla", "fusion_net") == 2_158_602


def test_paper_figure_gla_without_batchnorm_has_256_fewer():
    assert count_params("original", "gla", "fusion_net", gla_batchnorm=False) == 2_158_602 - 256


def test_table_covers_every_attention_and_fusion(capsys):
    assert main(["params", "--backbones", "original"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "| Backbone | Attention | fusion_net | add | max | concat |"
    assert [line.split(" | ")[1] for line in lines[2:5]] == ["none", "standard", "gla"]
    assert "| original | gla | **2,158,602** |" in out
    rows = param_table(["original"])
    assert len(rows) == 12 and all(r.params for r in rows)
    by = {(r.attention, r.fusion): r.params for r in rows}
    assert by[("gla", "add")] == by[("gla", "max")] < by[("gla", "concat")] < by[("gla", "fusion_net")]
    assert by[("none", "fusion_net")] < by[("gla", "fusion_net")] < by[("standard", "fusion_net")]


def test_invalid_setting_is_reported_not_raised():
    rows = param_table(["original"], ["gla"], ["fusion_net"], inputs="face")
    assert rows[0].params is None and "attention='none'" in rows[0].error
    assert "n/a" in to_markdown(rows) and to_csv(rows).splitlines()[1] == "original,gla,fusion_net,face,"


@pytest.mark.slow
def test_timm_backbones_are_counted():
    rows = {r.backbone: r.params for r in param_table(["mobilenetv2", "resnet18"], ["gla"], ["fusion_net"])}
    assert 3_000_000 < rows["mobilenetv2"] < rows["resnet18"]
