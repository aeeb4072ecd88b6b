"""In-the-wild prediction: MTCNN finds every face, each gets its own masked context, outputs written."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from skimage import data as skdata

from glamor_lightning.annotate import annotate, face_label
from glamor_lightning.cli import main
from glamor_lightning.data.classes import CLASSES
from glamor_lightning.data.geometry import face_crop, masked_context
from glamor_lightning.data.mtcnn import FaceDetector
from glamor_lightning.predict import FacePrediction, Predictor

#: MTCNN's box of the astronaut's face (x1, y1, x2, y2), for a sanity check of where it is
ASTRONAUT_FACE = (181, 62, 268, 172)


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.fixture(scope="module")
def predictor(tiny_ckpt):
    return Predictor.from_checkpoint(tiny_ckpt, device="cpu", threshold=0.9)


@pytest.fixture(scope="module")
def astronaut():
    return np.ascontiguousarray(skdata.astronaut())


def test_one_face_on_the_astronaut(predictor, astronaut):
    faces = predictor.predict(astronaut)
    assert len(faces) == 1
    f = faces[0]
    own = FaceDetector(threshold=0.9).detect([astronaut])[0]
    assert len(own) == 1 and iou(f.box, own[0].box) > 0.99
    assert iou(f.box, ASTRONAUT_FACE) > 0.9
    assert f.score > 0.99 and f.label in CLASSES
    assert set(f.probabilities) == set(CLASSES) and sum(f.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert f.probability == max(f.probabilities.values()) and f.attention is None


def test_the_model_sees_the_face_crop_and_its_own_masked_context(predictor, astronaut):
    box = ASTRONAUT_FACE
    faces, contexts = predictor.model_inputs(astronaut, [box])
    assert faces.shape == (1, 96, 96, 3) and contexts.shape == (1, 112, 112, 3)
    assert torch.equal(faces[0], torch.from_numpy(face_crop(astronaut, box)))
    full = masked_context(astronaut, box)  # 128 x 171, face box zeroed
    assert torch.equal(contexts[0], torch.from_numpy(full[8:120, 29:141]))  # the data module's centre crop


def test_several_faces_in_one_image_one_batch(predictor, astronaut, monkeypatch):
    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    composite = np.concatenate([small, small, small], axis=1)  # three astronauts side by side
    single = FaceDetector(threshold=0.9).detect([small])[0][0].box
    batches = []
    forward = predictor.net.forward  # the folded copy of the module's net (`Predictor.forward`)
    monkeypatch.setattr(predictor.net, "forward", lambda f, c: batches.append(len(f)) or forward(f, c))
    faces = predictor.predict(composite, attention=True)
    assert batches == [3]  # all faces of the image in one batch
    assert len(faces) == 3
    for k, f in enumerate(sorted(faces, key=lambda f: f.box[0])):
        expected = (single[0] + 256 * k, single[1], single[2] + 256 * k, single[3])
        assert iou(f.box, expected) > 0.8, (k, f.box, expected)
        assert f.attention.shape == (7, 7) and f.attention.sum() == pytest.approx(1.0, abs=1e-5)
    # each face was classified with its own face masked: the three contexts differ
    _, contexts = predictor.model_inputs(composite, [f.box for f in faces])
    assert not torch.equal(contexts[0], contexts[1]) and not torch.equal(contexts[1], contexts[2])


def test_predict_command_writes_json_and_annotated_png(tiny_ckpt, predictor, astronaut, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    cv2.imwrite(str(inputs / "astronaut.png"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    three = np.concatenate([small, small[:, ::-1], small], axis=1)
    cv2.imwrite(str(inputs / "three.png"), cv2.cvtColor(three, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(inputs / "blank.png"), np.full((120, 160, 3), 200, np.uint8))  # no face
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "out"
    code = main(["predict", "--ckpt", str(tiny_ckpt), str(inputs), "--out", str(out), "--device", "cpu", "--attention"])
    captured = capsys.readouterr()
    assert code == 1  # one file could not be read; the others were predicted
    assert "broken.jpg" in captured.err and "3 image(s) predicted, 1 unreadable" in captured.out

    record = json.loads((out / "astronaut.json").read_text())
    assert record["width"] == 512 and record["height"] == 512 and len(record["faces"]) == 1
    face = record["faces"][0]
    assert set(face) >= {"number", "box", "score", "label", "probability", "probabilities"}
    assert face["number"] == 1 and "most confident" in record["order"]
    assert iou(face["box"], ASTRONAUT_FACE) > 0.9 and face["label"] in CLASSES
    annotated = cv2.imread(str(out / "astronaut.png"))
    assert annotated.shape == (512, 512, 3)
    x1, y1 = (int(round(v)) for v in face["box"][:2])
    assert not np.array_equal(annotated[y1, x1 + 5], cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR)[y1, x1 + 5])
    assert face["attention_figure"] == "astronaut_face1.png" and (out / face["attention_figure"]).is_file()
    assert isinstance(face["attention_uniform"], bool)
    assert cv2.imread(str(out / "astronaut_face1_attention.png")).shape == (112, 112, 3)
    # the figure's context panel is exactly what the model saw of that face
    _, seen = predictor.face_inputs(astronaut, predictor.predict(astronaut)[0].box)
    assert np.array_equal(cv2.imread(str(out / "astronaut_face1_context.png")), cv2.cvtColor(seen, cv2.COLOR_RGB2BGR))

    # several faces: numbered 1, 2, 3 most confident first, as drawn (#k) and as the figures are named
    faces3 = json.loads((out / "three.json").read_text())["faces"]
    assert [f["number"] for f in faces3] == [1, 2, 3]
    assert [f["score"] for f in faces3] == sorted((f["score"] for f in faces3), reverse=True)
    assert [f["attention_figure"] for f in faces3] == [f"three_face{k}.png" for k in (1, 2, 3)]
    assert "#1 " in captured.out and "#3 " in captured.out

    blank = json.loads((out / "blank.json").read_text())
    assert blank["faces"] == [] and "no face" in blank["message"]
    broken = json.loads((out / "broken.json").read_text())
    assert "broken.jpg" in broken["error"] and broken["faces"] == []


def test_annotate_draws_boxes_without_touching_the_input():
    image = np.zeros((100, 200, 3), np.uint8)
    pred = FacePrediction((20, 30, 60, 80), 0.99, "Happy", 0.8, {c: 1 / 7 for c in CLASSES})
    out = annotate(image, [pred])
    assert out.shape == image.shape and image.max() == 0 and out[55, 20].any()


def test_annotate_numbers_the_faces_in_the_order_given():
    """Face k of the list is labelled `#k label probability`: the label band is as wide as that text."""
    probs = {c: 1 / 7 for c in CLASSES}
    preds = [
        FacePrediction((20, 40, 60, 90), 0.99, "Happy", 0.93, probs),
        FacePrediction((120, 40, 160, 90), 0.95, "Sad", 0.51, probs),
    ]
    assert [face_label(k, p) for k, p in enumerate(preds, start=1)] == ["#1 Happy 0.93", "#2 Sad 0.51"]
    out = annotate(np.zeros((100, 300, 3), np.uint8), preds)
    for k, p in enumerate(preds, start=1):
        x1, y1 = int(p.box[0]), int(p.box[1])
        (tw, _), _ = cv2.getTextSize(face_label(k, p), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        band = out[y1 - 6, x1:].any(axis=1)  # a row through the filled label background, right of the box edge
        width = int(np.argmin(band)) if not band.all() else len(band)
        assert width == tw + 5, (k, width, tw)  # the background spans x1 .. x1 + tw + 4


def test_face_inputs_are_the_rows_of_model_inputs(predictor, astronaut):
    boxes = [ASTRONAUT_FACE, (20, 20, 120, 140)]
    faces, contexts = predictor.model_inputs(astronaut, boxes)
    for i, box in enumerate(boxes):
        face, context = predictor.face_inputs(astronaut, box)
        assert np.array_equal(faces[i].numpy(), face) and np.array_equal(contexts[i].numpy(), context)


def test_bad_inputs_are_clear_errors(predictor):
    with pytest.raises(ValueError, match="uint8"):
        predictor.predict(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="HxWx3"):
        predictor.predict(np.zeros((10, 10, 5), np.uint8))


def test_the_predictor_takes_its_geometry_and_classes_from_the_data_contract(synth_root, astronaut):
    """A model trained on other sizes (and with the face left visible) gets exactly those inputs."""
    from glamor_lightning.data.datamodule import EmotionDataModule
    from glamor_lightning.module import EmotionModule

    module = EmotionModule()
    module.bind_data(
        EmotionDataModule(
            str(synth_root), face_size=64, context_size=(80, 107), crop_size=64, mask_face=False, cache_workers=0
        )
    )
    predictor = Predictor(module, device="cpu")
    box = ASTRONAUT_FACE
    faces, contexts = predictor.model_inputs(astronaut, [box])
    assert faces.shape == (1, 64, 64, 3) and contexts.shape == (1, 64, 64, 3)
    assert torch.equal(faces[0], torch.from_numpy(face_crop(astronaut, box, size=64)))
    full = masked_context(astronaut, box, size_hw=(80, 107), mask=False)  # the face stays visible
    assert torch.equal(contexts[0], torch.from_numpy(full[8:72, 21:85]))  # centre 64x64 crop
    (face,) = predictor.classify(astronaut, [box], attention=True)
    assert list(face.probabilities) == list(module.data_contract.class_names)


def test_detector_runs_mtcnn_channels_last_with_facenets_own_boxes(astronaut):
    """Channels-last MTCNN networks (for speed) find exactly what facenet-pytorch's own MTCNN finds."""
    from facenet_pytorch import MTCNN

    detector = FaceDetector(threshold=0.9)
    for net in (detector.mtcnn.pnet, detector.mtcnn.rnet, detector.mtcnn.onet):
        assert net.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    plain = MTCNN(keep_all=True, min_face_size=20, post_process=False, select_largest=False)
    scene = np.concatenate([cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)] * 3, axis=1)
    for image in (astronaut, scene):
        boxes, probs = plain.detect(image)
        ours = FaceDetector(threshold=0.9).detect([image])[0]
        expected = sorted((tuple(b), p) for b, p in zip(boxes, probs) if p >= 0.9)
        assert len(ours) == len(expected) > 0
        for d, (b, p) in zip(sorted(ours, key=lambda d: d.box), expected):
            np.testing.assert_allclose(d.box, b, atol=1e-2)
            assert d.score == pytest.approx(p, abs=1e-5)


def test_the_predictors_folded_net_runs_relu6_in_place_and_predicts_what_the_module_does(astronaut):
    """Training runs timm's ReLU6 out of place (autograd would clone in place); the predictor's copy, which never
    computes gradients, runs them in place again and gives the module's own probabilities."""
    from torch import nn

    from glamor_lightning.module import EmotionModule

    torch.manual_seed(0)
    module = EmotionModule(backbone="mobilenetv2", pretrained=False)
    predictor = Predictor(module, device="cpu")
    relu6 = [m for m in predictor.net.modules() if isinstance(m, nn.Hardtanh)]
    assert len(relu6) == 68 and all(m.inplace for m in relu6)
    assert not any(m.inplace for m in module.modules() if isinstance(m, nn.Hardtanh))  # the module is untouched
    faces, contexts = predictor.model_inputs(astronaut, [ASTRONAUT_FACE])
    with torch.no_grad():
        expected = module(faces, contexts).logits.softmax(dim=1)[0]
    (face,) = predictor.classify(astronaut, [ASTRONAUT_FACE])
    assert list(face.probabilities.values()) == pytest.approx(expected.tolist(), abs=1e-4)
