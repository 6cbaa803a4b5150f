"""Bjontegaard deltas (bjontegaard package) per image, averaged over images.

For each image, the test codec's RD curve is compared with the anchor's curve on the same image
(BD-rate in %, BD-quality in dB over the overlapping range, Akima interpolation), then the per-image
figures are averaged with equal weight. Image pairs whose curves do not overlap are skipped and counted.
MS-SSIM enters as -10*log10(1 - MS-SSIM) dB, so that its BD-quality is in dB as well.
"""
from __future__ import annotations

import math
import warnings

import bjontegaard as bd
import numpy as np

METHOD = "akima"
METRICS = {"psnr_rgb": "PSNR-RGB", "psnr_yuv": "PSNR-YUV", "ms_ssim": "MS-SSIM"}


def quality_db(metric: str, value: float) -> float:
    """A metric value in dB: PSNRs as they are, MS-SSIM as -10*log10(1 - MS-SSIM)."""
    if metric == "ms_ssim":
        return -10.0 * math.log10(max(1.0 - value, 1e-10)) if math.isfinite(value) else math.nan
    return value


def rd_curve(rows: list[dict], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(bpp, quality dB) of one codec on one image, sorted by rate, keeping only points that
    improve on every cheaper point (the interpolators need strictly increasing curves)."""
    pts = sorted((r["bpp"], quality_db(metric, r[metric])) for r in rows)
    rates, dists = [], []
    for rate, dist in pts:
        if math.isfinite(dist) and rate > 0 and (not rates or (rate > rates[-1] and dist > dists[-1])):
            rates.append(rate)
            dists.append(dist)
    return np.array(rates), np.array(dists)


def bd_pair(anchor: tuple, test: tuple, method: str = METHOD) -> tuple[float, float] | None:
    """(BD-rate %, BD-quality dB) of test against anchor, each a (rates, dists) pair; None when the
    curves have under 2 points or do not overlap in rate and in quality."""
    (ra, da), (rt, dt) = anchor, test
    if min(len(ra), len(rt)) < 2:
        return None
    if max(da[0], dt[0]) >= min(da[-1], dt[-1]) or max(ra[0], rt[0]) >= min(ra[-1], rt[-1]):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # partial-overlap warnings: BD is taken over the overlap
        rate = bd.bd_rate(ra, da, rt, dt, method=method, require_matching_points=False)
        psnr = bd.bd_psnr(ra, da, rt, dt, method=method, require_matching_points=False)
    return float(rate), float(psnr)


def bd_summary(rows: list[dict], anchor: str, codec: str, metric: str,
               images: list[str] | None = None, method: str = METHOD) -> dict:
    """Mean BD-rate and BD-quality of ``codec`` against ``anchor`` over images (default: all images
    with rows of both), with the number of images used and skipped."""
    by = {}
    for r in rows:
        if r["codec"] in (anchor, codec):
            by.setdefault((r["codec"], r["image"]), []).append(r)
    if images is None:
        images = sorted({img for (_, img) in by})
    pairs, skipped = [], 0
    for img in images:
        if (anchor, img) not in by or (codec, img) not in by:
            continue
        res = bd_pair(rd_curve(by[anchor, img], metric), rd_curve(by[codec, img], metric), method)
        if res is None:
            skipped += 1
        else:
            pairs.append(res)
    mean = np.mean(pairs, axis=0) if pairs else (math.nan, math.nan)
    return {"anchor": anchor, "codec": codec, "metric": metric, "bd_rate": float(mean[0]),
            "bd_quality_db": float(mean[1]), "n_images": len(pairs), "n_skipped": skipped}
