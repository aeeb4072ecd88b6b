"""The collapse diagnostics (`callbacks.branch_diagnostics`) on real validation runs: a model whose context
vector is always zero has no context in its decision; one whose face vector is zero decides by the context."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import cpu_trainer, make_datamodule
from glamor_lightning.callbacks.branch_diagnostics import (
    BranchDiagnostics,
    attention_entropy,
    branch_effects,
    context_under_other_face,
    grad_norm_vector,
    other_class_partners,
)
from glamor_lightning.module import EmotionModule, to_float_nchw


def silence(encoder: torch.nn.Module) -> None:
    """Make an encoder output zeros: its last BatchNorm's scale and shift set to 0 (then ReLU, pool: 0)."""
    last_bn = [m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)][-1]
    with torch.no_grad():
        last_bn.weight.zero_()
        last_bn.bias.zero_()


def calibrate_batchnorm(net: torch.nn.Module, face: torch.Tensor, context: torch.Tensor) -> None:
    """Give an untrained net's BatchNorms the statistics of one batch (their defaults shrink every feature to
    almost nothing in eval mode), then put it in eval mode."""
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: after one batch, that batch's statistics
    with torch.no_grad():
        net.train()(face, context)
    net.eval()


def validate(module: EmotionModule, synth_root, **data) -> dict[str, float]:
    dm = make_datamodule(synth_root, **data)
    module.bind_data(dm)
    trainer = cpu_trainer(
        callbacks=[BranchDiagnostics()],
    )
    return {k: float(v) for k, v in trainer.validate(module, datamodule=dm, verbose=False)[0].items()}


@pytest.fixture
def module():
    torch.manual_seed(0)
    return EmotionModule(fusion="add", channels_last=False)


def test_a_model_whose_context_is_zeroed_has_no_context_share(module, synth_root):
    silence(module.net.context_encoder)
    m = validate(module, synth_root)
    assert m["val/context_flip"] == 0.0
    assert m["val/acc_without_context"] == pytest.approx(m["val/acc"])


def test_a_model_whose_face_is_zeroed_loses_nothing_without_it(module, synth_root):
    silence(module.net.face_encoder)
    m = validate(module, synth_root)
    assert m["val/acc_without_face"] == pytest.approx(m["val/acc"])


def test_a_context_that_moves_the_decision_has_a_share():
    """Without the face, the fused head's answer follows v_c; with v_c zeroed too, it is one constant class."""
    torch.manual_seed(3)
    net = EmotionModule(fusion="concat", channels_last=False).net.eval()
    v_f, v_c = torch.zeros(256, 256), torch.randn(256, 256) * 10
    target = torch.randint(0, 7, (256,))
    effects = branch_effects(net, v_f, v_c, target)
    intact = net.decide(v_f, v_c)[0].argmax(dim=1)
    constant = net.decide(v_f, torch.zeros_like(v_c))[0].argmax(dim=1)
    assert len(intact.unique()) > 1 and len(constant.unique()) == 1
    assert float(effects["val/context_flip"]) == pytest.approx(float((intact != constant[0]).float().mean()))
    assert float(effects["val/context_flip"]) > 0.3


def test_a_single_branch_model_logs_no_branch_diagnostics(synth_root):
    m = validate(EmotionModule(inputs="face", attention="none", fusion="none", channels_last=False), synth_root)
    assert not [k for k in m if "without" in k or "flip" in k]


def test_gradient_norms_per_branch_and_zero_for_a_frozen_part():
    module = EmotionModule(channels_last=False)
    optimizer = torch.optim.SGD(module.param_groups(), lr=0.1)
    out = module(
        torch.randint(0, 255, (2, 96, 96, 3), dtype=torch.uint8),
        torch.randint(0, 255, (2, 112, 112, 3), dtype=torch.uint8),
    )
    out.logits.sum().backward()
    for p in module.net.attention.parameters():
        p.grad = None  # as StageScheduler leaves a frozen part
    names, vector = grad_norm_vector(optimizer)
    norms = dict(zip(names, vector, strict=True))
    expected = torch.stack([p.grad.norm() for p in module.net.face_encoder.parameters()]).norm()
    assert norms["face_encoder"] == pytest.approx(float(expected), rel=1e-5)
    assert norms["context_encoder"] > 0 and norms["attention"] == 0.0


def test_other_class_partners_pair_each_sample_with_the_next_of_another_class():
    assert other_class_partners(torch.tensor([0, 0, 1, 1, 2])).tolist() == [2, 2, 4, 4, 0]
    assert other_class_partners(torch.tensor([3, 3, 3])) is None


def test_context_under_another_face_guides_gla_with_a_face_of_another_class():
    torch.manual_seed(3)
    net = EmotionModule(channels_last=False).net
    context = torch.rand(16, 3, 64, 64)
    calibrate_batchnorm(net, torch.rand(16, 3, 32, 32), context)
    v_f = 5 * torch.randn(16, net.attention.face_dim)  # distinct faces (an untrained encoder barely tells them apart)
    target = torch.arange(16) % 4  # partners: the next sample
    with torch.no_grad():
        fmap = net.context_encoder(context)

        def context_alone(guide: torch.Tensor) -> torch.Tensor:
            return net.decide(torch.zeros_like(v_f), net.attention(guide, fmap)[0])[0].argmax(dim=1)

        other, own = context_alone(v_f.roll(-1, dims=0)), context_alone(v_f)
    assert (other != own).any()  # the guide matters to GLA: the check below can tell the two apart
    measured = float(context_under_other_face(net, v_f, fmap, target))
    assert measured == pytest.approx(float((other == target).float().mean()))
    assert measured != pytest.approx(float((own == target).float().mean()))
    assert context_under_other_face(net, v_f, fmap, torch.zeros(16, dtype=torch.long)) is None


def test_the_other_face_check_reuses_the_validations_context_map(module, synth_root):
    """The context encoder runs once per validation batch: the check takes the map the validation forward made
    (it used to encode every validation context a second time, 37 % of a MobileNetV2 validation's time)."""
    calls = []
    hook = module.net.context_encoder.register_forward_hook(lambda m, i, o: calls.append(len(o)))
    dm = make_datamodule(synth_root, eval_batch_size=6)
    module.bind_data(dm)
    metrics = cpu_trainer(callbacks=[BranchDiagnostics()]).validate(module, datamodule=dm, verbose=False)[0]
    hook.remove()
    assert 0.0 <= float(metrics["val/acc_context_other_face"]) <= 1.0
    assert sum(calls) == len(dm.dataset("val")) and all(n <= 6 for n in calls)
    assert len(module.net.context_encoder._forward_hooks) == 0  # the callback's hook is gone after validation


def test_the_other_face_check_is_logged_for_gla_only(module, synth_root):
    assert "val/acc_context_other_face" in validate(module, synth_root)
    torch.manual_seed(0)
    plain = EmotionModule(fusion="add", attention="none", channels_last=False)
    assert "val/acc_context_other_face" not in validate(plain, synth_root)


def test_attention_entropy_is_one_for_a_uniform_map_and_zero_for_one_cell():
    uniform = torch.full((2, 4, 6), 1 / 24)
    one_cell = torch.zeros(2, 4, 6)
    one_cell[:, 1, 2] = 1.0
    two_of_four = torch.tensor([[[0.5, 0.5], [0.0, 0.0]]])
    assert attention_entropy(uniform).tolist() == pytest.approx([1.0, 1.0])
    assert attention_entropy(one_cell).tolist() == [0.0, 0.0]
    assert attention_entropy(two_of_four).item() == pytest.approx(math.log(2) / math.log(4))
    with pytest.raises(ValueError, match="two cells or more"):
        attention_entropy(torch.ones(3, 1, 1))


def test_attention_entropy_is_logged_for_learnt_attentions_only(synth_root):
    """A GLA whose scores are all equal (its last layer zeroed) attends uniformly: 1 exactly; an untrained one
    with random weights, its batch norms given real statistics, already prefers some cells: below 1. Average
    pooling and face only log none."""
    torch.manual_seed(0)
    gla = EmotionModule(channels_last=False)
    face, context = next(iter(make_datamodule(synth_root).val_dataloader()))[:2]
    calibrate_batchnorm(gla.net, to_float_nchw(face, False), to_float_nchw(context, False))
    assert 0.0 < validate(gla, synth_root)["val/attention_entropy"] < 0.9999
    with torch.no_grad():
        gla.net.attention.fc2.weight.zero_()
        gla.net.attention.fc2.bias.zero_()
    assert validate(gla, synth_root)["val/attention_entropy"] == pytest.approx(1.0, abs=1e-6)
    context_only = EmotionModule(inputs="context", attention="standard", fusion="none", channels_last=False)
    assert 0.0 < validate(context_only, synth_root)["val/attention_entropy"] <= 1.0
    for plain in (
        EmotionModule(fusion="add", attention="none", channels_last=False),
        EmotionModule(inputs="face", attention="none", fusion="none", channels_last=False),
    ):
        assert "val/attention_entropy" not in validate(plain, synth_root)


def test_one_class_batches_count_nothing_in_the_other_face_check(module, synth_root):
    labels = make_datamodule(synth_root).dataset("val").labels
    assert (labels[:3] == labels[0]).all() and (labels[3:6] == labels[3]).all()  # in class order, 3 per class
    alone = validate(module, synth_root, eval_batch_size=3)["val/acc_context_other_face"]
    assert math.isnan(alone)  # every batch one class: nothing to measure, and nothing breaks
    assert 0.0 <= validate(module, synth_root, eval_batch_size=6)["val/acc_context_other_face"] <= 1.0


def test_the_gradient_norms_are_sampled_every_n_steps_and_survive_a_resume_mid_epoch():
    """The epoch's sums are over every n-th optimiser step from the epoch's first (here steps 0, 2, 4 of 5), the
    norms of those steps' gradients; they are kept in the callback (one log call per epoch, not per step), so
    they and the sampling's phase are part of its checkpointed state: a run resumed after step 3 samples the
    steps, and ends the epoch with the sums, of the run never stopped."""
    torch.manual_seed(0)
    module = EmotionModule(channels_last=False).eval()  # no dropout: the same batch, the same gradients
    optimizer = torch.optim.SGD(module.param_groups(), lr=0.1)
    batches = [
        (
            torch.randint(0, 255, (2, 96, 96, 3), dtype=torch.uint8),
            torch.randint(0, 255, (2, 112, 112, 3), dtype=torch.uint8),
        )
        for _ in range(5)
    ]

    def step(callback: BranchDiagnostics, batch) -> None:
        optimizer.zero_grad()
        module(*batch).logits.sum().backward()
        callback.on_before_optimizer_step(None, module, optimizer)

    expected = {}
    for i in (0, 2, 4):
        optimizer.zero_grad()
        module(*batches[i]).logits.sum().backward()
        for name, norm in zip(*grad_norm_vector(optimizer), strict=True):
            expected[name] = expected.get(name, 0.0) + float(norm)
    never_stopped, before_the_kill = (
        BranchDiagnostics(grad_norm_every_n_steps=2),
        BranchDiagnostics(grad_norm_every_n_steps=2),
    )
    for batch in batches:
        step(never_stopped, batch)
    for batch in batches[:3]:
        step(before_the_kill, batch)
    resumed = BranchDiagnostics(grad_norm_every_n_steps=2)
    resumed.load_state_dict(before_the_kill.state_dict())
    for batch in batches[3:]:
        step(resumed, batch)
    assert resumed.grad_norm_steps == never_stopped.grad_norm_steps == 3
    assert set(resumed.grad_norm_sums) == {"face_encoder", "context_encoder", "attention"}
    for name, total in never_stopped.grad_norm_sums.items():
        assert float(resumed.grad_norm_sums[name]) == float(total) > 0
        assert float(total) == pytest.approx(expected[name], rel=1e-5)
    every = BranchDiagnostics(grad_norm_every_n_steps=1)
    for batch in batches:
        step(every, batch)
    assert every.grad_norm_steps == 5


def test_a_gradient_norm_interval_below_one_is_refused():
    with pytest.raises(ValueError, match="grad_norm_every_n_steps must be 1 or more"):
        BranchDiagnostics(grad_norm_every_n_steps=0)
