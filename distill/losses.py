"""Distillation terms from a frozen teacher to a student (both YUVCodecs on the same H/16 grid).

- output:  the student's reconstruction toward the teacher's (YUV 6:1:1 MSE, scaled like distortion);
- latent:  the student's quantised latent, through a learned 1x1 projection, toward the teacher's;
- entropy: the student's mean and scale index, through learned 1x1 projections, toward the teacher's.
The projections exist only in training; they are not part of the student that ships.

A teacher may also be any module with the same call (``teacher(y, uv, q)`` -> dict) that says which terms it
supports in ``kd_terms`` (distill.teachers.ForeignTeacher, a CompressAI model: output and latent only); the
terms it lacks are switched off with a note on stderr, and a latent on another grid is resized to it.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from codec.entropy import SCALE_LEVELS


@dataclass
class KDWeights:
    """Weight of each distillation term; 0 switches a term off."""

    output: float = 0.5
    latent: float = 0.1
    entropy: float = 0.1

    def enabled(self) -> bool:
        return any(v > 0 for v in asdict(self).values())


class Distiller(nn.Module):
    """Holds the frozen teacher and the training-only projections; called as the Trainer's extra loss."""

    def __init__(self, teacher, student, weights: KDWeights):
        super().__init__()
        self.teacher = [teacher.eval()]  # a list keeps the teacher out of this module's parameters
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.w, self.notes = weights, []
        supported = getattr(teacher, "kd_terms", ("output", "latent", "entropy"))
        off = [k for k, v in asdict(weights).items() if v > 0 and k not in supported]
        if off:
            self.w = replace(weights, **{k: 0.0 for k in off})
            self.note(f"{' and '.join(off)} distillation off: the teacher ({getattr(teacher, 'name', 'model')}) "
                      f"has no {' or '.join(off)} outputs")
        s_ch = student.cfg.y_channels + student.cfg.uv_channels
        t_ch = teacher.cfg.y_channels + teacher.cfg.uv_channels
        self.latent_proj = nn.Conv2d(s_ch, t_ch, 1)
        self.mean_proj = nn.Conv2d(s_ch, t_ch, 1)
        self.scale_proj = nn.Conv2d(s_ch, t_ch, 1)
        self.register_buffer("lambdas", torch.tensor(student.cfg.lambdas), persistent=False)

    def note(self, text: str) -> None:
        """Say once, on stderr (rank 0), what this distillation does differently."""
        if text not in self.notes:
            self.notes.append(text)
            from training import dist_info
            if dist_info()[0] == 0:
                print(f"note: {text}", file=sys.stderr)

    def _latent_target(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The projected student latent on the teacher latent's grid (resized when the grids differ)."""
        if pred.shape[-2:] == target.shape[-2:]:
            return pred
        self.note(f"latent distillation resizes the student's {tuple(pred.shape[-2:])} latent grid to the "
                  f"teacher's {tuple(target.shape[-2:])}")
        return F.interpolate(pred, size=target.shape[-2:], mode="bilinear", align_corners=False)

    @staticmethod
    def _normalised_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((pred - target) ** 2).mean() / (target.var() + 1e-6)

    def forward(self, out: dict, y: torch.Tensor, uv: torch.Tensor, q: torch.Tensor):
        """Total distillation loss and its parts for one batch."""
        with torch.no_grad():
            t = self.teacher[0](y, uv, q)
        parts = {}
        if self.w.output > 0:
            mse = ((6 * ((out["y"] - t["y"]) ** 2).mean(dim=(1, 2, 3))
                    + ((out["uv"] - t["uv"]) ** 2).mean(dim=(2, 3)).sum(1)) / 8)
            parts["output"] = self.w.output * (self.lambdas[q] * 255 ** 2 * mse).mean()
        if self.w.latent > 0:
            pred = self._latent_target(self.latent_proj(out["latent_hat"]), t["latent_hat"])
            parts["latent"] = self.w.latent * self._normalised_mse(pred, t["latent_hat"])
        if self.w.entropy > 0:
            parts["entropy"] = self.w.entropy * (
                self._normalised_mse(self.mean_proj(out["mean"]), t["mean"])
                + self._normalised_mse(self.scale_proj(out["scale_index"] / SCALE_LEVELS), t["scale_index"] / SCALE_LEVELS))
        total = sum(parts.values()) if parts else torch.zeros(())
        return total, {k: float(v.detach()) for k, v in parts.items()}
