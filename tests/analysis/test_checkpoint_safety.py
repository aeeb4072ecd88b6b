"""Checkpoint safety: weights-only loading refuses pickled code; a wrong architecture is a clear error."""

from __future__ import annotations

import os
import pickle
import re

import pytest
import torch

from conftest import fit_checkpoint
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
    for argv in (
        ["export", "--ckpt", str(path), "--out", str(tmp_path / "m.onnx")],
        ["predict", "--ckpt", str(path), str(tmp_path), "--out", str(tmp_path / "p")],
    ):
        assert main(argv) == 2
        assert "Refused to load" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "m.onnx").exists()


def test_a_checkpoint_of_another_architecture_names_the_mismatched_keys(ckpt, tmp_path):
    state = torch.load(ckpt, weights_only=True)
    state["hyper_parameters"]["attention"] = "standard"  # the weights are GLA's
    path = tmp_path / "other.ckpt"
    torch.save(state, path)
    with pytest.raises(
        CheckpointError,
        match=r"do not fit the architecture .*attention='standard'.*"
        r"missing key\(s\): net\.attention\.score.*unexpected key\(s\): "
        r"net\.attention\.fc1",
    ):
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
    with pytest.raises(CheckpointError, match=r"junk.ckpt is not a PyTorch checkpoint \(it looks like text\)"):
        read_checkpoint(junk)
    torch.save({"weights": torch.zeros(2)}, junk)
    with pytest.raises(CheckpointError, match="no 'state_dict'"):
        read_checkpoint(junk)
    state = torch.load(ckpt, weights_only=True)
    state["hyper_parameters"]["from_the_future"] = 1
    torch.save(state, junk)
    with pytest.raises(CheckpointError, match="does not know: from_the_future"):
        load_module(junk)


def _onnx_bytes() -> bytes:
    """A real (tiny) ONNX model: Identity from x to y."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    return helper.make_model(graph, producer_name="pytorch").SerializeToString()


def _zip_bytes(tmp_path) -> bytes:
    import zipfile

    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr("notes.txt", "hello")
    return (tmp_path / "a.zip").read_bytes()


def _truncated_checkpoint(tmp_path) -> bytes:
    """The first half of a file torch.save wrote: an interrupted copy."""
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, tmp_path / "whole.ckpt")
    whole = (tmp_path / "whole.ckpt").read_bytes()
    return whole[: len(whole) // 2]


def _png_bytes() -> bytes:
    import cv2
    import numpy as np

    return cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()


NOT_PT = r"is not a PyTorch checkpoint "
#: (file content maker, what the message must say): files that are not checkpoints at all
NOT_CHECKPOINTS = {
    "empty": (lambda tmp: b"", r"is empty \(0 bytes\)"),
    "text": (lambda tmp: b"my best model\nepoch 12\n", NOT_PT + r"\(it looks like text\)"),
    "csv": (lambda tmp: b"path,label\na.png,Happy\nb.png,Sad\n", NOT_PT + r"\(it looks like CSV text\)"),
    "json": (lambda tmp: b'{"state_dict": {}}', NOT_PT + r"\(it looks like JSON text\)"),
    "onnx": (lambda tmp: _onnx_bytes(), NOT_PT + r"\(it looks like an ONNX model"),
    "png": (lambda tmp: _png_bytes(), NOT_PT + r"\(it looks like a PNG image\)"),
    "zip": (_zip_bytes, NOT_PT + r"\(it looks like a zip archive with no data.pkl"),
    "pickle": (
        lambda tmp: pickle.dumps({"state_dict": {}}),
        NOT_PT + r"\(it looks like a Python pickle not written by ",
    ),
    "truncated": (_truncated_checkpoint, NOT_PT + r"\(it looks like a damaged or truncated zip archive"),
    "lfs": (
        lambda tmp: b"version https://git-lfs.github.com/spec/v1\noid sha256:ab12\nsize 123\n",
        NOT_PT + r"\(it looks like a Git LFS pointer",
    ),
}


@pytest.mark.parametrize("kind", NOT_CHECKPOINTS)
def test_a_file_that_is_not_a_checkpoint_says_what_it_is(kind, tmp_path, capsys):
    make, said = NOT_CHECKPOINTS[kind]
    path = tmp_path / "model.ckpt"
    path.write_bytes(make(tmp_path))
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(path))} {said}") as err:
        load_module(path)
    assert "expected a .ckpt written by glamor_lightning.train" in str(err.value)
    _one_line_cli_errors(path, f"{re.escape(str(path))} {said}", tmp_path, capsys)


def test_a_folder_is_not_a_checkpoint_file_and_its_checkpoints_are_named(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "epoch=3.ckpt").write_bytes(b"x")
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    said = (
        rf"{re.escape(str(run))} is a folder, not a checkpoint file \(did you mean "
        rf"{re.escape(str(run / 'checkpoints' / 'last.ckpt'))}\?\).*epoch=3.ckpt"
    )
    with pytest.raises(CheckpointError, match=said):
        load_module(run)
    _one_line_cli_errors(run, said, tmp_path, capsys)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        CheckpointError,
        match=rf"{re.escape(str(empty))} is a folder, not a checkpoint file, and "
        r"holds no .ckpt file",
    ):
        load_module(empty)


def _one_line_cli_errors(path, said: str, tmp_path, capsys) -> None:
    """`glamor predict` and `glamor export` both stop with exit status 2 and the one line `glamor: error: …`."""
    import cv2
    import numpy as np

    photos = tmp_path / "photos"
    photos.mkdir(exist_ok=True)
    cv2.imwrite(str(photos / "photo.png"), np.zeros((64, 64, 3), np.uint8))
    capsys.readouterr()
    for argv in (
        ["export", "--ckpt", str(path), "--out", str(tmp_path / "m.onnx")],
        ["predict", "--ckpt", str(path), str(photos), "--out", str(tmp_path / "p")],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert re.match(f"glamor: error: {said}", err), err


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


def test_a_logs_folder_points_to_its_newest_last_checkpoint(tmp_path):
    """`make eval CKPT=logs`: the runs are four folders down; the newest last.ckpt is named."""
    older = tmp_path / "logs/train/runs/a/checkpoints/last.ckpt"
    newer = tmp_path / "logs/train/runs/b/checkpoints/last.ckpt"
    for i, path in enumerate((older, newer)):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    with pytest.raises(CheckpointError, match=f"did you mean {re.escape(str(newer))}"):
        read_checkpoint(tmp_path / "logs")
