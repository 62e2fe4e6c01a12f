"""Colorization as classification: the quantized ab space of Zhang et al. 2016 (``shared/seeds/003_*``).

Units: every ab value here is in Lab units (a, b roughly in [-128, 127]); models that work in the
``semcolor.scaling`` convention (ab_unit = ab / 128) multiply by ``AB_SCALE`` before calling in.

The 313 bins (``in_gamut_bins``), computed, not copied. Criterion, exactly:

    a grid point (a, b), a and b multiples of ``grid`` (10), is a bin  <=>  the square
    [a - grid, a + grid] x [b - grid, b + grid] meets the convex hull of the ab projection of the sRGB
    cube (every R, G, B in [0, 1], converted with ``semcolor.color.srgb_to_lab``, D65).

Equivalently: the bins are every grid point that is a corner of the grid square holding some color of
that hull, i.e. every bin a bilinear interpolation of an (almost) in-gamut color touches. With grid 10
this gives exactly 313 points, and they are exactly the points of Zhang et al.'s ``pts_in_hull.npy``
(checked against the published array while writing this; the test checks the count, the criterion and
the published row extents). The stricter criterion "some L in [0, 100] makes the bin's cell an sRGB color
without clipping" gives only 261-262 cells; Zhang's gamut is this one-cell-wider hull.

Also here: soft encoding of targets over the k nearest bins (Gaussian), the empirical bin distribution of
training data and its class-rebalancing weights, annealed-mean and mode decoding, and the bin statistics
of a shard directory (``bin_statistics_from_shards`` / ``write_bin_statistics``, the ``ab_bins`` stage).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.spatial import ConvexHull
from tqdm.auto import tqdm

from semcolor.atomic import write_text_atomic
from semcolor.color import srgb_to_lab
from semcolor.data.shard_reader import read_manifest, read_shard_samples

GRID = 10  # ab bin spacing, Lab units
NUM_BINS = 313  # bins at GRID = 10
SOFT_ENCODING_NEIGHBOURS = 5
SOFT_ENCODING_SIGMA = 5.0  # Lab units
SMOOTHING_SIGMA = 5.0  # Lab units, the Gaussian smoothing of the empirical distribution
REBALANCING_LAMBDA = 0.5
ANNEALED_MEAN_TEMPERATURE = 0.38
STATISTICS_FORMAT = "semcolor-ab-bins/1"

# the sRGB cube's faces are sampled this densely for the hull (the ab projection of the cube is the
# projection of its surface). The closest call at grid 10 is (80, 80), at Chebyshev distance 10.070 from
# the hull (out) with 65, 257 or 1025 samples per edge alike; every other point is >= 0.27 from the line
_SURFACE_SAMPLES_PER_EDGE = 257


# ----------------------------------------------------------------------------------------------- gamut


@functools.lru_cache(maxsize=4)
def _srgb_ab_hull(samples_per_edge: int) -> np.ndarray:
    values = np.linspace(0.0, 1.0, samples_per_edge)
    u, v = (x.ravel() for x in np.meshgrid(values, values, indexing="ij"))
    faces = []
    for axis in range(3):
        for fixed in (0.0, 1.0):
            face = np.empty((u.size, 3))
            others = [k for k in range(3) if k != axis]
            face[:, axis], face[:, others[0]], face[:, others[1]] = fixed, u, v
            faces.append(face)
    ab = srgb_to_lab(np.concatenate(faces))[:, 1:]
    hull = ConvexHull(ab)
    vertices = ab[hull.vertices]  # counter-clockwise for 2-D input
    vertices.setflags(write=False)
    return vertices


def srgb_ab_hull(samples_per_edge: int = _SURFACE_SAMPLES_PER_EDGE) -> np.ndarray:
    """Vertices (V, 2), counter-clockwise, of the convex hull of the sRGB gamut projected on (a, b), in Lab
    units."""
    return _srgb_ab_hull(samples_per_edge).copy()


def squares_meet_polygon(centres: np.ndarray, half_width: float, polygon: np.ndarray) -> np.ndarray:
    """For each centre (M, 2): does the axis-aligned square of ``half_width`` around it meet the convex
    ``polygon`` (V, 2), counter-clockwise? Closed sets: touching counts. Separating-axis test, (M,) bool."""
    centres = np.asarray(centres, np.float64)
    polygon = np.asarray(polygon, np.float64)
    low, high = polygon.min(axis=0), polygon.max(axis=0)
    # the square's own axes
    meets = np.all((centres + half_width >= low) & (centres - half_width <= high), axis=1)
    # the polygon's edge normals: outward for a counter-clockwise polygon
    edges = np.roll(polygon, -1, axis=0) - polygon
    normals = np.stack([edges[:, 1], -edges[:, 0]], axis=1)
    offsets = np.einsum("vk,vk->v", normals, polygon)  # the polygon lies in normal . x <= offset
    # the square's nearest point along each normal: centre . n - half_width * (|n_a| + |n_b|)
    nearest = centres @ normals.T - half_width * np.abs(normals).sum(axis=1)
    return meets & np.all(nearest <= offsets + 1e-9, axis=1)


def grid_points(grid: int = GRID) -> np.ndarray:
    """Every grid point (a, b), multiples of ``grid`` covering [-128, 127]^2, sorted by a then b; (G, 2)."""
    steps = np.arange(-(128 // grid), 127 // grid + 1) * float(grid)
    a, b = np.meshgrid(steps, steps, indexing="ij")
    return np.stack([a.ravel(), b.ravel()], axis=1)


def is_in_gamut_bin(points: np.ndarray, grid: int = GRID) -> np.ndarray:
    """The bin criterion of the module docstring for grid points (M, 2) in Lab units; (M,) bool."""
    return squares_meet_polygon(points, float(grid), _srgb_ab_hull(_SURFACE_SAMPLES_PER_EDGE))


@functools.lru_cache(maxsize=4)
def _in_gamut_bins(grid: int) -> np.ndarray:
    points = grid_points(grid)
    bins = points[is_in_gamut_bin(points, grid)]
    bins.setflags(write=False)
    return bins


def in_gamut_bins(grid: int = GRID) -> np.ndarray:
    """The bin centres (Q, 2) float64 in Lab units, sorted by a then b (``pts_in_hull.npy``'s order).

    Q = 313 for grid 10; see the module docstring for the exact criterion."""
    if grid < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    return _in_gamut_bins(int(grid)).copy()


def bins_tensor(grid: int = GRID, device: torch.device | str | None = None) -> torch.Tensor:
    """``in_gamut_bins`` as a float32 tensor (Q, 2), Lab units."""
    return torch.as_tensor(in_gamut_bins(grid), dtype=torch.float32, device=device)


# ----------------------------------------------------------------------------------------------- encoding


def _pixels(ab: torch.Tensor) -> torch.Tensor:
    if ab.dim() != 4 or ab.shape[1] != 2:
        raise ValueError(f"expected ab of shape (N, 2, H, W), got {tuple(ab.shape)}")
    return ab.detach().permute(0, 2, 3, 1).reshape(-1, 2)


def _bins_for(bins: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """``bins`` (default: the 313 bins of grid 10) as float32 on ``like``'s device."""
    bins = bins_tensor() if bins is None else bins
    return bins.to(like.device, torch.float32)


def _nearest(pixels: torch.Tensor, bins: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    # exact differences, not the matmul expansion: ties and tiny distances stay exact
    distances = torch.cdist(pixels.float(), bins.float(), compute_mode="donot_use_mm_for_euclid_dist")
    return distances.topk(k, dim=1, largest=False)


def soft_encode(ab: torch.Tensor, bins: torch.Tensor | None = None, k: int = SOFT_ENCODING_NEIGHBOURS,
                sigma: float = SOFT_ENCODING_SIGMA) -> torch.Tensor:
    """Soft-encode ab (N, 2, H, W) in Lab units as (N, Q, H, W) float32 distributions over ``bins`` (Q, 2),
    Lab units (default: the 313 in-gamut bins).

    Each pixel spreads its mass over its ``k`` nearest bins with Gaussian weights exp(-d^2 / (2 sigma^2))
    (d in Lab units), normalized to sum to 1; every other bin gets 0. No gradient flows (a target)."""
    pixels = _pixels(ab)
    bins = _bins_for(bins, ab)
    if not 1 <= k <= bins.shape[0]:
        raise ValueError(f"k must be in [1, {bins.shape[0]}], got {k}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    distances, indices = _nearest(pixels, bins, k)
    weights = torch.softmax(-distances.square() / (2.0 * sigma * sigma), dim=1)
    encoded = torch.zeros(pixels.shape[0], bins.shape[0], device=ab.device, dtype=torch.float32)
    encoded.scatter_(1, indices, weights)
    n, _, height, width = ab.shape
    return encoded.reshape(n, height, width, -1).permute(0, 3, 1, 2).contiguous()


def nearest_bin(ab: torch.Tensor, bins: torch.Tensor | None = None) -> torch.Tensor:
    """Index of the nearest bin of each pixel of ab (N, 2, H, W), Lab units -> (N, H, W) int64."""
    _, indices = _nearest(_pixels(ab), _bins_for(bins, ab), 1)
    n, _, height, width = ab.shape
    return indices.reshape(n, height, width)


@functools.lru_cache(maxsize=4)
def _lab8_lookup(grid: int) -> np.ndarray:
    codes = np.arange(256, dtype=np.float64) - 128.0
    a, b = np.meshgrid(codes, codes, indexing="ij")
    ab = torch.as_tensor(np.stack([a, b])[None])  # (1, 2, 256, 256): every 8-bit (a, b) code pair
    table = nearest_bin(ab.float(), bins_tensor(grid))[0].numpy().astype(np.int16)
    table.setflags(write=False)
    return table


def lab8_bin_counts(lab8: np.ndarray, grid: int = GRID) -> np.ndarray:
    """Per-bin pixel counts (Q,) int64 of 8-bit Lab codes (..., 3) uint8 (a = a8 - 128, b = b8 - 128),
    each pixel counted in its nearest bin (exact: a lookup table over all 65536 code pairs)."""
    lab8 = np.asarray(lab8)
    if lab8.dtype != np.uint8 or lab8.shape[-1] != 3:
        raise ValueError(f"expected uint8 Lab codes (..., 3), got {lab8.dtype} {lab8.shape}")
    table = _lab8_lookup(int(grid))
    indices = table[lab8[..., 1].ravel(), lab8[..., 2].ravel()]
    return np.bincount(indices, minlength=len(in_gamut_bins(grid))).astype(np.int64)


# ----------------------------------------------------------------------------------------------- rebalancing


def smooth_distribution(counts: np.ndarray, bins: np.ndarray, sigma: float = SMOOTHING_SIGMA) -> np.ndarray:
    """Counts (Q,) over ``bins`` (Q, 2) -> probabilities (Q,) float64: the histogram smoothed with a 2-D
    Gaussian of ``sigma`` Lab units evaluated at the bins (Zhang et al.), renormalized to sum to 1."""
    counts = np.asarray(counts, np.float64)
    bins = np.asarray(bins, np.float64)
    if counts.shape != (bins.shape[0],):
        raise ValueError(f"counts have shape {counts.shape}, expected ({bins.shape[0]},)")
    if counts.sum() <= 0 or np.any(counts < 0):
        raise ValueError("counts must be non-negative with a positive total (no ab samples?)")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    squared = ((bins[:, None, :] - bins[None, :, :]) ** 2).sum(-1)
    smoothed = np.exp(-squared / (2.0 * sigma * sigma)) @ (counts / counts.sum())
    return smoothed / smoothed.sum()


def empirical_distribution(ab_samples: np.ndarray, bins: np.ndarray | None = None,
                           sigma: float = SMOOTHING_SIGMA) -> np.ndarray:
    """The smoothed empirical distribution (Q,) float64 of ab samples (M, 2), Lab units, over ``bins``
    (default ``in_gamut_bins()``): nearest-bin histogram, then ``smooth_distribution``. Sums to 1."""
    bins = in_gamut_bins() if bins is None else np.asarray(bins, np.float64)
    samples = np.asarray(ab_samples, np.float64).reshape(-1, 2)
    _, indices = _nearest(torch.as_tensor(samples), torch.as_tensor(bins), 1)
    counts = np.bincount(indices[:, 0].numpy(), minlength=bins.shape[0])
    return smooth_distribution(counts, bins, sigma)


def rebalancing_weights(p: np.ndarray, lam: float = REBALANCING_LAMBDA) -> np.ndarray:
    """Class-rebalancing weights (Q,) float64: w ∝ ((1 - lam) p + lam / Q)^-1, scaled so that
    E_p[w] = sum_q p_q w_q = 1. ``p``: a distribution over the Q bins (sums to 1)."""
    p = np.asarray(p, np.float64)
    if p.ndim != 1 or np.any(p < 0) or not np.isclose(p.sum(), 1.0, atol=1e-6):
        raise ValueError("p must be a 1-D probability vector (non-negative, sums to 1)")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    if lam == 0.0 and np.any(p == 0):
        raise ValueError("lam = 0 with empty bins gives infinite weights; use lam > 0")
    weights = 1.0 / ((1.0 - lam) * p + lam / p.size)
    return weights / float(p @ weights)


# ----------------------------------------------------------------------------------------------- decoding


def annealed_mean_from_logits(logits: torch.Tensor, temperature: float = ANNEALED_MEAN_TEMPERATURE,
                              bins: torch.Tensor | None = None, dim: int = 1) -> torch.Tensor:
    """Annealed mean of the distributions z = softmax(logits) along ``dim`` (the Q bins), differentiable.

    f_T(z) ∝ exp(log z / T) = softmax(logits / T); returns sum_q f_T(z)_q * bins_q in Lab units, with the
    two ab channels in place of the Q axis (e.g. (N, Q, H, W) -> (N, 2, H, W)). ``bins`` (Q, 2), Lab
    units, default the 313 in-gamut bins."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    annealed = torch.softmax(logits.float() / temperature, dim=dim)
    return _expectation(annealed, _bins_for(bins, logits), dim)


def annealed_mean(probabilities: torch.Tensor, temperature: float = ANNEALED_MEAN_TEMPERATURE,
                  bins: torch.Tensor | None = None, dim: int = 1) -> torch.Tensor:
    """Annealed mean of distributions (N, Q, H, W) (Q along ``dim``) -> ab (N, 2, H, W), Lab units.

    T = 1 is the mean; T -> 0 approaches the mode; Zhang et al. use T = 0.38."""
    log_p = probabilities.float().clamp_min(torch.finfo(torch.float32).tiny).log()
    return annealed_mean_from_logits(log_p, temperature, bins, dim)


def mode(probabilities: torch.Tensor, bins: torch.Tensor | None = None, dim: int = 1) -> torch.Tensor:
    """The most probable bin of each distribution (Q along ``dim``) -> its ab in Lab units (not
    differentiable); e.g. (N, Q, H, W) -> (N, 2, H, W)."""
    index = probabilities.argmax(dim=dim)
    ab = _bins_for(bins, probabilities)[index]  # (..., 2) with the Q axis removed
    return ab.movedim(-1, dim)


def _expectation(weights: torch.Tensor, bins: torch.Tensor, dim: int) -> torch.Tensor:
    moved = weights.movedim(dim, -1)
    return (moved @ bins.to(weights.device, weights.dtype)).movedim(-1, dim)


# ----------------------------------------------------------------------------------------------- shards


def bin_statistics_from_shards(
    shard_dir: str | Path,
    split: str = "train",
    max_samples: int | None = None,
    *,
    grid: int = GRID,
    sigma: float = SMOOTHING_SIGMA,
    lam: float = REBALANCING_LAMBDA,
    progress: bool = False,
) -> dict[str, Any]:
    """Bin distribution and rebalancing weights of a shard split, as plain (JSON-able) data.

    Reads ``<shard_dir>/manifest.json``'s ``splits[split]["shards"][i]["file"]`` in order, and the
    Lab8 codes of each sample (``<key>.lab.npy``, or ``lab.png`` in format-1 shards; a = a8 - 128, b = b8 - 128); with ``max_samples``
    only the first that many samples in that order. Every pixel counts in its nearest bin; the counts are
    smoothed (``sigma``) into ``distribution`` and turned into ``weights`` (``lam``). Returns
    {format, grid, sigma, lambda, split, samples, pixels, shards, bins (Q x [a, b]), counts, distribution,
    weights}; the same shards give the same numbers."""
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1 or None, got {max_samples}")
    manifest = read_manifest(shard_dir)
    splits = manifest.get("splits", {})
    if split not in splits:
        raise KeyError(f"{Path(shard_dir) / 'manifest.json'} has no split {split!r}; it has {sorted(splits)}")
    files = [shard["file"] for shard in splits[split]["shards"]]
    bins = in_gamut_bins(grid)
    counts = np.zeros(len(bins), np.int64)
    samples = 0
    total = max_samples if max_samples is not None else splits[split].get("samples")
    with tqdm(total=total, desc=f"ab bins {split}", disable=not progress, unit="img") as bar:
        for name in files:
            if max_samples is not None and samples >= max_samples:
                break
            for sample in read_shard_samples(Path(shard_dir) / name):
                counts += lab8_bin_counts(sample.lab8, grid)
                samples += 1
                bar.update(1)
                if max_samples is not None and samples >= max_samples:
                    break
    if samples == 0:
        raise ValueError(f"{shard_dir}: split {split!r} has no samples to compute ab bin statistics from")
    distribution = smooth_distribution(counts, bins, sigma)
    weights = rebalancing_weights(distribution, lam)
    return {
        "format": STATISTICS_FORMAT,
        "grid": int(grid),
        "sigma": float(sigma),
        "lambda": float(lam),
        "split": split,
        "samples": samples,
        "pixels": int(counts.sum()),
        "shards": files,
        "bins": bins.tolist(),
        "counts": counts.tolist(),
        "distribution": distribution.tolist(),
        "weights": weights.tolist(),
    }


def write_bin_statistics(shard_dir: str | Path, out_path: str | Path, split: str = "train",
                         max_samples: int | None = None, **options: Any) -> Path:
    """Compute ``bin_statistics_from_shards`` and write it to ``out_path`` as JSON (sorted keys, indent 1),
    atomically (temp file + os.replace); the same shards give the same bytes. Returns the path."""
    statistics = bin_statistics_from_shards(shard_dir, split, max_samples, **options)
    path = write_text_atomic(out_path, json.dumps(statistics, sort_keys=True, indent=1) + "\n")
    return path


def read_bin_statistics(path: str | Path, grid: int = GRID) -> dict[str, Any]:
    """Read a ``write_bin_statistics`` file and check that its bins are this code's bins for ``grid``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ab bin statistics at {path}; run the ab_bins stage (dvc repro ab_bins)")
    statistics = json.loads(path.read_text(encoding="utf-8"))
    if statistics.get("format") != STATISTICS_FORMAT:
        raise ValueError(f"{path}: format {statistics.get('format')!r}, expected {STATISTICS_FORMAT!r}")
    if not np.array_equal(np.asarray(statistics["bins"], np.float64), in_gamut_bins(grid)):
        raise ValueError(
            f"{path}: its bins differ from in_gamut_bins({grid}); recompute it (dvc repro ab_bins)"
        )
    return statistics

