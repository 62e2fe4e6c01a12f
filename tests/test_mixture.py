"""The discretized logistic mixture over (a, b): likelihood vs numerical integration, sampling moments."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from semcolor.models import mixture

K = 3


def _raw_params(condition_on_L: bool, spatial: int, seed: int, log_scale: float = -2.5) -> torch.Tensor:
    """Random but well-behaved raw parameters ``(1, P, spatial)`` in float64."""
    g = torch.Generator().manual_seed(seed)
    n = K * (8 if condition_on_L else 6)
    raw = torch.randn(1, n, spatial, generator=g, dtype=torch.float64)
    raw[:, 1 * K : 3 * K] *= 0.5  # means within about [-1, 1]
    raw[:, 3 * K : 5 * K] = log_scale + 0.3 * raw[:, 3 * K : 5 * K]
    return raw


def _logistic_bin_mass(x: float, mean: float, scale: float) -> float:
    """P(bin of x) by numerical integration of the logistic density; edge bins run to -inf / +inf."""

    def pdf(t: float) -> float:
        z = (t - mean) / scale
        return math.exp(-abs(z)) / (scale * (1.0 + math.exp(-abs(z))) ** 2)

    low = -math.inf if x < -0.999 else x - 1.0 / 255.0
    high = math.inf if x > 0.999 else x + 1.0 / 255.0
    # split at the mode so quad sees the peak
    points = sorted({p for p in (low, high, min(max(mean, low), high)) if math.isfinite(p)})
    edges = [low] + [p for p in points if low < p < high] + [high]
    pieces = zip(edges, edges[1:])
    return sum(integrate.quad(pdf, lo, hi, epsabs=0.0, epsrel=1e-11, limit=200)[0] for lo, hi in pieces)


def _brute_force_log_prob(
    raw: torch.Tensor, ab: torch.Tensor, L: torch.Tensor | None
) -> tuple[np.ndarray, float]:
    """log sum_k pi_k P(a bin | k) P(b bin | k, a) computed component by component with scipy, and the
    smallest single-channel bin mass met (to check which branch of the implementation was exercised)."""
    r = raw[0].numpy()
    spatial = r.shape[1]
    out = np.empty(spatial)
    smallest = 1.0
    for s in range(spatial):
        logits = r[0:K, s]
        weights = np.exp(logits - logits.max())
        weights /= weights.sum()
        a, b = float(ab[0, 0, s]), float(ab[0, 1, s])
        total = 0.0
        for k in range(K):
            mean_a, mean_b = r[K + k, s], r[2 * K + k, s]
            scale_a, scale_b = math.exp(max(r[3 * K + k, s], -7.0)), math.exp(max(r[4 * K + k, s], -7.0))
            mean_b += math.tanh(r[5 * K + k, s]) * a
            if L is not None:
                mean_a += math.tanh(r[6 * K + k, s]) * float(L[0, 0, s])
                mean_b += math.tanh(r[7 * K + k, s]) * float(L[0, 0, s])
            mass_a, mass_b = _logistic_bin_mass(a, mean_a, scale_a), _logistic_bin_mass(b, mean_b, scale_b)
            smallest = min(smallest, mass_a, mass_b)
            total += weights[k] * mass_a * mass_b
        out[s] = math.log(total)
    return out, smallest


@pytest.mark.parametrize("condition_on_L", [False, True])
def test_log_prob_equals_numerical_integration_of_the_mixture(condition_on_L):
    spatial = 24
    # scales ~0.2-0.6: every component's bin holds > 1e-5 of its mass, the exact (cdf-difference) branch
    raw = _raw_params(condition_on_L, spatial, seed=1, log_scale=-1.0)
    p = mixture.split_params(raw, K, condition_on_L)
    g = torch.Generator().manual_seed(2)
    L = (torch.rand(1, 1, spatial, generator=g, dtype=torch.float64) * 2 - 1) if condition_on_L else None
    # put each pixel's a and b near a component centre, so every bin holds real mass, plus the two edge bins
    k = torch.randint(0, K, (spatial,), generator=g)
    pixels = torch.arange(spatial)
    noise = 0.05 * torch.randn(2, spatial, generator=g, dtype=torch.float64)
    a = mixture.quantize(p.mean_a[0, k, pixels] + noise[0])
    b = mixture.quantize(p.mean_b[0, k, pixels] + noise[1])
    a[:3], b[3:6] = -1.0, 1.0  # lower edge bin for a, upper edge bin for b
    ab = torch.stack([a, b])[None]
    got = mixture.log_prob(raw, ab, K, condition_on_L, L)[0].numpy()
    expected, smallest_mass = _brute_force_log_prob(raw, ab, L)
    assert smallest_mass > mixture.MIN_BIN_MASS, "test setup: the cdf branch must be the one exercised"
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-8)


def test_tiny_bin_mass_falls_back_to_the_density_and_stays_finite():
    raw = torch.zeros(1, 6 * K, 2, dtype=torch.float64)
    raw[:, 0:K] = torch.tensor([0.0, -50.0, -50.0], dtype=torch.float64)[None, :, None]  # one component
    raw[:, 3 * K : 5 * K] = math.log(0.1)
    ab = torch.zeros(1, 2, 2, dtype=torch.float64)
    ab[0, 0, 0] = mixture.quantize(torch.tensor(-0.9, dtype=torch.float64))  # a far in the tail at pixel 0
    raw[:, K, 0] = 0.6  # mean of a: 1.5 (15 scales) above the value, bin mass ~ 1e-7 < 1e-5
    raw.requires_grad_(True)
    lp = mixture.log_prob(raw, ab, K, False)
    exact_a = math.log(_logistic_bin_mass(float(ab[0, 0, 0]), 0.6, 0.1))
    exact_b = math.log(_logistic_bin_mass(0.0, 0.0, 0.1))
    assert math.exp(exact_a) < 1e-5
    assert abs(float(lp[0, 0].detach()) - (exact_a + exact_b)) < 1e-3  # density x bin width ~ bin mass here
    lp.sum().backward()
    assert torch.isfinite(raw.grad).all()
    # extreme values (smallest scale, value 250 scales away) still give a finite loss and gradient
    raw2 = torch.full((1, 6 * K, 1), -20.0, dtype=torch.float64, requires_grad=True)
    lp2 = mixture.log_prob(raw2, torch.full((1, 2, 1), 0.3, dtype=torch.float64), K, False)
    lp2.sum().backward()
    assert torch.isfinite(lp2).all() and torch.isfinite(raw2.grad).all()


def test_log_prob_sums_to_one_over_all_bin_pairs():
    # the 256 x 256 bin pairs partition the plane (edge bins take the tails): probabilities sum to 1
    raw = _raw_params(False, 1, seed=3).expand(1, -1, 256 * 256)
    grid = torch.arange(256, dtype=torch.float64) / 127.5 - 1.0
    a, b = torch.meshgrid(grid, grid, indexing="ij")
    ab = torch.stack([a.reshape(-1), b.reshape(-1)])[None]
    total = torch.exp(mixture.log_prob(raw, ab, K, False)).sum()
    assert abs(float(total) - 1.0) < 1e-6


def _analytic_moments(raw: torch.Tensor) -> dict[str, float]:
    p = mixture.split_params(raw, K, False)
    w = torch.softmax(p.logits[0, :, 0], 0)
    ma, mb0, c = p.mean_a[0, :, 0], p.mean_b[0, :, 0], p.coeff_ab[0, :, 0]
    va = torch.exp(p.log_scale_a[0, :, 0]) ** 2 * math.pi**2 / 3
    vb0 = torch.exp(p.log_scale_b[0, :, 0]) ** 2 * math.pi**2 / 3
    mb = mb0 + c * ma
    vb = c**2 * va + vb0
    mean_a, mean_b = float((w * ma).sum()), float((w * mb).sum())
    return {
        "mean_a": mean_a,
        "mean_b": mean_b,
        "var_a": float((w * (va + ma**2)).sum()) - mean_a**2,
        "var_b": float((w * (vb + mb**2)).sum()) - mean_b**2,
        "cov_ab": float((w * (c * va + ma * mb)).sum()) - mean_a * mean_b,
    }


def test_sampling_a_fixed_mixture_reproduces_its_moments():
    raw = torch.zeros(1, 6 * K, 1, dtype=torch.float64)
    raw[0, 0:K, 0] = torch.tensor([0.3, -0.2, 0.0])
    raw[0, K : 2 * K, 0] = torch.tensor([-0.4, 0.1, 0.35])  # means of a
    raw[0, 2 * K : 3 * K, 0] = torch.tensor([0.2, -0.3, 0.05])  # means of b
    raw[0, 3 * K : 5 * K, 0] = torch.tensor([-2.5, -2.0, -3.0, -2.2, -2.8, -2.4])  # log-scales
    raw[0, 5 * K : 6 * K, 0] = torch.tensor([0.8, -0.5, 0.0])  # b <- a coupling
    n = 200_000
    samples = mixture.sample(raw.expand(1, -1, n), K, False, generator=torch.Generator().manual_seed(0))[0]
    a, b = samples[0], samples[1]
    want = _analytic_moments(raw)
    assert abs(float(a.mean()) - want["mean_a"]) < 3e-3
    assert abs(float(b.mean()) - want["mean_b"]) < 3e-3
    assert float(a.var()) == pytest.approx(want["var_a"], rel=0.03)
    assert float(b.var()) == pytest.approx(want["var_b"], rel=0.03)
    assert float(((a - a.mean()) * (b - b.mean())).mean()) == pytest.approx(want["cov_ab"], rel=0.05)
    # the mean used by the fast colourization agrees with the samples
    analytic_mean = mixture.mean(raw, K, False)[0, :, 0]
    assert abs(float(analytic_mean[0]) - float(a.mean())) < 3e-3
    assert abs(float(analytic_mean[1]) - float(b.mean())) < 3e-3
    # samples live on the 256-level grid in [-1, 1]
    assert torch.equal(mixture.quantize(samples), samples) and samples.abs().max() <= 1.0
    # a lower temperature concentrates the samples
    g = torch.Generator().manual_seed(0)
    cold = mixture.sample(raw.expand(1, -1, n), K, False, temperature=0.5, generator=g)
    assert float(cold[0, 1].var()) < 0.8 * float(b.var())


def test_sampling_is_reproducible_for_a_seed_and_differs_across_seeds():
    raw = _raw_params(True, 50, seed=4)
    L = torch.zeros(1, 1, 50, dtype=torch.float64)

    def draw(seed: int) -> torch.Tensor:
        return mixture.sample(raw, K, True, L, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(7), draw(7))
    assert not torch.equal(draw(7), draw(8))


def test_L_coupling_moves_the_means_and_is_required():
    raw = _raw_params(True, 1, seed=5)
    dark = mixture.mean(raw, K, True, torch.full((1, 1, 1), -1.0, dtype=torch.float64))
    light = mixture.mean(raw, K, True, torch.full((1, 1, 1), 1.0, dtype=torch.float64))
    assert not torch.allclose(dark, light)
    with pytest.raises(ValueError, match="condition_on_L"):
        mixture.log_prob(raw, torch.zeros(1, 2, 1, dtype=torch.float64), K, True)
    with pytest.raises(ValueError, match="expected 24 channels"):
        mixture.split_params(raw[:, :18], K, True)


def test_mode_picks_the_heaviest_component_and_bits_per_dim_converts_nats():
    raw = _raw_params(False, 1, seed=6)
    raw[0, 0:K, 0] = torch.tensor([5.0, 0.0, 0.0])
    p = mixture.split_params(raw, K, False)
    a = float(p.mean_a[0, 0, 0].clamp(-1, 1))
    ab = mixture.mode(raw, K, False)[0, :, 0]
    assert float(ab[0]) == pytest.approx(a)
    assert float(ab[1]) == pytest.approx(float((p.mean_b[0, 0, 0] + p.coeff_ab[0, 0, 0] * a).clamp(-1, 1)))
    assert mixture.bits_per_dim(math.log(2.0) * 3) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="temperature"):
        mixture.sample(raw, K, False, temperature=0.0)


def _edge_case_params(condition_on_L: bool) -> torch.Tensor:
    """Pixels where the discretization and the edge clipping matter: component locations beyond +-1, scales
    from far below a grid step (sigma 0.001) to half the range, strong b <- a coupling."""
    n = 8 if condition_on_L else 6
    raw = torch.zeros(1, n * K, 6, dtype=torch.float64)
    raw[0, 0:K] = torch.tensor([[0.5, 0.0, -2.0, 1.0, 0.3, 0.0], [0.0, 1.0, 0.0, -1.0, 0.0, 0.2],
                                [-0.3, -1.0, 0.5, 0.0, -0.3, 0.0]], dtype=torch.float64)
    raw[0, K : 2 * K] = torch.tensor([[1.2, 0.9, -1.4, 0.0, 0.4, 0.0021], [-0.9, 0.95, 0.3, -0.2, -0.6, 0.3],
                                      [0.3, 1.5, -0.97, 0.1, 0.0, -0.5]], dtype=torch.float64)  # a
    raw[0, 2 * K : 3 * K] = torch.tensor([[-1.3, 0.5, 0.2, 0.98, -0.1, 0.0051], [0.8, -0.9, 1.1, 0.0, 0.2, 0.1],
                                          [0.2, 0.0, -0.5, 0.3, 0.96, 0.0]], dtype=torch.float64)  # b
    raw[0, 3 * K : 4 * K] = torch.tensor([[-1.0, -2.0, -0.7, -6.9, -3.0, -6.5], [-6.5, -4.0, -1.5, -2.0, -5.2, -3.0],
                                          [-2.0, -0.5, -3.0, -1.0, -2.5, -7.0]], dtype=torch.float64)  # log-scale a
    raw[0, 4 * K : 5 * K] = torch.tensor([[-0.5, -6.0, -2.5, -3.0, -6.9, -6.2], [-6.8, -1.0, -4.0, -2.0, -2.0, -2.5],
                                          [-3.0, -3.0, -0.8, -5.5, -1.5, -6.0]], dtype=torch.float64)  # log-scale b
    raw[0, 5 * K : 6 * K] = torch.tensor([[0.9, 2.0, -1.0, 0.0, 3.0, 0.5], [-2.0, 0.3, 0.8, 1.5, -0.5, 0.0],
                                          [0.5, -1.0, 0.0, 0.7, 1.2, -3.0]], dtype=torch.float64)  # b <- a
    if condition_on_L:
        raw[0, 6 * K : 8 * K] = 0.7 * torch.randn(2 * K, 6, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    return raw


@pytest.mark.parametrize("condition_on_L", [False, True])
@pytest.mark.slow
def test_mean_is_the_exact_mean_of_the_discretized_clipped_mixture(condition_on_L):
    # Monte Carlo over the very sampler that draws the colourizations: quantized, clipped a, then b given it
    raw = _edge_case_params(condition_on_L)
    L = torch.linspace(-0.9, 0.9, 6, dtype=torch.float64).reshape(1, 1, 6) if condition_on_L else None
    n = 400_000
    samples = mixture.sample(raw.repeat_interleave(n, dim=2), K, condition_on_L,
                             None if L is None else L.repeat_interleave(n, dim=2),
                             generator=torch.Generator().manual_seed(3))[0].reshape(2, 6, n)
    monte_carlo = samples.mean(-1)
    standard_error = samples.std(-1) / math.sqrt(n)
    exact = mixture.mean(raw, K, condition_on_L, L)[0]
    assert torch.all((exact - monte_carlo).abs() <= 4.5 * standard_error + 1e-5), (exact, monte_carlo, standard_error)
    # the clipping matters here: the continuous mixture's mean (what mean() used to return) is far off
    p = mixture.split_params(raw, K, condition_on_L)
    w = torch.softmax(p.logits, 1)
    L_flat = None if L is None else L[:, 0]
    continuous_a = (w * mixture.coupled_mean_a(p, L_flat)).sum(1)[0]
    assert (continuous_a.clamp(-1, 1) - monte_carlo[0]).abs().max() > 0.05


def test_discretized_logistic_mean_matches_the_sum_over_all_bins():
    # the closed form (scale >= half a grid step) and the windowed sum (below) against the plain 256-bin sum
    location = torch.linspace(-1.3, 1.3, 241, dtype=torch.float64).repeat(6)
    log_scale = torch.tensor([-7.0, -5.9, -5.5, -4.0, -2.0, 0.5], dtype=torch.float64).repeat_interleave(241)
    centres = torch.arange(256, dtype=torch.float64) / 127.5 - 1.0
    masses = mixture._bin_masses(location, log_scale)
    torch.testing.assert_close(masses.sum(-1), torch.ones_like(location), rtol=0, atol=1e-12)
    brute = (masses * centres).sum(-1)
    got = mixture.discretized_logistic_mean(location, log_scale)
    assert float((got - brute).abs().max()) < 1e-5
    # at the smallest scale: a location on a bin centre keeps it (the leaks to both neighbours cancel), one
    # past the range's end gives the end bin's centre (the edge bins absorb the tails), not the location
    double = dict(dtype=torch.float64)
    centre = mixture.quantize(torch.tensor([0.5012], **double))
    tiny = mixture.discretized_logistic_mean(centre, torch.tensor([-7.0], **double))
    assert float(tiny) == pytest.approx(float(centre), abs=1e-9)
    beyond = mixture.discretized_logistic_mean(torch.tensor([1.3, -1.3], **double), torch.tensor([-7.0, -7.0], **double))
    torch.testing.assert_close(beyond, torch.tensor([1.0, -1.0], **double), rtol=0, atol=1e-9)


def test_sampling_noise_is_a_pure_function_of_seed_and_shape():
    first = mixture.sampling_noise(5, (2, K + 2, 3, 3))
    assert torch.equal(first, mixture.sampling_noise(5, (2, K + 2, 3, 3)))
    assert not torch.equal(first, mixture.sampling_noise(6, (2, K + 2, 3, 3)))
    assert float(first.min()) >= mixture.UNIFORM_EPS and float(first.max()) <= 1 - mixture.UNIFORM_EPS
    raw = _raw_params(False, 9, seed=2).reshape(1, -1, 3, 3)
    drawn = mixture.sample(raw, K, False, uniform=first[:1])
    assert torch.equal(drawn, mixture.sample(raw, K, False, uniform=first[:1].clone()))
    with pytest.raises(ValueError, match="uniform must have shape"):
        mixture.sample(raw, K, False, uniform=first)
