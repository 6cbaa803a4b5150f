"""Small building blocks that every model family uses with its own channel counts."""
from __future__ import annotations

import torch
import torch.nn as nn


def conv(cin: int, cout: int, k: int = 5, stride: int = 1) -> nn.Conv2d:
    """k x k convolution with 'same' padding (output = input / stride)."""
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


def deconv(cin: int, cout: int, k: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    """k x k transposed convolution that upsamples exactly by ``stride``."""
    return nn.ConvTranspose2d(cin, cout, k, stride=stride, padding=k // 2, output_padding=stride - 1)


class Fusion(nn.Module):
    """Prediction fusion: concatenate hyper features, context features (and any extra inputs, such as
    the decoded luma latent for chroma) and map them to the mean with a stack of 1x1 convolutions.

    Being pointwise, the decoder evaluates it only where each checkerboard pass needs a mean."""

    pointwise = True

    def __init__(self, in_channels: int, hidden: int, out_channels: int, depth: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(depth - 1):
            layers += [nn.Conv2d(c, hidden, 1), nn.LeakyReLU(inplace=True)]
            c = hidden
        layers.append(nn.Conv2d(c, out_channels, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat(features, 1))


class Synthesis(nn.Module):
    """Both synthesis transforms of a codec as one module (decoded latents -> luma, chroma planes; the
    chroma branch reads the luma features), keeping the codec's child names. Used by export and pruning."""

    def __init__(self, model):
        super().__init__()
        self.synthesis_y, self.synthesis_uv = model.synthesis_y, model.synthesis_uv

    def forward(self, y_hat: torch.Tensor, uv_hat: torch.Tensor):
        y, feat = self.synthesis_y(y_hat)
        return y, self.synthesis_uv(uv_hat, feat)
