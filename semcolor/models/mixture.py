"""Discretized mixture of logistics over the chrominance pair (a, b), PixelCNN++ style.

Value convention (shared by every function here): a and b are scaled to [-1, 1] and live on the 8-bit grid
``x_k = k / 127.5 - 1`` for codes k in 0..255 (the Lab8 codec stores ``a + 128``, so
``x = (a + 128) / 127.5 - 1``).
Each bin has half-width 1/255 around its centre; the two edge bins absorb the tails (x < -0.999 takes all mass
below the first bin's upper edge, x > 0.999 all mass above the last bin's lower edge). L, when the mixture is
coupled to it, is the lightness scaled to [-1, 1] (``L / 50 - 1``) at the same pixel.

Parameter layout, channel dimension 1 of a tensor ``(N, P, *spatial)`` with K = ``num_mixtures``:

    [0K:1K)  mixture logits
    [1K:2K)  mean of a            [2K:3K)  mean of b
    [3K:4K)  log-scale of a       [4K:5K)  log-scale of b
    [5K:6K)  coefficient b <- a   (tanh-squashed)
    [6K:7K)  coefficient a <- L   [7K:8K)  coefficient b <- L   (only with ``condition_on_L``)

Within component k the channels are ordered a before b: ``mean_a = mu_a + tanh(c_La) L`` and
``mean_b = mu_b + tanh(c_ab) a + tanh(c_Lb) L`` where ``a`` is the observed (or, when sampling, the already
sampled and quantized) value of a at the same pixel - the PixelCNN++ treatment of R, G, B, here for (a, b).
So the parameters of a never depend on b, and those of b depend on a only through this coupling.

Losses are negative log-likelihoods in nats; ``bits_per_dim`` converts a per-dimension nat figure to bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

BIN_HALF_WIDTH = 1.0 / 255.0  # half the spacing of the 256-level grid on [-1, 1]
LOG_SCALE_MIN = -7.0  # PixelCNN++ clamp: keeps 1/scale finite and the loss bounded
EDGE = 0.999  # values beyond +-EDGE are the edge bins (codes 0 and 255)
MIN_BIN_MASS = 1e-5  # below this the cdf difference is numerically unreliable: use the density instead
UNIFORM_EPS = 1e-5  # uniform draws are kept inside (eps, 1 - eps) so logit/gumbel stay finite


def num_mixture_params(num_mixtures: int, condition_on_L: bool) -> int:
    """Channels needed for ``num_mixtures`` components (6 per component, 8 when coupled to L)."""
    return num_mixtures * (8 if condition_on_L else 6)


@dataclass(frozen=True)
class MixtureParams:
    """Unpacked mixture parameters; every tensor has shape ``(N, K, *spatial)``.

    ``coeff_*`` are already tanh-squashed to (-1, 1); ``log_scale_*`` are already clamped at -7.
    ``coeff_La`` / ``coeff_Lb`` are None when the mixture is not coupled to L.
    """

    logits: torch.Tensor
    mean_a: torch.Tensor
    mean_b: torch.Tensor
    log_scale_a: torch.Tensor
    log_scale_b: torch.Tensor
    coeff_ab: torch.Tensor
    coeff_La: torch.Tensor | None
    coeff_Lb: torch.Tensor | None


def _check_channels(params: torch.Tensor, num_mixtures: int, condition_on_L: bool) -> None:
    expected = num_mixture_params(num_mixtures, condition_on_L)
    if params.dim() < 2 or params.shape[1] != expected:
        raise ValueError(
            f"mixture params: expected {expected} channels in dim 1 for {num_mixtures} components "
            f"(condition_on_L={condition_on_L}), got shape {tuple(params.shape)}"
        )


def split_params(params: torch.Tensor, num_mixtures: int, condition_on_L: bool) -> MixtureParams:
    """Unpack raw network outputs ``(N, P, *spatial)`` into a :class:`MixtureParams`."""
    _check_channels(params, num_mixtures, condition_on_L)
    chunks = params.split(num_mixtures, dim=1)
    return MixtureParams(
        logits=chunks[0],
        mean_a=chunks[1],
        mean_b=chunks[2],
        log_scale_a=chunks[3].clamp(min=LOG_SCALE_MIN),
        log_scale_b=chunks[4].clamp(min=LOG_SCALE_MIN),
        coeff_ab=torch.tanh(chunks[5]),
        coeff_La=torch.tanh(chunks[6]) if condition_on_L else None,
        coeff_Lb=torch.tanh(chunks[7]) if condition_on_L else None,
    )


def _check_L(p: MixtureParams, L: torch.Tensor | None) -> None:
    if (p.coeff_La is not None) and L is None:
        raise ValueError("this mixture is coupled to L (condition_on_L=True): pass L scaled to [-1, 1]")


def coupled_mean_a(p: MixtureParams, L: torch.Tensor | None) -> torch.Tensor:
    """Per-component mean of a, ``(N, K, *spatial)``; ``L`` is ``(N, *spatial)`` in [-1, 1] or None."""
    _check_L(p, L)
    if p.coeff_La is None:
        return p.mean_a
    return p.mean_a + p.coeff_La * L.unsqueeze(1)


def coupled_mean_b(p: MixtureParams, a: torch.Tensor, L: torch.Tensor | None) -> torch.Tensor:
    """Per-component mean of b given the pixel's a ``(N, *spatial)`` (and L): ``(N, K, *spatial)``."""
    _check_L(p, L)
    mean = p.mean_b + p.coeff_ab * a.unsqueeze(1)
    if p.coeff_Lb is not None:
        mean = mean + p.coeff_Lb * L.unsqueeze(1)
    return mean


def _discretized_logistic_log_prob(
    x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor
) -> torch.Tensor:
    """log P(bin of x) under a logistic(mean, exp(log_scale)) discretized to 256 bins on [-1, 1]."""
    centered = x - mean
    inv_scale = torch.exp(-log_scale)
    plus_in = inv_scale * (centered + BIN_HALF_WIDTH)
    min_in = inv_scale * (centered - BIN_HALF_WIDTH)
    cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
    log_cdf_plus = plus_in - F.softplus(plus_in)  # log sigmoid(plus_in): lower edge bin
    log_one_minus_cdf_min = -F.softplus(min_in)  # log (1 - sigmoid(min_in)): upper edge bin
    mid_in = inv_scale * centered
    # density at the bin centre times the bin width 2/255: used where the cdf difference underflows
    log_pdf_mid = mid_in - log_scale - 2.0 * F.softplus(mid_in) + math.log(2.0 * BIN_HALF_WIDTH)
    inner = torch.where(cdf_delta > MIN_BIN_MASS, torch.log(cdf_delta.clamp(min=1e-12)), log_pdf_mid)
    return torch.where(x < -EDGE, log_cdf_plus, torch.where(x > EDGE, log_one_minus_cdf_min, inner))


def log_prob(
    params: torch.Tensor,
    ab: torch.Tensor,
    num_mixtures: int,
    condition_on_L: bool,
    L: torch.Tensor | None = None,
) -> torch.Tensor:
    """Log-probability (nats) of each pixel's (a, b) bin pair.

    params: ``(N, P, *spatial)``; ab: ``(N, 2, *spatial)`` in [-1, 1] on the 256-level grid (a first);
    L: ``(N, 1, *spatial)`` in [-1, 1], required when ``condition_on_L``. Returns ``(N, *spatial)``.
    """
    p = split_params(params, num_mixtures, condition_on_L)
    if ab.shape[1] != 2 or ab.shape[0] != params.shape[0] or ab.shape[2:] != params.shape[2:]:
        raise ValueError(
            f"ab must be (N, 2, *spatial) matching params {tuple(params.shape)}, got {tuple(ab.shape)}"
        )
    a, b = ab[:, 0], ab[:, 1]
    L_flat = None if L is None else L[:, 0]
    log_pa = _discretized_logistic_log_prob(a.unsqueeze(1), coupled_mean_a(p, L_flat), p.log_scale_a)
    log_pb = _discretized_logistic_log_prob(b.unsqueeze(1), coupled_mean_b(p, a, L_flat), p.log_scale_b)
    return torch.logsumexp(log_pa + log_pb + F.log_softmax(p.logits, dim=1), dim=1)


def nll_per_dim(
    params: torch.Tensor,
    ab: torch.Tensor,
    num_mixtures: int,
    condition_on_L: bool,
    L: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean negative log-likelihood in nats per dimension (per a or b value), a scalar tensor."""
    return -log_prob(params, ab, num_mixtures, condition_on_L, L).mean() / 2.0


def bits_per_dim(nats_per_dim: torch.Tensor | float) -> torch.Tensor | float:
    """Convert nats per dimension to bits per dimension."""
    return nats_per_dim / math.log(2.0)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Snap values to the nearest of the 256 bin centres ``k / 127.5 - 1`` in [-1, 1] (clamping outside)."""
    return torch.round(x * 127.5 + 127.5).clamp_(0.0, 255.0).div_(127.5).sub_(1.0)


def _uniform(shape: torch.Size, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # drawn on the generator's device in float64, so the same seed gives the same numbers whatever the
    # parameters' dtype; then moved to the parameters' device/dtype
    device = generator.device if generator is not None else like.device
    u = torch.rand(shape, generator=generator, dtype=torch.float64, device=device)
    return u.clamp(UNIFORM_EPS, 1.0 - UNIFORM_EPS).to(device=like.device, dtype=like.dtype)


def sampling_noise(seed: int, shape: tuple[int, ...], dtype: torch.dtype = torch.float64,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Uniform noise in (eps, 1 - eps) for ``sample(..., uniform=...)``, a pure function of ``seed`` and
    ``shape``: drawn in float64 on the CPU from ``torch.Generator().manual_seed(seed)`` (so the same seed
    gives the same numbers on every device and for every parameter dtype), then cast and moved."""
    generator = torch.Generator().manual_seed(int(seed))
    u = torch.rand(shape, generator=generator, dtype=torch.float64).clamp_(UNIFORM_EPS, 1.0 - UNIFORM_EPS)
    return u.to(device=device, dtype=dtype)


def _logit(u: torch.Tensor) -> torch.Tensor:
    return torch.log(u) - torch.log1p(-u)


def sample(
    params: torch.Tensor,
    num_mixtures: int,
    condition_on_L: bool,
    L: torch.Tensor | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    uniform: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw one (a, b) per pixel: a component, then a, then b given the quantized a.

    params ``(N, P, *spatial)``; L ``(N, 1, *spatial)`` in [-1, 1] when coupled. Returns ``(N, 2, *spatial)``
    on the 256-level grid in [-1, 1]. ``temperature`` > 0 divides the mixture logits and multiplies the
    logistic scales (1 = the model's own distribution; smaller = more conservative colours).
    Random numbers: one uniform tensor ``(N, K + 2, *spatial)`` per call (K for the Gumbel choice of the
    component, then one for a, one for b), drawn from ``generator``, so two callers with the same generator
    state and the same parameter shapes get the same samples; or given as ``uniform`` (values in (0, 1),
    see :func:`sampling_noise`), which makes each pixel's draw a pure function of its own noise.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    k = num_mixtures
    _check_channels(params, k, condition_on_L)
    n, spatial = params.shape[0], params.shape[2:]
    groups = params.shape[1] // k
    if uniform is None:
        u = _uniform(torch.Size((n, k + 2, *spatial)), params, generator)
    else:
        if tuple(uniform.shape) != (n, k + 2, *spatial):
            raise ValueError(f"uniform must have shape {(n, k + 2, *spatial)}, got {tuple(uniform.shape)}")
        u = uniform.to(device=params.device, dtype=params.dtype)
    logits = params[:, :k] if temperature == 1.0 else params[:, :k] / temperature
    component = torch.argmax(logits - torch.log(-torch.log(u[:, :k])), dim=1, keepdim=True)  # Gumbel-max
    logistic_noise = _logit(u[:, k:])  # inverse logistic cdf at u: (N, 2, *spatial), for a and for b
    # one gather picks every parameter of the chosen component: (N, groups, *spatial); the squashing and
    # clamping of split_params is then applied to the picked values only (the per-pixel sampling loop is
    # dominated by the number of tensor operations, not their size)
    grouped = params.reshape(n, groups, k, *spatial)
    index = component.unsqueeze(1).expand(n, groups, 1, *spatial)
    picked = torch.gather(grouped, 2, index).squeeze(2).unbind(1)
    L_flat = None if L is None else L[:, 0]
    if condition_on_L and L_flat is None:
        raise ValueError("this mixture is coupled to L (condition_on_L=True): pass L scaled to [-1, 1]")
    log_scale_a, log_scale_b = picked[3].clamp(min=LOG_SCALE_MIN), picked[4].clamp(min=LOG_SCALE_MIN)
    if temperature != 1.0:
        log_scale_a, log_scale_b = log_scale_a + math.log(temperature), log_scale_b + math.log(temperature)
    mean_a = picked[1] + torch.tanh(picked[6]) * L_flat if condition_on_L else picked[1]
    a = quantize(torch.addcmul(mean_a, torch.exp(log_scale_a), logistic_noise[:, 0]))
    mean_b = torch.addcmul(picked[2], torch.tanh(picked[5]), a)
    if condition_on_L:
        mean_b = mean_b + torch.tanh(picked[7]) * L_flat
    b = quantize(torch.addcmul(mean_b, torch.exp(log_scale_b), logistic_noise[:, 1]))
    return torch.stack([a, b], dim=1)


GRID_STEP = 2.0 * BIN_HALF_WIDTH  # distance between neighbouring bin centres (2/255)
# below this scale the discretization visibly bends the mean (the closed form below is off by > 3e-6)
SMALL_SCALE = GRID_STEP / 2.0
WINDOW = 8  # bin edges summed explicitly either side of the location when the scale is below SMALL_SCALE
TAIL_SCALES = 14.0  # beyond 14 scales a logistic's tail holds < 1e-6 of its mass
# about EXPLICIT_CHUNK x 256 values per chunk of the explicit sum in ``mean`` (2048 components of the 256-wide
# bucket): they stay in cache, 30 % faster than 16384 on CPU; on CUDA, untimed (more chunks, more launches)
EXPLICIT_CHUNK = 2048
NUM_EDGES = 255  # inner bin edges e_j = -1 + (j + 1/2) * GRID_STEP, j = 0..254


def discretized_logistic_mean(location: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """E[X] where X is a logistic(location, exp(log_scale)) draw snapped to the 256 bin centres of [-1, 1]
    with the tails in the edge bins, i.e. the value ``quantize(location + scale * noise)`` that ``sample``
    draws. Elementwise; the result is in [-1, 1].

    Exactly, E[X] = 1 - GRID_STEP * sum_j sigmoid((e_j - location) / scale) over the 255 inner bin edges
    (sum over bins of centre x mass, telescoped). For scale >= GRID_STEP / 2 this midpoint sum equals the
    integral E[clip(Y, -1, 1)] = 1 - s (softplus((1 - m) / s) - softplus((-1 - m) / s)) plus two
    Euler-Maclaurin terms at the edges, within 1e-5 (the remainder: the Poisson-summation error of a
    logistic sampled at GRID_STEP, 2e-6, and the next edge term); below, it is summed over the WINDOW edges
    either side of the location (the others are 0 or 1 within e^-14) and counted.
    """
    scale = torch.exp(log_scale)
    upper, lower = (1.0 - location) / scale, (-1.0 - location) / scale
    result = 1.0 - scale * (F.softplus(upper) - F.softplus(lower))
    # Euler-Maclaurin corrections of the midpoint sum at the two ends of [-1, 1] (they matter when the
    # location is within a few scales of an edge): + h^2/24 [f1] - 7 h^4/5760 [f3], where f1 and f3 are the
    # first and third derivatives of f(t) = sigmoid((t - m) / s) taken at 1 minus at -1
    s_up, s_low = torch.sigmoid(upper), torch.sigmoid(lower)
    d1_up, d1_low = s_up * (1.0 - s_up), s_low * (1.0 - s_low)
    d3_up, d3_low = d1_up * (1.0 - 6.0 * d1_up), d1_low * (1.0 - 6.0 * d1_low)
    result = (result + GRID_STEP**2 / 24.0 * (d1_up - d1_low) / scale
              - 7.0 * GRID_STEP**4 / 5760.0 * (d3_up - d3_low) / scale**3)
    small = scale < SMALL_SCALE
    if bool(small.any()):
        result = result.clone()
        # the edges that matter lie within TAIL_SCALES scales of the location: at the smallest scales (the
        # clamp, ~0.12 grid steps) 2 either side; so the window is sized per bucket of scales
        lower = 0.0
        for upper_scale in (SMALL_SCALE / 4.0, SMALL_SCALE):
            members = small & (scale >= lower) & (scale < upper_scale)
            lower = upper_scale
            if bool(members.any()):
                window = min(WINDOW, math.ceil(TAIL_SCALES * upper_scale / GRID_STEP) + 1)
                result[members] = _windowed_mean(location[members], scale[members], window)
    return result.clamp(-1.0, 1.0)


def _windowed_mean(m: torch.Tensor, s: torch.Tensor, window: int) -> torch.Tensor:
    """``discretized_logistic_mean`` summed over the ``window`` bin edges either side of the location (the
    others are 0 or 1 within e^-TAIL_SCALES when window grid steps exceed TAIL_SCALES scales)."""
    below = torch.floor((m + 1.0) / GRID_STEP - 0.5)  # index of the last edge below the location
    offsets = torch.arange(-window + 1, window + 1, dtype=m.dtype, device=m.device)
    edges = below.unsqueeze(-1) + offsets  # (M, 2 * window)
    inside = (edges >= 0) & (edges <= NUM_EDGES - 1)
    terms = torch.sigmoid((-1.0 + (edges + 0.5) * GRID_STEP - m.unsqueeze(-1)) / s.unsqueeze(-1))
    above = (NUM_EDGES - 1 - (below + window)).clamp(0, NUM_EDGES)  # edges past the window: sigmoid 1
    return 1.0 - GRID_STEP * ((terms * inside).sum(-1) + above)


def _bin_masses(location: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """P(bin k), k = 0..255, of the discretized logistic, stacked in a last dimension of size 256."""
    edges = torch.arange(NUM_EDGES, dtype=location.dtype, device=location.device) * GRID_STEP - 1.0 + BIN_HALF_WIDTH
    cdf = torch.sigmoid((edges - location.unsqueeze(-1)) * torch.exp(-log_scale).unsqueeze(-1))
    zero, one = torch.zeros_like(cdf[..., :1]), torch.ones_like(cdf[..., :1])
    return torch.diff(torch.cat([zero, cdf, one], dim=-1), dim=-1)


def mean(
    params: torch.Tensor, num_mixtures: int, condition_on_L: bool, L: torch.Tensor | None = None
) -> torch.Tensor:
    """The expected (a, b) per pixel of the discretized, edge-clipped mixture that ``sample`` draws from:
    ``(N, 2, *spatial)`` in [-1, 1]. Exact up to 1e-5 (1/800 of a grid step).

    Per component, E[a] is :func:`discretized_logistic_mean`. b's location depends on the drawn (quantized)
    a: E[b | k] = sum over a's 256 bins of P(a) E[b | a, k]. Where every value a can take (within 14 of a's
    scales of its location) keeps b's location inside [-1, 1] by more than 14 of b's scales and b's scale is
    >= GRID_STEP / 2, E[b | a, k] is b's location itself (affine in a), so E[b | k] = mu_b + c_ab E[a | k];
    the remaining components are summed over the bins a can take (within ``TAIL_SCALES`` of its scales:
    ``_explicit_mean_b``). Components of weight < 1e-7 use the affine form (their error is below 2e-7).
    """
    p = split_params(params, num_mixtures, condition_on_L)
    weights = torch.softmax(p.logits, dim=1)
    L_flat = None if L is None else L[:, 0]
    location_a = coupled_mean_a(p, L_flat)
    mean_a_k = discretized_logistic_mean(location_a, p.log_scale_a)
    base_b = p.mean_b if p.coeff_Lb is None else p.mean_b + p.coeff_Lb * L_flat.unsqueeze(1)
    mean_b_k = base_b + p.coeff_ab * mean_a_k  # the affine case
    scale_a, scale_b = torch.exp(p.log_scale_a), torch.exp(p.log_scale_b)
    low_a = (location_a - TAIL_SCALES * scale_a).clamp(-1.0, 1.0)
    high_a = (location_a + TAIL_SCALES * scale_a).clamp(-1.0, 1.0)
    reach_b = torch.maximum((base_b + p.coeff_ab * low_a).abs(), (base_b + p.coeff_ab * high_a).abs())
    affine = (reach_b + TAIL_SCALES * scale_b <= 1.0 - BIN_HALF_WIDTH) & (scale_b >= SMALL_SCALE)
    explicit = (~affine & (weights >= 1e-7)).nonzero(as_tuple=True)
    if explicit[0].numel():
        mean_b_k = mean_b_k.index_put(explicit, _explicit_mean_b(
            location_a[explicit], p.log_scale_a[explicit], base_b[explicit], p.coeff_ab[explicit],
            p.log_scale_b[explicit]))
    return torch.stack([(weights * mean_a_k).sum(1), (weights * mean_b_k).sum(1)], dim=1).clamp(-1.0, 1.0)


# widths (in bins) of a's windows the explicit sum is bucketed into. Measured on the demo's psc_full, the
# median window of the components that need the explicit sum is the whole range (281 bins before clamping),
# so the buckets save little there; they keep narrow components (a few bins) from paying for 256
WINDOW_BUCKETS = (2, 8, 32, 256)


def _bin_index(value: torch.Tensor) -> torch.Tensor:
    """The bin (0..255) whose centre is nearest to ``value`` (clamped to the range)."""
    return torch.round((value.clamp(-1.0, 1.0) + 1.0) / GRID_STEP).long()


def _explicit_mean_b(location_a: torch.Tensor, log_scale_a: torch.Tensor, base_b: torch.Tensor,
                     coeff_ab: torch.Tensor, log_scale_b: torch.Tensor) -> torch.Tensor:
    """E[b | k] = sum over a's bins i of P(a = x_i) E[b | a = x_i, k] for 1-d tensors of components, the sum
    restricted to the bins within TAIL_SCALES of a's scales of its location (the mass outside is < 1e-6,
    dropped: an error below 1e-6 of the range). Bucketed by window width, in chunks of about
    EXPLICIT_CHUNK x 256 values."""
    scale_a = torch.exp(log_scale_a)
    low = _bin_index(location_a - TAIL_SCALES * scale_a)
    width = _bin_index(location_a + TAIL_SCALES * scale_a) - low + 1
    result = torch.empty_like(location_a)
    smaller = 0
    for bucket in WINDOW_BUCKETS:
        members = ((width > smaller) & (width <= bucket)).nonzero(as_tuple=True)[0]
        smaller = bucket
        offsets = torch.arange(bucket, device=location_a.device)
        chunk = max(1, EXPLICIT_CHUNK * 256 // bucket)
        for start in range(0, members.numel(), chunk):
            index = members[start : start + chunk]
            bins = low[index].unsqueeze(-1) + offsets  # (M, bucket)
            inside = bins <= (low[index] + width[index] - 1).unsqueeze(-1)
            bins = bins.clamp(max=255)
            centres = bins.to(location_a.dtype) * GRID_STEP - 1.0
            inverse_scale = torch.exp(-log_scale_a[index]).unsqueeze(-1)
            loc = location_a[index].unsqueeze(-1)
            # P(bin i) = F(upper edge) - F(lower edge); the end bins hold the tails (F = 0 below, 1 above)
            upper = torch.where(bins == 255, 1.0, torch.sigmoid((centres + BIN_HALF_WIDTH - loc) * inverse_scale))
            lower = torch.where(bins == 0, 0.0, torch.sigmoid((centres - BIN_HALF_WIDTH - loc) * inverse_scale))
            masses = (upper - lower) * inside
            location_b = base_b[index].unsqueeze(-1) + coeff_ab[index].unsqueeze(-1) * centres
            scale_b = log_scale_b[index].unsqueeze(-1).expand_as(location_b)
            result[index] = (masses * discretized_logistic_mean(location_b, scale_b)).sum(-1)
    return result


def mode(
    params: torch.Tensor, num_mixtures: int, condition_on_L: bool, L: torch.Tensor | None = None
) -> torch.Tensor:
    """(a, b) at the centre of the most probable component per pixel, ``(N, 2, *spatial)`` in [-1, 1]."""
    p = split_params(params, num_mixtures, condition_on_L)
    component = torch.argmax(p.logits, dim=1, keepdim=True)
    L_flat = None if L is None else L[:, 0]
    a = torch.gather(coupled_mean_a(p, L_flat), 1, component).squeeze(1).clamp(-1.0, 1.0)
    b = torch.gather(coupled_mean_b(p, a, L_flat), 1, component).squeeze(1).clamp(-1.0, 1.0)
    return torch.stack([a, b], dim=1)
