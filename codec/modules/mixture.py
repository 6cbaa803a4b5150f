"""Seed 002's entropy-model options: a Gaussian mixture that keeps the entropy path integer-indexed,
and a global context for the predicted means."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from compressai.entropy_models import GaussianConditional, GaussianMixtureConditional


class MixtureConditional(GaussianMixtureConditional):
    """Gaussian-mixture entropy model (seed 002, JointIQ-Net's GMM with K components), deterministic;
    compressai's GaussianMixtureConditional supplies the table builder.

    Departure from the paper, and why: JointIQ-Net predicts every component's weight, mean and scale
    per element in float, so its probability tables would be built from float numbers computed per
    picture, and two runtimes that differ in the last bit would decode different symbols. Here the
    table is still picked by the integer scale index alone: component k of an element with scale s has
    mean ``shift_k * s``, scale ``ratio_k * s`` and weight ``w_k``, where (w, shift, ratio) are K global
    parameters learned with the codec. ``update()`` bakes the mixture into one CDF table per scale
    level, saved with the weights, so nothing computed per picture in float reaches the tables. The
    mixture thus learns the shape of the residual distribution (heavier tails, asymmetry), not a
    per-element shape. Starts close to the single Gaussian (w_0 ~ 0.96, ratio_0 = 1, no shifts)."""

    def __init__(self, scale_table, components: int = 3):
        if not 1 <= components <= 5:
            raise ValueError(f"a mixture needs 1 to 5 components, got {components}")
        super().__init__(components, scale_table)
        self.logits = nn.Parameter(torch.tensor([4.0] + [0.0] * (components - 1)))
        self.shift = nn.Parameter(torch.zeros(components))
        self.log_ratio = nn.Parameter(torch.log(torch.tensor([1.0, 0.5, 2.5, 0.25, 5.0][:components])))

    def components(self, scales: torch.Tensor, means: torch.Tensor | None = None):
        """[(mean, scale, weight)] of the K components for elements of scale ``scales`` (any shape)."""
        means = torch.zeros_like(scales) if means is None else means
        w, r = torch.softmax(self.logits, 0), torch.exp(self.log_ratio)
        return [(means + self.shift[i] * scales, scales * r[i], w[i]) for i in range(self.K)]

    def _likelihood(self, inputs, scales, means=None):
        return sum(w * GaussianConditional._likelihood(self, inputs, s, m) for m, s, w in self.components(scales, means))

    def forward(self, inputs, scales, means=None, training=None):
        return GaussianConditional.forward(self, inputs, scales, means, training)

    @torch.no_grad()
    def update(self):
        """One CDF table per scale level (the integer scale index picks it), escape symbol included."""
        parts = self.components(self.scale_table.float())
        m, s = (torch.stack([part[j] for part in parts]) for j in (0, 1))    # K x levels
        w = torch.stack([part[2].expand_as(self.scale_table) for part in parts])
        tail = -float(self._standardized_quantile(self.tail_mass / 2))
        reach = (self.shift.abs() + tail * torch.exp(self.log_ratio)).max().item()
        cdfs = []
        for i, level in enumerate(self.scale_table.tolist()):
            half = max(1, math.ceil(level * reach))
            cdfs.append(self._build_cdf(s[:, i:i + 1].clone(), m[:, i:i + 1].clone(), w[:, i:i + 1].clone(), half)[0])
        table = torch.zeros(len(cdfs), max(len(c) for c in cdfs), dtype=torch.int32)
        for i, c in enumerate(cdfs):
            table[i, : len(c)] = c
        self._quantized_cdf = table
        self._cdf_length = torch.tensor([len(c) for c in cdfs], dtype=torch.int32)
        self._offset = torch.tensor([-((len(c) - 3) // 2) for c in cdfs], dtype=torch.int32)


class GlobalContext(nn.Module):
    """Global context (seed 002) for the predicted means: the hyper-latent averaged over the whole
    picture, through a two-layer MLP, gives a per-channel offset of the mean of every latent element.
    The decoder has z_hat before any latent, so both sides compute it alike; it moves only the float
    means (never the scale index or the tables). Zero-initialised output: starts as no offset."""

    def __init__(self, z_channels: int, latent_channels: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(z_channels, hidden), nn.ReLU(), nn.Linear(hidden, latent_channels))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, z_hat: torch.Tensor) -> torch.Tensor:
        return self.net(z_hat.mean((2, 3)))[..., None, None]
