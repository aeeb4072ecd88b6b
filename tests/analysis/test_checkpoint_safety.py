"""Checkpoint safety: weights-only loading refuses pickled code; a wrong architecture is a clear error."""
from __future__ import annotations

import os

import pytest
import torch

from analysis_ckpt import fit_checkpoint
from glamor_lightning.checkpoints import CheckpointError, load_module, read_checkpoint
from glamor_lightning.cli import main


class Payload:
    """Unpickling this runs `os.system(...)`: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def ckpt(synth_root, tmp_path_factory):
    return fit_checkpoint(synth_root, tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


def test_the_payload_really_runs_code_when_unpickled_unsafely(tmp_path):
    marker = tmp_path / "marker"
    torch.save({"x": Payload(marker)}, tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)  # what must never happen in glamor
    assert marker.exists()


def test_a_malicious_checkpoint_is_refused_and_runs_nothing(ckpt, tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = torch.load(ckpt, weights_only=True)
    evil["hyper_parameters"]["note"] = Payload(marker)  # a valid checkpoint with a payload inside
    path = tmp_path / "evil.ckpt"
    torch.save(evil, path)
    with pytest.raises(CheckpointError, match=r"Refused to load .*evil.ckpt: .*import and run .*posix.system"):
        load_module(path)
    assert not marker.exists()
    import cv2
    import numpy as np

    cv2.imwrite(str(tmp_path / "photo.png"), np.zeros((64, 64, 3), np.uint8))
    for argv in (["export", "--ckpt", str(path), "--out", str(tmp_path / "m.onnx")],
                 ["predict", "--ckpt", str(path), str(tmp_path), "--out", str(tmp_path / "p")]):
        assert main(argv) == 2
        assert "Refused to load" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "m.onnx").exists()


def test_a_checkpoint_of_another_architecture_names_the_mismatched_keys(ckpt, tmp_path):
    state = torch.load(ckpt, weights_only=True)
    state["hyper_parameters"]["attention"] = "standard"  # the weights are GLA's
    path = tmp_path / "other.ckpt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"do not fit the architecture .*attention='standard'.*"
                                              r"missing key\(s\): net\.attention\.score.*unexpected key\(s\): "
                                              r"net\.attention\.fc1"):
        load_module(path)
    state = torch.load(ckpt, weights_only=True)
    state["hyper_parameters"]["hidden"] = 64
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"shape mismatch\(es\) \(checkpoint vs model\): net\..* \(128,"):
        load_module(path)


def test_bad_files_are_clear_errors(ckpt, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_module(tmp_path / "nope.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="Refused to load .*junk.ckpt: it is not a weights-only PyTorch"):
        read_checkpoint(junk)
    torch.save({"weights": torch.zeros(2)}, junk)
    with pytest.raises(CheckpointError, match="no 'state_dict'"):
        read_checkpoint(junk)
    state = torch.load(ckpt, weights_only=True)
    state["hyper_parameters"]["from_the_future"] = 1
    torch.save(state, junk)
    with pytest.raises(CheckpointError, match="does not know: from_the_future"):
        load_module(junk)


def test_a_good_checkpoint_loads_with_its_weights(ckpt):
    module = load_module(ckpt)
    assert not module.training
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    for k, v in module.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_metric_states_may_be_missing_but_weights_may_not(ckpt, tmp_path):
    """Checkpoints of other versions may lack the metric states kept for resuming; that is no mismatch."""
    state = torch.load(ckpt, weights_only=True)
    state["state_dict"] = {k: v for k, v in state["state_dict"].items() if k.startswith("net.")}
    path = tmp_path / "old.ckpt"
    torch.save(state, path)
    module = load_module(path)
    assert torch.equal(module.state_dict()["net.classifier.3.weight"], state["state_dict"]["net.classifier.3.weight"])
    del state["state_dict"]["net.classifier.3.weight"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\): net\.classifier\.3\.weight"):
        load_module(path)
