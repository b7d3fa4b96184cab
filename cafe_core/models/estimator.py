"""The causal estimator h and the counterfactual generator g (method.md section 2).

Both have the same architecture and map a feature-shaped tensor (N, C, H, W) to the same
shape: three conv blocks (C -> C -> C -> 2C), a global average pool, a Linear mixer, the
vector tiled back over H x W, and three transposed-conv blocks (2C -> C -> C -> C). Because of
the global pool the output is almost spatially uniform: per-channel bars show it best.
"""
from __future__ import annotations

import torch
from torch import nn

from ..registry import Registry

ESTIMATORS: Registry = Registry("estimator")


def _conv_block(cin: int, cout: int, transpose: bool = False, activation: bool = True) -> list[nn.Module]:
    conv = (nn.ConvTranspose2d(cin, cout, 3, stride=1, padding=1) if transpose
            else nn.Conv2d(cin, cout, 3, padding=1))
    layers: list[nn.Module] = [conv, nn.BatchNorm2d(cout)]
    if activation:
        layers.append(nn.LeakyReLU(0.2))
    return layers


class CausalNet(nn.Module):
    """Feature map -> feature map of the same shape (used for both h and g).

    Args:
        channels: C, the backbone's feature channels (``Backbone.feature_channels``).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        c = channels
        self.channels = c
        self.encoder = nn.Sequential(*_conv_block(c, c), *_conv_block(c, c), *_conv_block(c, 2 * c))
        self.mixer = nn.Sequential(nn.Linear(2 * c, 2 * c), nn.LeakyReLU(0.2))
        self.decoder = nn.Sequential(*_conv_block(2 * c, c, transpose=True),
                                     *_conv_block(c, c, transpose=True),
                                     *_conv_block(c, c, transpose=True, activation=False))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, a=0.2, nonlinearity="leaky_relu")
                nn.init.zeros_(m.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        height, width = z.shape[-2:]
        vector = self.mixer(self.encoder(z).mean(dim=(2, 3)))
        tiled = vector[:, :, None, None].expand(-1, -1, height, width)
        return self.decoder(tiled)


@ESTIMATORS.register("conv")
def conv_estimator(channels: int) -> CausalNet:
    """The paper's h/g network, sized from the backbone's feature channels."""
    return CausalNet(channels)


def create_estimator(channels: int, name: str = "conv") -> CausalNet:
    """Build an h or g network for a backbone with ``channels`` feature channels."""
    return ESTIMATORS.build(name, channels)
