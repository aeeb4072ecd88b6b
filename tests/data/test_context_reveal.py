"""The context-reveal curriculum: its schedule, its draws, and what the training loader hands out."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_datamodule
from glamor_lightning.data.reveal import ContextReveal


def test_share_falls_linearly_to_zero():
    reveal = ContextReveal(np.zeros((1, 1, 1, 3), np.uint8), start=0.8, epochs=4)
    assert [reveal.probability(e) for e in range(6)] == pytest.approx([0.8, 0.6, 0.4, 0.2, 0.0, 0.0])


def test_draws_follow_the_share_and_are_seeded():
    reveal = ContextReveal(np.zeros((1, 1, 1, 3), np.uint8), start=1.0, epochs=4, seed=3)
    rows = range(4000)
    for epoch, share in ((0, 1.0), (1, 0.75), (2, 0.5), (4, 0.0)):
        drawn = np.mean([reveal.reveals(epoch, r) for r in rows])
        assert drawn == pytest.approx(share, abs=0.03), epoch
    again = ContextReveal(np.zeros((1, 1, 1, 3), np.uint8), start=1.0, epochs=4, seed=3)
    other = ContextReveal(np.zeros((1, 1, 1, 3), np.uint8), start=1.0, epochs=4, seed=4)
    first = [reveal.reveals(2, r) for r in rows]
    assert first == [again.reveals(2, r) for r in rows]
    assert first != [other.reveals(2, r) for r in rows]


@pytest.mark.parametrize(
    ("start", "epochs", "names"),
    [(1.5, 4, "data.context_reveal=1.5"), (-0.1, 4, "data.context_reveal=-0.1"), (0.5, 0, "context_reveal_epochs")],
)
def test_impossible_schedules_are_refused(start, epochs, names):
    with pytest.raises(ValueError, match=names.replace(".", r"\.")):
        ContextReveal(np.zeros((1, 1, 1, 3), np.uint8), start=start, epochs=epochs)


def test_training_contexts_show_the_face_early_then_never(synth_root):
    dm = make_datamodule(synth_root, context_reveal=1.0, context_reveal_epochs=2, augment=False)
    masked = make_datamodule(synth_root, augment=False).dataset("train")
    visible = make_datamodule(synth_root, mask_face=False, augment=False).dataset("train")
    assert dm.visible_cache is not None
    train = dm.dataset("train")
    # rows whose face lies inside the 112 centre crop (the mask shows), where the two contexts differ
    rows = [i for i in range(len(train)) if not _equal(masked, visible, 0, i)]
    assert len(rows) > 20

    def share_visible(epoch: int) -> float:
        return float(np.mean([_equal(train, visible, epoch, i) for i in rows]))

    assert share_visible(0) == 1.0  # epoch 0: every context shows its face
    assert share_visible(1) == pytest.approx(0.5, abs=0.25)  # epoch 1: about half
    assert share_visible(2) == share_visible(3) == 0.0  # from epoch 2 on: masked, as the paper says
    assert all(_equal(train, masked, 2, i) for i in range(len(train)))
    for stage in ("val", "test"):  # never in evaluation
        ev, ev_masked = dm.dataset(stage), make_datamodule(synth_root).dataset(stage)
        assert all(_equal(ev, ev_masked, 0, i) for i in range(len(ev)))


def _equal(a, b, epoch: int, i: int) -> bool:
    return bool((a[(epoch, i)][1] == b[(epoch, i)][1]).all())


def test_reveal_is_refused_when_contexts_are_not_masked(synth_root):
    with pytest.raises(ValueError, match="data.context_reveal=0"):
        make_datamodule(synth_root, mask_face=False, context_reveal=0.5, context_reveal_epochs=2)
