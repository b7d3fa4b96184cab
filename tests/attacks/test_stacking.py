"""Stacked models (grouped convolutions) reproduce each model, and the defense table uses them."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cafe_core.attacks.registry import build_attack
from cafe_core.attacks.stacking import StackedModels, StackingError

from tests.conftest import make_lite


def _trained_like(seed: int) -> nn.Module:
    """A lite model with non-trivial BatchNorm statistics (random, not the init's 0/1)."""
    model = make_lite(seed)
    generator = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def models():
    return [_trained_like(s) for s in range(3)]


def test_each_image_goes_to_its_own_model_forward_and_gradient(models):
    stack = StackedModels(models)
    x = torch.rand(6, 1, 28, 28, requires_grad=True)  # two rounds of the three models
    logits = stack(x)
    expected = torch.cat([models[i % 3](x[i:i + 1]) for i in range(6)])
    assert torch.allclose(logits, expected, atol=1e-5)
    grad = torch.autograd.grad(logits[:, 0].sum(), x)[0]
    for i in range(6):
        xi = x[i:i + 1].detach().requires_grad_(True)
        own = torch.autograd.grad(models[i % 3](xi)[0, 0], xi)[0]
        assert torch.allclose(grad[i:i + 1], own, atol=1e-5), f"image {i} got another model's gradient"


def test_the_stack_copies_and_leaves_the_models_alone(models):
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
    models[1].train()
    stack = StackedModels(models)
    stack.train()
    assert not stack.training and models[1].training, "the models' own modes are kept; the stack stays in eval"
    models[1].eval()
    for m, state in zip(models, before):
        assert all(torch.equal(v, state[k]) for k, v in m.state_dict().items())
    assert not any(p.requires_grad for p in stack.parameters())


def test_fgsm_on_the_stack_equals_fgsm_on_each_model(models):
    """FGSM has no random start: the stacked attack must give each model's own adversarial image."""
    from cafe_core.data.datasets import load_split

    test = load_split("fashion-mnist", "test", None, 0, 0, limit=3, download=False)
    image, label = test[0][0], int(test[0][1])
    stack = StackedModels(models)
    x = image[None].repeat(3, 1, 1, 1)
    adversarial = build_attack("fgsm", stack, 0.1)(x, torch.full((3,), label))
    for i, m in enumerate(models):
        own = build_attack("fgsm", m, 0.1)(image[None], torch.tensor([label]))
        same = (adversarial[i:i + 1] - own).abs() < 1e-6
        assert same.float().mean() > 0.99, f"model {i}: the stacked FGSM differs on {int((~same).sum())} pixels"


def test_different_architectures_or_layers_are_refused():
    with pytest.raises(StackingError, match="different architectures"):
        StackedModels([make_lite(0), nn.Sequential(nn.Flatten(), nn.Linear(784, 10))])
    with pytest.raises(StackingError, match="at least two"):
        StackedModels([make_lite(0)])

    class WithLayerNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(784)
            self.fc = nn.Linear(784, 10)

        def forward(self, x):
            return self.fc(self.norm(x.flatten(1)))

    with pytest.raises(StackingError, match="LayerNorm"):
        StackedModels([WithLayerNorm(), WithLayerNorm()])

    class Transposing(nn.Module):
        """A forward that mixes channels across the batch layout: the construction check catches it."""

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(28, 10)

        def forward(self, x):
            return self.fc(x.mean(dim=(1, 2)))

    with pytest.raises(StackingError, match="does not reproduce"):
        StackedModels([Transposing(), Transposing()])
    with pytest.raises(ValueError, match="multiple"):
        StackedModels([make_lite(0), make_lite(1)])(torch.rand(3, 1, 28, 28))
