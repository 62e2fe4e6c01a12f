"""The quantized ab space: 313 in-gamut bins, soft encoding, rebalancing, decoding, shard statistics."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.optimize import linprog
from scipy.spatial import ConvexHull

from semcolor import quantized_ab as q
from semcolor.color import srgb_to_lab

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# Zhang et al.'s pts_in_hull.npy, summarised per a: (lowest b, highest b, number of bins). Published facts
# used only to check the computed bins; the bins themselves are computed from the gamut.
PUBLISHED_ROWS = {
    -90: (50, 90, 5), -80: (20, 90, 8), -70: (0, 90, 10), -60: (-20, 90, 12), -50: (-30, 100, 14),
    -40: (-40, 100, 15), -30: (-50, 100, 16), -20: (-50, 100, 16), -10: (-60, 100, 17), 0: (-70, 100, 18),
    10: (-80, 90, 18), 20: (-80, 90, 18), 30: (-90, 90, 19), 40: (-100, 90, 20), 50: (-100, 80, 19),
    60: (-110, 80, 20), 70: (-110, 80, 20), 80: (-110, 70, 19), 90: (-110, 70, 19), 100: (-90, 0, 10),
}


def _chebyshev_distance_to_gamut_hull(points: np.ndarray) -> np.ndarray:
    """Independent of the module's separating-axis test: min ||x - p||_inf over x in the convex hull of
    sRGB colors' (a, b), as a linear program on the hull's half-planes (sampled from the whole cube)."""
    values = np.linspace(0.0, 1.0, 41)
    rgb = np.stack(np.meshgrid(values, values, values, indexing="ij"), axis=-1).reshape(-1, 3)
    hull = ConvexHull(srgb_to_lab(rgb)[:, 1:])
    normals, offsets = hull.equations[:, :2], hull.equations[:, 2]  # normals . x + offset <= 0 inside
    distances = []
    for p in points:
        # variables (x_a, x_b, t): minimise t subject to |x - p| <= t and x in the hull
        a_ub = np.vstack([
            np.hstack([normals, np.zeros((len(normals), 1))]),
            [[1, 0, -1], [-1, 0, -1], [0, 1, -1], [0, -1, -1]],
        ])
        b_ub = np.concatenate([-offsets, [p[0], -p[0], p[1], -p[1]]])
        result = linprog([0, 0, 1], A_ub=a_ub, b_ub=b_ub, bounds=[(None, None)] * 2 + [(0, None)])
        assert result.status == 0
        distances.append(result.fun)
    return np.asarray(distances)


@pytest.mark.slow
def test_the_313_bins_are_exactly_the_in_gamut_grid_cells():
    bins = q.in_gamut_bins()
    assert bins.shape == (313, 2) and q.NUM_BINS == 313
    points = q.grid_points()
    in_gamut = q.is_in_gamut_bin(points)
    assert {tuple(p) for p in bins} == {tuple(p) for p in points[in_gamut]}
    # the criterion, checked by an independent computation: every bin's 20 x 20 square meets the sRGB ab
    # hull (distance <= grid), every other grid point's does not; no decision is a rounding accident
    distance = _chebyshev_distance_to_gamut_hull(points)
    assert np.all(distance[in_gamut] <= 10.0 - 0.2)
    assert np.all(distance[~in_gamut] >= 10.0 + 0.05)
    # the same bins as Zhang et al.'s pts_in_hull.npy, in its order (by a, then b)
    rows = {}
    for a, b in bins:
        low, high, count = rows.get(int(a), (b, b, 0))
        rows[int(a)] = (min(low, b), max(high, b), count + 1)
    assert rows == PUBLISHED_ROWS
    assert np.array_equal(bins, bins[np.lexsort((bins[:, 1], bins[:, 0]))])


def test_bins_are_whole_grid_multiples_and_contain_every_srgb_color_nearby():
    bins = q.in_gamut_bins()
    assert np.all(bins % 10 == 0)
    rng = np.random.default_rng(0)
    ab = srgb_to_lab(rng.random((5000, 3)))[:, 1:]
    # every sRGB color lies inside the square of side 2 * grid of some bin ... and in fact within the
    # 4 corners of its grid cell, all of which are bins
    corners = np.floor(ab / 10.0)[:, None, :] * 10.0 + np.array([[0, 0], [0, 10], [10, 0], [10, 10]])
    bin_set = {tuple(p) for p in bins}
    assert all(tuple(c) in bin_set for c in corners.reshape(-1, 2))


def test_a_coarser_grid_uses_the_same_criterion():
    bins = q.in_gamut_bins(20)
    points = q.grid_points(20)
    assert len(bins) == int(q.is_in_gamut_bin(points, 20).sum())
    assert 0 < len(bins) < 313
    with pytest.raises(ValueError, match="grid"):
        q.in_gamut_bins(0)


def test_soft_encoding_sums_to_one_and_puts_most_mass_on_the_nearest_bin():
    bins = q.bins_tensor()
    generator = torch.Generator().manual_seed(0)
    rgb = torch.rand(3, 8, 8, 3, generator=generator).double().numpy()
    ab = torch.from_numpy(srgb_to_lab(rgb)[..., 1:]).permute(0, 3, 1, 2).float()  # (3, 2, 8, 8), Lab units
    encoded = q.soft_encode(ab, bins)
    assert encoded.shape == (3, 313, 8, 8)
    assert torch.allclose(encoded.sum(dim=1), torch.ones(3, 8, 8), atol=1e-6)
    assert torch.all(encoded >= 0)
    assert torch.all((encoded > 0).sum(dim=1) == 5)
    nearest = q.nearest_bin(ab, bins)
    assert torch.equal(encoded.argmax(dim=1), nearest)
    distances = torch.cdist(ab.permute(0, 2, 3, 1).reshape(-1, 2), bins)
    assert torch.equal(nearest.reshape(-1), distances.argmin(dim=1))


def test_soft_encoding_weights_are_the_gaussian_of_the_distance():
    bins = q.bins_tensor()
    # exactly on the bin (20, -30): its 4 axis neighbours at distance 10 share the rest
    ab = torch.tensor([20.0, -30.0]).reshape(1, 2, 1, 1)
    encoded = q.soft_encode(ab, bins)[0, :, 0, 0]
    neighbour = np.exp(-100.0 / (2 * 25.0))
    centre = int(((bins - torch.tensor([20.0, -30.0])).abs().sum(1) == 0).nonzero())
    assert encoded[centre].item() == pytest.approx(1.0 / (1.0 + 4 * neighbour), rel=1e-5)
    for offset in ([10, 0], [-10, 0], [0, 10], [0, -10]):
        where = torch.tensor([20.0 + offset[0], -30.0 + offset[1]])
        index = int(((bins - where).abs().sum(1) == 0).nonzero())
        assert encoded[index].item() == pytest.approx(neighbour / (1.0 + 4 * neighbour), rel=1e-5)
    with pytest.raises(ValueError, match="k must be"):
        q.soft_encode(ab, bins, k=0)


def test_annealed_mean_is_the_mean_at_t1_and_approaches_the_mode_as_t_goes_to_0():
    bins = q.bins_tensor()
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 313, 3, 4, generator=generator) * 3.0
    # a unique mode: the top logit 1 above the runner-up, so T = 0.01 leaves it e^-100 of a rival
    logits = logits + F.one_hot(logits.argmax(dim=1), 313).permute(0, 3, 1, 2).float()
    probabilities = torch.softmax(logits, dim=1)
    expected_mean = torch.einsum("nqhw,qc->nchw", probabilities.double(), bins.double())
    assert torch.allclose(q.annealed_mean(probabilities, 1.0, bins).double(), expected_mean, atol=1e-3)
    assert torch.allclose(q.annealed_mean_from_logits(logits, 1.0, bins).double(), expected_mean, atol=1e-3)
    mode = q.mode(probabilities)
    assert torch.equal(mode, q.mode(probabilities, bins))
    assert mode.shape == (2, 2, 3, 4)
    assert torch.equal(mode, bins[probabilities.argmax(dim=1)].permute(0, 3, 1, 2))
    # mean distance (Lab units) between the annealed mean and the mode, T = 1, 0.38, 0.1, 0.01
    gaps = [(q.annealed_mean(probabilities, t) - mode).norm(dim=1).mean().item()
            for t in (1.0, 0.38, 0.1, 0.01)]
    assert gaps[0] > 5.0 and gaps[0] > gaps[1] > gaps[2] > gaps[3]
    assert gaps[-1] < 1e-3
    # the default temperature is Zhang's, and logits and probabilities give the same decoding
    from_logits = q.annealed_mean_from_logits(logits, 0.38, bins)
    assert torch.allclose(q.annealed_mean(probabilities), from_logits, atol=1e-3)


def test_annealed_mean_is_differentiable():
    bins = q.bins_tensor()
    logits = torch.zeros(1, 313, 2, 2, requires_grad=True)
    q.annealed_mean_from_logits(logits)[:, 0].sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_rebalancing_weights_have_expectation_one_under_the_distribution():
    rng = np.random.default_rng(2)
    p = rng.random(313) ** 4
    p /= p.sum()
    for lam in (0.0, 0.5, 1.0):
        weights = q.rebalancing_weights(p, lam)
        assert float(p @ weights) == pytest.approx(1.0, abs=1e-12)
    assert np.allclose(q.rebalancing_weights(p, 1.0), 1.0)  # all prior, no rebalancing
    weights = q.rebalancing_weights(p, 0.5)
    order = np.argsort(p)
    assert np.all(np.diff(weights[order]) <= 1e-12)  # rarer bins weigh more
    ratio = weights[order[0]] / weights[order[-1]]
    assert ratio == pytest.approx((0.5 * p.max() + 0.5 / 313) / (0.5 * p.min() + 0.5 / 313))
    with pytest.raises(ValueError, match="probability"):
        q.rebalancing_weights(p * 2)


def test_empirical_distribution_is_a_smoothed_nearest_bin_histogram():
    bins = q.in_gamut_bins()
    samples = np.array([[20.0, -30.0]] * 30 + [[1.0, 2.0]] * 10)  # nearest bins (20, -30) and (0, 0)
    p = q.empirical_distribution(samples, bins)
    assert p.shape == (313,) and p.sum() == pytest.approx(1.0)
    peak = np.flatnonzero((bins == [20, -30]).all(1))[0]
    gray = np.flatnonzero((bins == [0, 0]).all(1))[0]
    beside = np.flatnonzero((bins == [30, -30]).all(1))[0]
    assert p.argmax() == peak
    assert p[peak] / p[gray] == pytest.approx(3.0, rel=1e-6)  # far apart: smoothing leaks no mass between
    assert p[beside] / p[peak] == pytest.approx(np.exp(-100 / 50), rel=1e-6)  # sigma 5, distance 10
    with pytest.raises(ValueError, match="positive total"):
        q.smooth_distribution(np.zeros(313), bins)


def test_lab8_bin_counts_match_the_nearest_bin():
    rng = np.random.default_rng(3)
    lab8 = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    counts = q.lab8_bin_counts(lab8)
    ab = torch.from_numpy(lab8[..., 1:].astype(np.float32) - 128.0).permute(2, 0, 1)[None]
    expected = np.bincount(q.nearest_bin(ab, q.bins_tensor()).reshape(-1).numpy(), minlength=313)
    assert np.array_equal(counts, expected) and counts.sum() == 600


# ------------------------------------------------------------------------------------------ shard statistics


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_shard(path, samples):
    """A shard in the real layout: <key>.json, <key>.lab.png, <key>.seg.png per sample, in that order."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for key, lab8 in samples:
            members = {
                "json": json.dumps({"key": key}).encode(),
                "lab.png": _png(lab8),
                "seg.png": _png(np.zeros(lab8.shape[:2], np.uint8)),
            }
            for suffix, data in members.items():
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def _constant_lab8(L8: int, a: int, b: int, size=(6, 5)) -> np.ndarray:
    image = np.empty((*size, 3), np.uint8)
    image[...] = (L8, a + 128, b + 128)
    return image


@pytest.fixture()
def shard_dir(tmp_path):
    directory = tmp_path / "shards" / "synthetic" / "64"
    directory.mkdir(parents=True)
    half = _constant_lab8(128, 0, 0)
    half[:3] = (100, 128 + 58, 128 + 41)  # a = 58, b = 41 -> nearest bin (60, 40)
    _write_shard(directory / "train-000000.tar", [("a0", _constant_lab8(120, 20, -30)), ("a1", half)])
    _write_shard(directory / "train-000001.tar", [("b0", _constant_lab8(200, -31, 68))])  # -> (-30, 70)
    _write_shard(directory / "val-000000.tar", [("v0", _constant_lab8(50, 90, -100))])
    manifest = {"splits": {
        "train": {"samples": 3, "shards": [{"file": "train-000000.tar", "samples": 2},
                                             {"file": "train-000001.tar", "samples": 1}]},
        "val": {"samples": 1, "shards": [{"file": "val-000000.tar", "samples": 1}]},
    }}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def _bin_index(a: int, b: int) -> int:
    return int(np.flatnonzero((q.in_gamut_bins() == [a, b]).all(1))[0])


def test_bin_statistics_count_every_pixel_of_the_split(shard_dir):
    statistics = q.bin_statistics_from_shards(shard_dir, "train")
    counts = np.asarray(statistics["counts"])
    assert statistics["samples"] == 3 and statistics["pixels"] == 90 == counts.sum()
    expected = {_bin_index(20, -30): 30, _bin_index(0, 0): 15, _bin_index(60, 40): 15,
                _bin_index(-30, 70): 30}
    assert {int(i): int(c) for i, c in enumerate(counts) if c} == expected
    distribution, weights = np.asarray(statistics["distribution"]), np.asarray(statistics["weights"])
    assert distribution.sum() == pytest.approx(1.0)
    assert float(distribution @ weights) == pytest.approx(1.0)
    assert statistics["bins"] == q.in_gamut_bins().tolist()
    assert statistics["shards"] == ["train-000000.tar", "train-000001.tar"]
    # max_samples reads the first samples in manifest order only
    first = q.bin_statistics_from_shards(shard_dir, "train", max_samples=1)
    assert first["samples"] == 1 and np.flatnonzero(first["counts"]).tolist() == [_bin_index(20, -30)]
    val = q.bin_statistics_from_shards(shard_dir, "val")
    assert np.flatnonzero(val["counts"]).tolist() == [_bin_index(90, -100)]


def test_write_bin_statistics_is_atomic_sorted_and_byte_deterministic(shard_dir, tmp_path):
    first = q.write_bin_statistics(shard_dir, tmp_path / "out" / "ab_bins.json")
    data = first.read_bytes()
    second = q.write_bin_statistics(shard_dir, tmp_path / "again.json")
    assert second.read_bytes() == data
    assert [p.name for p in first.parent.iterdir()] == ["ab_bins.json"]  # no temp file left behind
    parsed = json.loads(data)
    assert list(parsed) == sorted(parsed)
    assert q.read_bin_statistics(first)["weights"] == parsed["weights"]


def test_bin_statistics_errors_name_the_problem(shard_dir, tmp_path):
    with pytest.raises(KeyError, match="no split 'test'"):
        q.bin_statistics_from_shards(shard_dir, "test")
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        q.bin_statistics_from_shards(tmp_path / "nowhere", "train")
    with pytest.raises(FileNotFoundError, match="ab_bins"):
        q.read_bin_statistics(tmp_path / "missing.json")
    path = q.write_bin_statistics(shard_dir, tmp_path / "stats.json")
    stale = json.loads(path.read_text())
    stale["bins"] = stale["bins"][:-1]
    path.write_text(json.dumps(stale))
    with pytest.raises(ValueError, match="bins differ"):
        q.read_bin_statistics(path)
