"""Rate points: the lambda ladder every model's quality levels come from, drawing them in training, and fitting
gain vectors to another number of them (a six-point model fine-tuned into an eight-point one). Imports nothing
of ours."""
from __future__ import annotations

import torch

# Rate points, lowest rate first: each one's lambda (weight of the 255^2-scaled MSE against bits per pixel).
# A model uses the first N: 6 unless trained with more (``YUVCodec.set_rate_points``; the top two reach
# about 37-38 dB PSNR-Y on Kodak-like photos, where the sixth stops near 36).
LAMBDA_LADDER = (0.0018, 0.0035, 0.0067, 0.013, 0.025, 0.0483, 0.0932, 0.18)
DEFAULT_RATE_POINTS = 6


def check_rate_weights(weights: tuple[float, ...], n_points: int) -> None:
    """Raise ValueError unless ``weights`` is empty (equal weights) or has one weight per rate point."""
    if weights and len(weights) != n_points:
        raise ValueError(f"--rate-weights has {len(weights)} weights for a model with {n_points} rate points")


def sample_rate_points(weights: tuple[float, ...], n_points: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` rate-point indices drawn with ``weights`` (equal when empty); a weight per point or an error."""
    check_rate_weights(weights, n_points)
    if not weights:
        return torch.randint(0, n_points, (n,), generator=gen)
    return torch.multinomial(torch.tensor(weights, dtype=torch.float), n, replacement=True, generator=gen)


def fit_gain_steps(gains: torch.Tensor, n: int) -> torch.Tensor:
    """Gain vectors (rate points x channels) cut or extended to ``n`` rows, each new row one more step of
    the difference between the last two."""
    gains = gains.float()
    if n > gains.shape[0]:
        step = gains[-1] - gains[-2]
        more = gains[-1] + step * torch.arange(1, n - gains.shape[0] + 1, dtype=gains.dtype)[:, None]
        gains = torch.cat((gains, more))
    return gains[:n].clone()
