"""Mechanics of the remedies for a collapsing fusion gate: modality dropout, gate temperature and floor, the
gate's entropy penalty, the auxiliary losses (issue 17)."""

from __future__ import annotations

import math

import pytest
import torch

from glamor_lightning.losses import gate_negentropy, head_losses, residual_logits, shuffled_partners
from glamor_lightning.models.fusion import FusionNet, create_fusion
from glamor_lightning.models.glamor import GlamorNet, GlamorOutput
from glamor_lightning.models.modality_dropout import drop_modalities
from glamor_lightning.module import EmotionModule


def fusion_inputs(net: GlamorNet, batch: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    """The (v_f, v_c) the fusion receives in one forward pass of `net` on random images."""
    seen = {}
    hook = net.fusion.register_forward_pre_hook(lambda module, args: seen.setdefault("args", args))
    try:
        net(torch.rand(batch, 3, 16, 16), torch.rand(batch, 3, 16, 16))
    finally:
        hook.remove()
    return seen["args"]


def test_modality_dropout_zeroes_whole_branches_at_the_set_rate_in_training_only():
    torch.manual_seed(0)
    net = GlamorNet(modality_dropout=0.3).train()
    v_f, v_c = fusion_inputs(net)
    face_gone, context_gone = (v_f == 0).all(dim=1), (v_c == 0).all(dim=1)
    assert not (face_gone & context_gone).any()  # never both
    assert face_gone.float().mean() == pytest.approx(0.15, abs=0.03)  # p/2 each, 2,000 samples
    assert context_gone.float().mean() == pytest.approx(0.15, abs=0.03)
    v_f, v_c = fusion_inputs(net.eval(), batch=200)
    assert (v_f != 0).any(dim=1).all() and (v_c != 0).any(dim=1).all()


def test_modality_dropout_drops_whole_vectors_and_keeps_the_other_branch_at_scale():
    torch.manual_seed(1)
    v_f, v_c = torch.ones(1000, 4), torch.full((1000, 4), 2.0)
    d_f, d_c = drop_modalities(v_f, v_c, 0.5)
    assert set(d_f.unique().tolist()) == {0.0, 1.0} and set(d_c.unique().tolist()) == {0.0, 2.0}


def test_modality_dropout_guide_drops_a_dropped_face_from_glas_guide_too():
    torch.manual_seed(0)
    seen = {}
    for guide in (False, True):
        net = GlamorNet(modality_dropout=0.5, modality_dropout_guide=guide).train()
        net.attention.register_forward_pre_hook(lambda module, args: seen.update(guide=args[0]))
        net.fusion.register_forward_pre_hook(lambda module, args: seen.update(fused=args[0]))
        net(torch.rand(200, 3, 16, 16), torch.rand(200, 3, 16, 16))
        guide_gone, face_gone = (seen["guide"] == 0).all(dim=1), (seen["fused"] == 0).all(dim=1)
        assert face_gone.sum() > 20  # p/2 of 200
        assert torch.equal(guide_gone, face_gone) if guide else not guide_gone.any()
        net.eval()(torch.rand(50, 3, 16, 16), torch.rand(50, 3, 16, 16))
        assert not (seen["guide"] == 0).all(dim=1).any()  # never in eval


def test_modality_dropout_guide_needs_dropout_and_gla():
    with pytest.raises(ValueError, match="needs modality_dropout > 0"):
        GlamorNet(modality_dropout_guide=True)
    with pytest.raises(ValueError, match="attention='gla' \\(got 'none'\\)"):
        GlamorNet(attention="none", modality_dropout=0.3, modality_dropout_guide=True)


def test_modality_dropout_needs_two_branches():
    with pytest.raises(ValueError, match="set modality_dropout=0"):
        GlamorNet(inputs="face", attention="none", fusion="none", modality_dropout=0.2)


@pytest.mark.parametrize("floor", [0.0, 0.1, 0.25])
def test_the_gate_floor_bounds_each_weight(floor):
    fusion = FusionNet(4, 4, hidden=8, floor=floor)
    with torch.no_grad():  # a scorer that closes the context gate as far as a softmax can
        fusion.context_score[-1].bias.fill_(-1e4)
    _, weights = fusion(torch.rand(5, 4), torch.rand(5, 4))
    assert torch.allclose(weights[:, 1], torch.full((5,), floor), atol=1e-6)
    assert torch.allclose(weights.sum(dim=1), torch.ones(5))


def test_the_gate_temperature_divides_the_scores():
    torch.manual_seed(2)
    cold, hot = FusionNet(4, 4, hidden=8), FusionNet(4, 4, hidden=8, temperature=4.0)
    hot.load_state_dict(cold.state_dict())
    v_f, v_c = torch.rand(3, 4), torch.rand(3, 4)
    scores = torch.cat([cold.face_score(v_f), cold.context_score(v_c)], dim=1)
    assert torch.allclose(hot(v_f, v_c)[1], torch.softmax(scores / 4.0, dim=1), atol=1e-6)


def test_gate_settings_on_a_fusion_without_gate_are_refused():
    with pytest.raises(ValueError, match="fusion 'add' has no gate"):
        create_fusion("add", 4, 4, floor=0.1)
    with pytest.raises(ValueError, match="gate_entropy regularises the fusion net's gate"):
        EmotionModule(fusion="concat", gate_entropy=0.1)


def test_gate_negentropy_is_log_half_when_balanced_and_zero_when_closed():
    assert float(gate_negentropy(torch.tensor([[0.5, 0.5]]))) == pytest.approx(math.log(0.5))
    assert float(gate_negentropy(torch.tensor([[1.0, 0.0]]))) == pytest.approx(0.0, abs=1e-6)


def test_aux_loss_weight_counts_the_auxiliary_heads_in_every_step():
    assert EmotionModule(aux_heads=True, aux_loss_weight=0.5).loss_weights == {
        "fused": 1.0,
        "face": 0.5,
        "context": 0.5,
    }
    with pytest.raises(ValueError, match="set aux_heads=true"):
        EmotionModule(aux_loss_weight=0.5)


def test_residual_context_loss_learns_only_what_the_face_head_does_not_tell():
    target = torch.tensor([0, 0])
    face = torch.tensor([[12.0, 0.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)  # sure and right; unsure
    context = torch.zeros(2, 3, requires_grad=True)
    out = GlamorOutput(torch.zeros(2, 3), torch.ones(2, 1, 1), None, face, context)
    losses = head_losses(out, target, ("context",), residual_context=True)
    losses["context"].backward()
    assert face.grad is None  # the face head is the known expert: detached
    sure, unsure = context.grad.norm(dim=1).tolist()
    assert sure < 1e-4 and unsure > 0.1  # the face already explains sample 0: nothing left to learn there
    plain = head_losses(out, target, ("context",))["context"]
    assert plain.item() == pytest.approx(math.log(3))  # off: the context head's own cross-entropy


def test_residual_logits_are_the_product_of_experts():
    a, b = torch.randn(4, 7), torch.randn(4, 7)
    product = (a.softmax(1) * b.softmax(1)).div((a.softmax(1) * b.softmax(1)).sum(1, keepdim=True))
    assert torch.allclose(residual_logits(a, b).softmax(1), product, atol=1e-6)


def test_residual_context_needs_the_auxiliary_heads():
    assert EmotionModule(aux_heads=True, aux_loss_weight=1.0, residual_context=True).hparams.residual_context
    with pytest.raises(ValueError, match="set aux_heads=true"):
        EmotionModule(residual_context=True)


def test_optimizer_choice_builds_sgd_or_adamw_and_refuses_others():
    assert isinstance(EmotionModule().configure_optimizers()["optimizer"], torch.optim.SGD)
    adamw = EmotionModule(optimizer="adamw", lr=1e-3, weight_decay=0.05).configure_optimizers()["optimizer"]
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["weight_decay"] == 0.05
    with pytest.raises(ValueError, match="optimizer must be one of sgd, adamw; got 'adam'"):
        EmotionModule(optimizer="adam")
    with pytest.raises(ValueError, match="set nesterov=false"):
        EmotionModule(optimizer="adamw", nesterov=True)


def test_lr_scale_gives_a_part_its_own_learning_rate_through_the_schedule():
    from glamor_lightning.schedules import make_schedule

    module = EmotionModule(lr=0.01, lr_scale={"context_encoder": 3.0, "attention": 2.0})
    optimizer = torch.optim.SGD(module.param_groups(), lr=module.hparams.lr, momentum=0.9)
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["context_encoder"] == pytest.approx(0.03) and lrs["attention"] == pytest.approx(0.02)
    assert lrs["face_encoder"] == lrs["fusion"] == pytest.approx(0.01)
    schedule = make_schedule(optimizer, "cosine", 0.01, max_epochs=4)
    schedule.step(), schedule.step()  # half way: cosine at 1/2
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["context_encoder"] == pytest.approx(0.015) and lrs["face_encoder"] == pytest.approx(0.005)


def test_lr_scale_refuses_unknown_parts_and_non_positive_multipliers():
    with pytest.raises(ValueError, match=r"lr_scale names \['context'\]: this model's parts are .*context_encoder"):
        EmotionModule(lr_scale={"context": 3.0})
    # `model.lr_scale={context_encoder:6,attention:6}` unquoted in bash arrives as the string 'attention:6'
    with pytest.raises(ValueError, match=r"lr_scale must map parts to multipliers.*quote it.*got 'attention:6'"):
        EmotionModule(lr_scale="attention:6")
    with pytest.raises(ValueError, match="must be > 0"):
        EmotionModule(lr_scale={"context_encoder": 0.0})


def test_head_guide_reguides_gla_for_the_context_head_only():
    torch.manual_seed(0)
    net = GlamorNet(aux_heads=True).eval()
    with torch.no_grad():  # a trained GLA's scores depend on the face; at initialisation hardly at all
        net.attention.fc2.weight.mul_(1000)
    face, context = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
    partner = torch.tensor([2, 3, 0, 1])
    own, guided = net(face, context), net(face, context, head_guide=partner)
    assert torch.equal(guided.logits, own.logits) and torch.equal(guided.fusion_weights, own.fusion_weights)
    v_f = net.face_encoder(face).mean(dim=(2, 3))
    v_c, _ = net.attention(v_f[partner], net.context_encoder(context))
    feats = net.features(face, context, head_guide=partner)
    assert torch.allclose(feats.head_context, v_c, atol=1e-7) and torch.equal(feats.context, own.context_vector)
    assert (feats.head_context - feats.context).abs().max() > 1e-4  # another face, another place to look
    assert torch.allclose(guided.context_logits, net.context_head(v_c), atol=1e-7)
    assert net.features(face, context).head_context is None


def test_head_guide_sends_the_context_heads_loss_to_the_context_branch_not_the_face():
    torch.manual_seed(0)
    net = GlamorNet(aux_heads=True)
    out = net(torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32), head_guide=torch.tensor([1, 0, 3, 2]))
    out.context_logits.sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in net.face_encoder.parameters())  # the guide is detached
    assert any(p.grad is not None and p.grad.any() for p in net.context_encoder.parameters())


def test_context_head_guide_shuffled_trains_the_head_under_another_samples_face():
    module = EmotionModule(aux_heads=True, aux_loss_weight=1.0, context_head_guide="shuffled", dropout=0.0).train()
    with torch.no_grad():  # GLA's scores made to depend on the face, as a trained GLA's do
        module.net.attention.fc2.weight.mul_(1000)
    face = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    context = torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8)
    target = torch.tensor([0, 0, 1, 1])
    torch.manual_seed(3)
    _, _, out = module._step((face, context, target))
    torch.manual_seed(3)
    partner = shuffled_partners(4)
    expected = module(face, context, head_guide=partner)
    assert torch.allclose(out.context_logits, expected.context_logits, atol=1e-5)
    own = module(face, context).context_logits
    assert (out.context_logits - own).abs().max() > 1e-5
    assert torch.equal(
        module.eval()._step((face, context, target))[2].context_logits, module(face, context).context_logits
    )


def test_shuffled_partners_are_another_sample_drawn_without_regard_to_class():
    torch.manual_seed(0)
    shifts = []
    for _ in range(700):
        partner = shuffled_partners(8)
        assert sorted(partner.tolist()) == list(range(8)) and (partner != torch.arange(8)).all()
        shifts.append(int(partner[0]))
    counts = torch.bincount(torch.tensor(shifts), minlength=8)
    assert counts[0] == 0 and ((counts[1:] - 100).abs() < 40).all()  # every other sample alike, 100 each expected
    assert shuffled_partners(1) is None


def test_context_head_guide_needs_gla_and_the_auxiliary_heads():
    with pytest.raises(ValueError, match="needs aux_heads=true, attention=gla and context_head_input=attention"):
        EmotionModule(context_head_guide="shuffled")
    with pytest.raises(ValueError, match="needs aux_heads=true, attention=gla and context_head_input=attention"):
        EmotionModule(aux_heads=True, attention="standard", context_head_guide="shuffled")
    with pytest.raises(ValueError, match="context_head_guide must be one of own, shuffled; got 'random'"):
        EmotionModule(aux_heads=True, context_head_guide="random")
    with pytest.raises(ValueError, match="needs attention='gla', aux_heads and context_head_input='attention'"):
        GlamorNet()(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32), head_guide=torch.tensor([1, 0]))


def test_a_pooled_context_head_reads_the_context_map_averaged_and_no_face():
    torch.manual_seed(0)
    net = GlamorNet(aux_heads=True, context_head_input="pooled").eval()
    with torch.no_grad():  # GLA's scores made to depend on the face, as a trained GLA's do
        net.attention.fc2.weight.mul_(1000)
    face, context = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
    out = net(face, context)
    expected = net.context_head(net.context_encoder(context).mean(dim=(2, 3)))
    assert torch.allclose(out.context_logits, expected, atol=1e-6)
    other = net(face.flip(0), context)  # every sample under another face: the fused head moves, this head cannot
    assert torch.equal(other.context_logits, out.context_logits)
    assert (other.logits - out.logits).abs().max() > 1e-4
    v_c = net.attention(net.face_encoder(face).mean(dim=(2, 3)), net.context_encoder(context))[0]
    assert torch.allclose(out.context_vector, v_c, atol=1e-6)  # the fusion still gets GLA's v_c


def test_a_pooled_context_heads_loss_trains_the_context_encoder_alone():
    torch.manual_seed(0)
    net = GlamorNet(aux_heads=True, context_head_input="pooled")
    net(torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)).context_logits.sum().backward()
    for part in ("face_encoder", "attention", "fusion", "classifier"):
        assert all(p.grad is None or not p.grad.any() for p in getattr(net, part).parameters()), part
    assert all(p.grad is not None and p.grad.any() for p in net.context_head.parameters())
    assert any(p.grad is not None and p.grad.any() for p in net.context_encoder.parameters())


def test_context_head_input_is_checked():
    with pytest.raises(ValueError, match="context_head_input must be one of attention, pooled; got 'mean'"):
        GlamorNet(aux_heads=True, context_head_input="mean")
    with pytest.raises(ValueError, match="context_head_input='pooled' says what the auxiliary context head reads"):
        EmotionModule(context_head_input="pooled")
    with pytest.raises(ValueError, match="context_head_input=attention; or set context_head_guide=own"):
        EmotionModule(aux_heads=True, context_head_input="pooled", context_head_guide="shuffled")
    net = GlamorNet(aux_heads=True, context_head_input="pooled")
    with pytest.raises(ValueError, match="context_head_input='attention'"):
        net(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32), head_guide=torch.tensor([1, 0]))
