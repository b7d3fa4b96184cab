"""Defenses and the CAFE term (method.md section 5): losses match hand computations on a tiny
net, AWP's perturbation is applied and removed around one step, frozen helpers never change."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cafe_core.data.datasets import ImageTensors
from cafe_core.training.defense_stage import DefenseStage
from cafe_core.defenses import (DEFENSES, CafeMode, CafeTerm, WeightPerturbation, build_cafe, build_defense,
                                perturbed)
from cafe_core.models.estimator import create_estimator
from cafe_core.training.trainer import Precision
from tests.conftest import torch_threads

CPU = torch.device("cpu")
EPS = 0.1


@pytest.fixture(autouse=True)
def one_thread():
    """A training job shares this machine; keep each test on one core and seeded."""
    with torch_threads(1):
        torch.manual_seed(0)
        yield


class TinyNet(nn.Module):
    """f = conv + BatchNorm (4x7x7 feature), c = flatten + Linear; enough to exercise every term."""

    num_classes = 10
    feature_channels = 4

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, stride=4, padding=1), nn.BatchNorm2d(4))
        self.fc = nn.Linear(4 * 7 * 7, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def head(self, feature: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(feature).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def batch(n: int = 4, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, x_adv, y): x_adv is a fixed perturbation (loss checks need no attack)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g)
    x_adv = torch.clamp(x + EPS * torch.sign(torch.randn(x.shape, generator=g)), 0, 1)
    return x, x_adv, torch.arange(n) % 10


def hand_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return -torch.stack([torch.log_softmax(row, 0)[y] for row, y in zip(logits, labels)]).mean()


def hand_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(softmax(p) || softmax(q))."""
    p, q = torch.softmax(p_logits, 1), torch.softmax(q_logits, 1)
    return (p * (p.log() - q.log())).sum(1)


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- registry
def test_registry_lists_the_five_defenses_and_rejects_unknown_names():
    assert DEFENSES.names() == ["adv", "awp", "help", "mart", "trades"]
    with pytest.raises(KeyError, match="unknown defense 'pgdat'; known: adv, awp, help, mart, trades"):
        build_defense("pgdat", EPS)
    with pytest.raises(ValueError, match="std_model"):
        build_defense("help", EPS)
    assert build_defense("TRADES", EPS).beta == 2 and build_defense("mart", EPS).beta == 3
    assert build_defense("awp", EPS).beta == 4 and build_defense("help", EPS, std_model=TinyNet()).beta == 4


# ----------------------------------------------------------------------------- losses
def test_adv_loss_is_ce_on_adversarial():
    net, (x, xa, y) = TinyNet().train(), batch()
    loss, logs = build_defense("adv", EPS).loss(net, x, y, xa)
    assert torch.allclose(loss, hand_ce(net(xa), y), atol=1e-6)
    assert set(logs) >= {"ce_adv", "adv_acc"}


@pytest.mark.parametrize("name,beta", [("trades", 2.0), ("awp", 4.0)])
def test_trades_and_awp_losses_match_hand_computation(name, beta):
    net, (x, xa, y) = TinyNet().train(), batch()
    loss, _ = build_defense(name, EPS).loss(net, x, y, xa)
    zc, za = net(x), net(xa)
    expected = hand_ce(zc, y) + beta * hand_kl(zc, za).mean()
    assert torch.allclose(loss, expected, atol=1e-6)
    assert hand_kl(zc, za).mean() > 0  # the KL term actually contributes


def test_mart_loss_matches_hand_computation():
    net, (x, xa, _) = TinyNet().train(), batch()
    za = net(xa).detach()
    # Labels: the adversarial top class for two images (y' is then the runner-up), another for two.
    order = za.argsort(1, descending=True)
    y = torch.stack([order[0, 0], order[1, 0], order[2, 3], order[3, 5]])
    loss, _ = build_defense("mart", EPS).loss(net, x, y, xa)
    zc, za = net(x), net(xa)
    pa, pc = torch.softmax(za, 1), torch.softmax(zc, 1)
    terms, robust = [], []
    for i in range(4):
        wrong = max((j for j in range(10) if j != y[i]), key=lambda j: pa[i, j].item())
        terms.append(-torch.log(1.0001 - pa[i, wrong]))
        robust.append(hand_kl(zc[i:i + 1], za[i:i + 1])[0] * (1 - pc[i, y[i]]))
    expected = hand_ce(za, y) + torch.stack(terms).mean() + 3.0 * torch.stack(robust).mean()
    assert torch.allclose(loss, expected, atol=1e-6)


def test_help_loss_adds_the_helper_term():
    net, std, (x, _, y) = TinyNet().train(), TinyNet(seed=5), batch()
    xa = torch.clamp(x + 0.3 * torch.sign(torch.randn_like(x)), 0, 1)  # large: x + 2(x_adv - x) clamps
    loss, logs = build_defense("help", EPS, std_model=std).loss(net, x, y, xa)
    zc, za = net(x), net(xa)
    helper = torch.clamp(x + 2 * (xa - x), 0, 1)
    assert (helper != x + 2 * (xa - x)).any()
    helper_labels = std.eval()(xa).argmax(1)
    expected = hand_ce(zc, y) + 4.0 * hand_kl(zc, za).mean() + 0.25 * hand_ce(net(helper), helper_labels)
    assert torch.allclose(loss, expected, atol=1e-6)
    assert logs["ce_helper"] > 0


@pytest.mark.parametrize("name", ["adv", "trades", "mart", "awp", "help"])
def test_adversarial_examples_stay_in_ball_raise_their_loss_and_restore_mode(name):
    net, (x, _, y) = TinyNet().train(), batch()
    defense = build_defense(name, EPS, steps=5, std_model=TinyNet(seed=5))
    xa = defense.adversarial(net, x, y)
    assert net.training
    assert (xa - x).abs().max() <= EPS + 1e-6 and xa.min() >= 0 and xa.max() <= 1
    with torch.no_grad():
        zc, za = net.eval()(x), net(xa)
    if name in ("adv", "mart"):  # PGD on CE
        assert F.cross_entropy(za, y) > F.cross_entropy(zc, y)
    else:  # TRADES' attack on KL(p_clean || p_adv)
        assert hand_kl(zc, za).mean() > 1e-4


# ----------------------------------------------------------------------------- AWP
def ce_objective(xa, y):
    return lambda model: F.cross_entropy(model(xa), y)


def test_awp_perturbation_is_relative_per_weight_layer_and_raises_the_loss():
    net, (x, xa, y) = TinyNet().train(), batch()
    before = snapshot(net)
    diff = WeightPerturbation(gamma=0.01).compute(net, ce_objective(xa, y))
    assert same(before, snapshot(net)) and all(p.grad is None for p in net.parameters())
    assert sorted(diff) == ["body.0.weight", "fc.weight"]  # no biases, no BatchNorm
    params = dict(net.named_parameters())
    for name, v in diff.items():
        assert torch.allclose(v.norm(), 0.01 * params[name].norm(), rtol=1e-4)
    with torch.no_grad():
        clean_loss = F.cross_entropy(net(xa), y)
        with perturbed(net, diff):
            assert torch.allclose(params["fc.weight"], before["fc.weight"] + diff["fc.weight"])
            assert torch.equal(params["fc.bias"], before["fc.bias"])
            perturbed_loss = F.cross_entropy(net(xa), y)
    assert perturbed_loss > clean_loss
    # Bit-identical after perturb + restore with no step (the train-mode forwards above only
    # moved BatchNorm's running statistics, which are buffers, not parameters).
    assert all(torch.equal(p, before[k]) for k, p in net.named_parameters())


def test_awp_step_equals_sgd_at_perturbed_point_with_perturbation_removed():
    net, (x, xa, y) = TinyNet().train(), batch()
    reference = copy.deepcopy(net)
    lr, wd = 0.1, 2e-4
    defense = build_defense("awp", EPS)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
    with defense.weight_perturbation(net, x, y, xa) as _:
        loss, _ = defense.loss(net, x, y, xa)
        opt.zero_grad()
        loss.backward()
        opt.step()
    diff = defense.perturbation.compute(reference, ce_objective(xa, y))
    # By hand: move the reference to w + v, take the gradient there, update, then take v off.
    ref_params = dict(reference.named_parameters())
    with torch.no_grad():
        for name, v in diff.items():
            ref_params[name].add_(v)
    ref_loss, _ = defense.loss(reference, x, y, xa)
    grads = torch.autograd.grad(ref_loss, list(ref_params.values()))
    for (name, p), g in zip(ref_params.items(), grads):
        v = diff.get(name, torch.zeros_like(p))
        expected = p.detach() - lr * (g + wd * p.detach()) - v
        got = dict(net.named_parameters())[name].detach()
        assert torch.allclose(got, expected, atol=1e-6), name
        if name in diff:  # the perturbation really was removed
            assert not torch.allclose(got, expected + v, atol=1e-6)


# ----------------------------------------------------------------------------- CAFE
def test_cafe_term_is_zero_when_inversion_matches_adversarial_and_positive_otherwise():
    net, h, (x, xa, _) = TinyNet().train(), create_estimator(4), batch()
    cafe = CafeTerm(h, eps_inv=0.0, steps=3)
    zero, _ = cafe(net, x, x)  # eps_inv = 0 gives x_inv = x = x_adv
    assert abs(zero.item()) < 1e-6
    assert abs(cafe.loss(net, xa, xa)[0].item()) < 1e-6
    loss, logs = CafeTerm(h, eps_inv=0.05, steps=3)(net, x, xa)
    assert loss.item() > 1e-6 and logs["cafe"] == pytest.approx(loss.item())
    # Gradient flows through both the adversarial and the inverted prediction.
    a, b = xa.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ga, gb = torch.autograd.grad(cafe.loss(net, a, b)[0], (a, b))
    assert ga.abs().sum() > 0 and gb.abs().sum() > 0


def test_cafe_target_and_inversion():
    net, h, (x, xa, _) = TinyNet().train(), create_estimator(4), batch()
    cafe = CafeTerm(h, eps_inv=0.05, steps=2)
    target = cafe.target(net, x, xa)
    assert net.training  # restored after the eval-mode target
    with torch.no_grad():
        net.eval()
        fn = net.features(x)
        assert torch.allclose(target, net.head(fn + h.eval()(net.features(xa) - fn)), atol=1e-5)
        assert torch.allclose(CafeTerm(None, 0.05).target(net, x, xa), net(x), atol=1e-6)
        net.train()
    assert CafeTerm(None, 0.05).mode is CafeMode.CONTROL_H0 and cafe.mode is CafeMode.CAFE
    inverted = cafe.invert(net, x, xa)
    assert (inverted - x).abs().max() <= 0.05 + 1e-6 and inverted.min() >= 0 and inverted.max() <= 1
    assert build_cafe(None, h, 0.05) is None and build_cafe("none", h, 0.05) is None
    assert build_cafe(CafeMode.BASELINE, h, 0.05) is None and build_cafe(CafeMode.CAFE, h, 0.05).mode is CafeMode.CAFE
    assert build_cafe("control-h0", h, 0.05).causal_estimator is None
    with pytest.raises(ValueError, match="causal estimator"):
        build_cafe("cafe", None, 0.05)
    with pytest.raises(ValueError, match="unknown cafe mode"):
        build_cafe("inoculate", h, 0.05)


# ----------------------------------------------------------------------------- stage
def stage_cfg(defense: str, cafe: str | None) -> dict:
    return {"defense": defense, "cafe": cafe, "eps": EPS, "steps": 2, "eps_inv": 0.05, "inversion_steps": 2,
            "lr": 0.05, "epochs": 1, "warmup": 0.5, "val_attack": "pgd", "val_steps": 2,
            "val_adv_images": 4, "seed": 0}


@pytest.mark.parametrize("defense,cafe", [("adv", "cafe"), ("trades", "control-h0"), ("mart", None),
                                          ("awp", "cafe"), ("help", "cafe")])
def test_stage_trains_the_net_and_never_touches_frozen_helpers(defense, cafe):
    net, h, std = TinyNet(), create_estimator(4), TinyNet(seed=5)
    h_before, std_before = snapshot(h), snapshot(std)
    stage = DefenseStage(net, stage_cfg(defense, cafe), 2, CPU, Precision(CPU), causal_estimator=h,
                         std_model=std)
    assert stage.modules == {"model": net} and stage.name == "defense"
    assert stage.selection_metric == "robust_acc" and set(stage.schedulers) == {"model"}
    x, _, y = batch()
    start = {k: v.detach().clone() for k, v in net.named_parameters()}
    logs = stage.train_batch(x, y)  # one-cycle starts at lr 0: weights must come back exactly
    assert all(torch.equal(p, start[k]) for k, p in net.named_parameters())
    assert ("cafe" in logs) == (cafe is not None) and all(isinstance(v, float) for v in logs.values())
    stage.train_batch(x, y)
    assert any(not torch.equal(p, start[k]) for k, p in net.named_parameters())
    assert same(h_before, snapshot(h)) and same(std_before, snapshot(std))
    used = ([h] if cafe == "cafe" else []) + ([std] if defense == "help" else [])
    for helper in used:  # frozen by the stage: eval mode, no gradients
        assert not helper.training
        assert all(p.grad is None and not p.requires_grad for p in helper.parameters())
    images = (torch.rand(8, 1, 28, 28) * 255).to(torch.uint8)
    metrics = stage.validate(ImageTensors(images, torch.arange(8) % 10))
    assert set(metrics) == {"clean_acc", "robust_acc"} and all(0 <= v <= 1 for v in metrics.values())


def test_stage_evaluates_the_awp_loss_at_perturbed_weights(monkeypatch):
    net = TinyNet()
    stage = DefenseStage(net, stage_cfg("awp", None), 2, CPU, Precision(CPU))
    seen = []
    original_loss = stage.defense.loss

    def spy(model, *args):
        seen.append(model.fc.weight.detach().clone())
        return original_loss(model, *args)

    monkeypatch.setattr(stage.defense, "loss", spy)
    start = net.fc.weight.detach().clone()
    x, _, y = batch()
    stage.train_batch(x, y)  # lr 0 on the first step
    assert len(seen) == 1 and not torch.equal(seen[0], start)
    assert torch.allclose((seen[0] - start).norm(), 0.01 * start.norm(), rtol=1e-4)
    assert torch.equal(net.fc.weight, start)
