"""`python -m glamor_lightning.analysis.head_product`: each head's test accuracy and the product of the two
auxiliary heads, on real checkpoints and the SynthCAER test split."""

from __future__ import annotations

import pytest
import torch

from conftest import fit_checkpoint
from glamor_lightning.analysis.head_product import HEADS, head_accuracies, main
from glamor_lightning.checkpoints import module_from_checkpoint, read_checkpoint
from glamor_lightning.data import contract
from glamor_lightning.losses import residual_logits


def test_each_head_and_the_product_are_counted_over_the_test_split(synth_root, tmp_path, capsys):
    path = fit_checkpoint(synth_root, tmp_path / "aux.ckpt", aux_heads=True, aux_loss_weight=1.0)
    ckpt = read_checkpoint(path)
    module = module_from_checkpoint(ckpt, path).float()
    dm = contract.test_ready_datamodule(ckpt, module.data_contract)
    # the same figures by hand: every test image once, each head's argmax against the label
    right, n = torch.zeros(4), 0
    with torch.no_grad():
        for face, context, target, *_ in dm.test_dataloader():
            out = module.eval()(face, context)
            product = residual_logits(out.context_logits, out.face_logits)
            heads = (out.logits, out.face_logits, out.context_logits, product)
            right += torch.tensor([float((x.argmax(1) == target).sum()) for x in heads])
            n += len(target)
    assert n == len(dm.dataset("test")) > 0
    expected = dict(zip(HEADS, (100 * right / n).tolist()))
    assert head_accuracies(module, dm) == pytest.approx(expected)
    assert main([str(path)]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {path} |")]
    assert row == [f"| {path} | " + " | ".join(f"{expected[h]:.1f}" for h in HEADS) + " |"]


def test_a_model_without_auxiliary_heads_is_refused_in_one_line(tiny_ckpt, capsys):
    assert main([str(tiny_ckpt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "head_product: error: the model has no auxiliary heads (trained without model.aux_heads=true)"
    )
    assert err.count("\n") == 1
