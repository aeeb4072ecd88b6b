"""The authors' TensorFlow GLAMOR-Net imported into ours gives their probabilities; mismatches are named.

The fixture (tests/fixtures/authors_tf, see its `make_fixture.py`) was made once, outside CI, by the
authors' own `model.py` (minhnhatvt/glamor-net at c12e1b9) under TensorFlow 2.15: random weights, random
BatchNorm moving statistics, saved with their `model.save_weights`, and the softmax probabilities their
model gives in inference mode (`training=False`) on 4 fixed face/context pairs. Their model is fed RGB
`uint8 / 255` in NHWC; our `EmotionModule.forward` takes the same uint8 RGB NHWC and divides by 255, and
`GlamorNet` takes the NCHW float: the same numbers, so no preprocessing stands between the two here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from glamor_lightning.checkpoints import load_module, read_checkpoint
from glamor_lightning.cli import main
from glamor_lightning.data.classes import CLASSES
from glamor_lightning.data.contract import CHECKPOINT_KEY, DataContract
from glamor_lightning.import_weights import import_authors_checkpoint
from glamor_lightning.models.glamor import GlamorNet
from glamor_lightning.models.import_authors import (
    AUTHORS_ARCHITECTURE,
    AUTHORS_CLASSES,
    AuthorsWeightsError,
    convert_authors_weights,
)
from glamor_lightning.models.tf_checkpoint import TFCheckpoint

FIXTURE = Path(__file__).parents[1] / "fixtures" / "authors_tf"
PREFIX = FIXTURE / "Model"
EXPECTED = dict(np.load(FIXTURE / "expected.npz"))
V = "/.ATTRIBUTES/VARIABLE_VALUE"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def tensors() -> dict[str, np.ndarray]:
    """Every numeric tensor of the fixture, parsed (copies to alter freely)."""
    ckpt = TFCheckpoint(PREFIX)
    return {n: ckpt[n] for n in ckpt if ckpt.entries[n].dtype is not None}


def _net(state: dict[str, torch.Tensor]) -> GlamorNet:
    net = GlamorNet(**AUTHORS_ARCHITECTURE)
    net.load_state_dict(state)
    return net.eval()


def _nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0)


def _probabilities(net: GlamorNet) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(net(_nchw(EXPECTED["face"]), _nchw(EXPECTED["context"])).logits, dim=1).numpy()


def test_imported_net_gives_their_probabilities(tensors):
    imported = convert_authors_weights(tensors, GlamorNet(**AUTHORS_ARCHITECTURE))
    net = _net(imported.state_dict)
    probs = _probabilities(net)
    theirs = EXPECTED["probabilities"]
    assert probs.shape == theirs.shape == (4, 7)
    assert theirs.max() > 0.5 and theirs.min() < 0.01  # far from uniform: the comparison has teeth
    assert np.abs(probs - theirs).max() < TOLERANCE
    log_ratio = np.log(probs) - np.log(theirs)  # logits agree up to each row's constant
    assert np.abs(log_ratio - log_ratio.mean(axis=1, keepdims=True)).max() < TOLERANCE
    with torch.no_grad():  # each encoder alone (their BatchNorm statistics and Keras epsilon)
        face = net.face_encoder(_nchw(EXPECTED["face"])).mean(dim=(2, 3)).numpy()
        context = net.context_encoder(_nchw(EXPECTED["context"])).permute(0, 2, 3, 1).numpy()
    assert np.abs(face - EXPECTED["face_vector"]).max() < TOLERANCE * np.abs(EXPECTED["face_vector"]).max()
    assert np.abs(context - EXPECTED["context_map"]).max() < TOLERANCE * np.abs(EXPECTED["context_map"]).max()
    assert imported.unused == []  # the fixture dict holds the numeric tensors only (no object graph)
    assert imported.class_order == tuple(range(7)) and imported.root == ""


def test_layouts(tensors):
    state = convert_authors_weights(tensors, GlamorNet(**AUTHORS_ARCHITECTURE)).state_dict
    kernel = tensors[f"FaceEncodingNet/blocks/1/conv/kernel{V}"]  # HWIO [3, 3, 32, 64]
    assert state["face_encoder.body.4.weight"].shape == (64, 32, 3, 3)
    assert state["face_encoder.body.4.weight"][5, 7, 0, 2] == kernel[0, 2, 7, 5]
    dense = tensors[f"final_fc1/kernel{V}"]  # [in 512, out 128]
    assert state["classifier.0.weight"][3, 300] == dense[300, 3]
    moving_var = tensors[f"ContextEncodingNet/blocks/2/bn/moving_variance{V}"]
    np.testing.assert_array_equal(state["context_encoder.body.9.running_var"].numpy(), moving_var)
    np.testing.assert_array_equal(
        state["attention.bn.running_mean"].numpy(), tensors[f"attention_fc1_bn/moving_mean{V}"]
    )


def test_whole_checkpoint_loads_as_ours_and_reproduces(tmp_path):
    report = import_authors_checkpoint(PREFIX, tmp_path / "authors.ckpt")
    assert report.tensors == 80 and report.unused == ["_CHECKPOINTABLE_OBJECT_GRAPH"]
    ckpt = read_checkpoint(tmp_path / "authors.ckpt")  # weights only
    contract = DataContract.from_dict(ckpt[CHECKPOINT_KEY])
    assert (contract.face_size, contract.context_size, contract.crop_size, contract.mask_face) == (
        96, (128, 171), 112, True,
    )  # fmt: skip
    assert contract.class_names == CLASSES
    assert ckpt["imported_from"]["unused_tensors"] == ["_CHECKPOINTABLE_OBJECT_GRAPH"]
    hp = ckpt["hyper_parameters"]
    assert (hp["backbone"], hp["attention"], hp["fusion"], hp["inputs"], hp["gla_batchnorm"]) == (
        "original", "gla", "fusion_net", "both", True,
    )  # fmt: skip
    module = load_module(tmp_path / "authors.ckpt")
    assert module.class_names == list(CLASSES)
    with torch.no_grad():  # the module takes the uint8 RGB NHWC batches of our data module
        out = module(torch.from_numpy(EXPECTED["face"]), torch.from_numpy(EXPECTED["context"]))
    assert np.abs(torch.softmax(out.logits, 1).numpy() - EXPECTED["probabilities"]).max() < TOLERANCE


def test_training_loop_checkpoint_with_optimizer_slots(tensors):
    """Their training loop saves tf.train.Checkpoint(step, optimizer, model): the model under `model/`,
    SGD momentum slots beside each variable. The slots are reported, not used."""
    renamed = {f"model/{n}": v for n, v in tensors.items()}
    slot = f"model/final_fc1/kernel/.OPTIMIZER_SLOT/optimizer/momentum{V}"
    renamed[slot] = np.zeros((512, 128), np.float32)
    renamed[f"optimizer/iter{V}"] = np.array(7)
    renamed[f"step{V}"] = np.array(7)
    imported = convert_authors_weights(renamed, GlamorNet(**AUTHORS_ARCHITECTURE))
    assert imported.root == "model/"
    assert imported.unused == sorted([slot, f"optimizer/iter{V}", f"step{V}"])
    assert np.abs(_probabilities(_net(imported.state_dict)) - EXPECTED["probabilities"]).max() < TOLERANCE


def test_their_class_order_is_converted(tensors):
    """Had their outputs another order, our rows follow the names (their `Angry` is our Anger)."""
    theirs = ("Surprise", "Sad", "Neutral", "Happy", "Fear", "Disgust", "Angry")
    imported = convert_authors_weights(tensors, GlamorNet(**AUTHORS_ARCHITECTURE), their_classes=theirs)
    assert imported.class_order == (6, 5, 4, 3, 2, 1, 0)
    probs = _probabilities(_net(imported.state_dict))
    assert np.abs(probs - EXPECTED["probabilities"][:, ::-1]).max() < TOLERANCE
    assert AUTHORS_CLASSES == CLASSES  # their config.class_names is our order
    with pytest.raises(AuthorsWeightsError, match=r"their classes \['Anger', 'Calm'.* are not ours"):
        convert_authors_weights(tensors, GlamorNet(**AUTHORS_ARCHITECTURE), their_classes=("Anger", "Calm"))


def test_missing_tensor_named(tensors):
    gone = (f"attention_fc1_bn/moving_variance{V}", f"FaceEncodingNet/blocks/0/conv/kernel{V}")
    altered = {n: v for n, v in tensors.items() if n not in gone}
    with pytest.raises(AuthorsWeightsError) as err:
        convert_authors_weights(altered, GlamorNet(**AUTHORS_ARCHITECTURE))
    assert (
        "2 tensor(s) missing: FaceEncodingNet/blocks/0/conv/kernel/.ATTRIBUTES/VARIABLE_VALUE "
        "(for face_encoder.body.0.weight); attention_fc1_bn/moving_variance/.ATTRIBUTES/VARIABLE_VALUE "
        "(for attention.bn.running_var)"
    ) in str(err.value)


def test_wrong_shape_named(tensors):
    altered = dict(tensors)
    altered[f"final_classify/kernel{V}"] = np.zeros((128, 8), np.float32)  # 8 classes
    altered[f"ContextEncodingNet/blocks/0/conv/kernel{V}"] = np.zeros((5, 5, 3, 32), np.float32)
    with pytest.raises(AuthorsWeightsError) as err:
        convert_authors_weights(altered, GlamorNet(**AUTHORS_ARCHITECTURE))
    message = str(err.value)
    assert "2 of another shape" in message
    assert (
        "final_classify/kernel/.ATTRIBUTES/VARIABLE_VALUE has shape (128, 8), GLAMOR-Net's is (128, 7) "
        "(for classifier.3.weight)" in message
    )
    assert (
        "ContextEncodingNet/blocks/0/conv/kernel/.ATTRIBUTES/VARIABLE_VALUE has shape (5, 5, 3, 32), "
        "GLAMOR-Net's is (3, 3, 3, 32) (for context_encoder.body.0.weight)" in message
    )


def test_another_architecture_refused(tensors):
    deeper = dict(tensors)  # a sixth encoder block: not a layout GlamorNet has
    deeper[f"FaceEncodingNet/blocks/5/conv/kernel{V}"] = np.zeros((3, 3, 256, 256), np.float32)
    with pytest.raises(
        AuthorsWeightsError,
        match=r"1 model tensor\(s\) GLAMOR-Net does not have: FaceEncodingNet/blocks/5/conv/kernel/",
    ):
        convert_authors_weights(deeper, GlamorNet(**AUTHORS_ARCHITECTURE))
    other = TFCheckpoint(FIXTURE / "two_shards" / "Bundle")  # any other TF checkpoint
    with pytest.raises(
        AuthorsWeightsError,
        match=r"not the authors' GLAMOR-Net: none of its tensors \(e\.g\. FaceEncodingNet/blocks/0/conv/kernel/"
        r"\.ATTRIBUTES/VARIABLE_VALUE\), nor under model/; the checkpoint has 6 tensors, e\.g\. a/float32",
    ):
        convert_authors_weights(other, GlamorNet(**AUTHORS_ARCHITECTURE))


def test_cli(tmp_path, capsys):
    out = tmp_path / "authors.ckpt"
    assert main(["import-weights", "--format", "glamor-tf", str(PREFIX), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "80 tensors mapped; their class order is the same as ours" in printed
    assert "not used (1, not model weights): _CHECKPOINTABLE_OBJECT_GRAPH" in printed
    assert out.is_file()
    assert main(["import-weights", "--format", "glamor-tf", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "no index file" in capsys.readouterr().err
    other = FIXTURE / "two_shards" / "Bundle"
    assert main(["import-weights", "--format", "glamor-tf", str(other), "--out", str(tmp_path / "x.ckpt")]) == 2
    assert "glamor: error: not the authors' GLAMOR-Net" in capsys.readouterr().err
    assert not (tmp_path / "x.ckpt").exists()
    with pytest.raises(SystemExit):
        main(["import-weights", "--format", "keras-h5", str(PREFIX), "--out", str(out)])


def test_an_imported_checkpoint_predicts_photos_and_exports_like_ours(tmp_path):
    from skimage import data as skdata

    from glamor_lightning.export import export_onnx
    from glamor_lightning.predict import Predictor

    ckpt = import_authors_checkpoint(PREFIX, tmp_path / "authors.ckpt").out
    faces = Predictor.from_checkpoint(ckpt, device="cpu", threshold=0.9).predict(skdata.astronaut())
    assert len(faces) == 1 and faces[0].label in CLASSES
    assert np.isclose(sum(faces[0].probabilities.values()), 1.0, atol=1e-5)
    module = load_module(ckpt)
    onnx_path = export_onnx(module.net, tmp_path / "authors.onnx", module.data_contract)
    assert onnx_path.stat().st_size > 8_000_000  # the whole net, 2.2 M float32 weights
