"""Pixelated Semantic Colorization: every flow trains, g is causal, cached sampling equals naive sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from semcolor.config import ConfigError
from semcolor.models import create_model, list_models, mixture, psc
from semcolor.models.psc import (
    PscConfig,
    combine_L_ab,
    downsample_ab,
)

TINY = dict(width=1 / 16, num_classes=5, generator_layers=3, generator_channels=8, num_mixtures=4)
PSC_MODELS = [name for name in list_models() if name.startswith("psc_")]
# every registered flow, plus the options that change g's conditioning or the mixture
CASES = [(name, {}) for name in PSC_MODELS] + [
    ("psc_full", {"seg_conditioning": "film"}),
    ("psc_plain", {"condition_on_L": True}),
    ("psc_full", {"condition_on_L": True, "generator_kernel": 5}),
    ("psc_embed", {"generator_layers": 1}),
]
CASE_IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in opts.items()) or 'default'}" for name, opts in CASES]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _model(name: str, dtype: torch.dtype = torch.float32, **opts) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, **{**TINY, **opts}).to(dtype)


def _batch(
    size: int, n: int = 2, dtype: torch.dtype = torch.float32, seed: int = 0
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    L = torch.rand(n, 1, size, size, generator=g, dtype=dtype) * 2 - 1
    ab = torch.rand(n, 2, size, size, generator=g, dtype=dtype) * 1.6 - 0.8
    seg = torch.randint(0, TINY["num_classes"], (n, size, size), generator=g)
    seg[:, : size // 4] = 255  # an ignored band, as VOC's boundaries
    return {"L": L, "ab": ab, "seg": seg.to(torch.uint8)}


def _grad(conv: torch.nn.Module) -> torch.Tensor | None:
    """The gradient of a weight-normalized conv's direction parameter v (None if it got none)."""
    return conv.parametrizations.weight.original1.grad


def test_all_three_flows_are_registered():
    assert PSC_MODELS == ["psc_embed", "psc_full", "psc_plain"]


@pytest.mark.parametrize("name,opts", CASES, ids=CASE_IDS)
def test_forward_backward_at_64px(name, opts):
    model = _model(name, **opts)
    batch = _batch(64)
    losses = model.compute_losses(batch)
    values = {key: float(value.detach()) for key, value in losses.items()}
    has_seg = name != "psc_plain"
    terms = {"emb", "gen"} | ({"seg"} if has_seg else set())
    assert set(losses) == {"loss", "emb_bpd", "gen_bpd"} | terms | {f"{t}_weighted" for t in terms}
    for key, value in losses.items():
        assert value.dim() == 0 and torch.isfinite(value), key
    assert values["emb"] > 0 and values["gen"] > 0
    assert values["gen_bpd"] == pytest.approx(values["gen"] / math.log(2), rel=1e-6)
    weights = {"emb": 1.0, "gen": 1.0, "seg": 100.0}  # the paper's 1:100:1, PscConfig's defaults
    for term in terms:
        assert values[f"{term}_weighted"] == pytest.approx(weights[term] * values[term], rel=1e-6)
    assert values["loss"] == pytest.approx(sum(weights[t] * values[t] for t in terms), rel=1e-6)
    losses["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []

    out = model(batch["L"], downsample_ab(batch["ab"]))
    params = mixture.num_mixture_params(TINY["num_mixtures"], opts.get("condition_on_L", False))
    assert out.emb_params.shape == out.gen_params.shape == (2, params, 16, 16)
    assert out.embedding.shape == (2, PscConfig(width=TINY["width"]).channels(160), 16, 16)
    if has_seg:
        assert out.seg_logits.shape == (2, TINY["num_classes"], 16, 16)
        assert model.segment(batch["L"], full_resolution=True).shape == (2, TINY["num_classes"], 64, 64)
    else:
        assert out.seg_logits is None
        with pytest.raises(ValueError, match="no segmentation branch"):
            model.segment(batch["L"])
    for statistic in ("mean", "mode"):
        fast = model.colorize_fast(batch["L"], statistic)
        assert fast.shape == (2, 2, 16, 16) and fast.abs().max() <= 1.0


def test_the_flows_route_gradients_as_the_paper_draws_them():
    batch = _batch(32)
    # embed: L_seg trains the shared trunk but not f's own top; L_gen does not reach h
    embed = _model("psc_embed")
    embed.compute_losses(batch)["seg"].backward()
    assert _grad(embed.trunk[0][0]).abs().sum() > 0
    assert _grad(embed.color_top[0][0]) is None
    embed.zero_grad(set_to_none=True)
    embed.compute_losses(batch)["gen"].backward()
    assert _grad(embed.seg_top.aspp[0]) is None
    # full: g is conditioned on h's probabilities, so L_gen reaches h
    full = _model("psc_full")
    full.compute_losses(batch)["gen"].backward()
    assert _grad(full.seg_top.aspp[0]).abs().sum() > 0
    cond_channels = full.generator.layers[0].condition.weight.shape[1]
    assert cond_channels == full.color_top.out_channels + TINY["num_classes"]


def _causality_case(name: str, opts: dict, size: int = 8):
    model = _model(name, torch.float64, **opts)
    g = torch.Generator().manual_seed(1)
    L = torch.rand(1, 1, 4 * size, 4 * size, dtype=torch.float64, generator=g) * 2 - 1
    ab = mixture.quantize(torch.rand(1, 2, size, size, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    out = model(L, ab)
    return model, L, ab, out.gen_params


@pytest.mark.parametrize("name,opts", CASES, ids=CASE_IDS)
def test_generator_is_causal_in_raster_order_and_a_comes_before_b(name, opts):
    size = 8
    model, L, ab, params = _causality_case(name, opts, size)
    k, use_L = TINY["num_mixtures"], opts.get("condition_on_L", False)
    split = mixture.split_params(params, k, use_L)
    L_quarter = torch.nn.functional.avg_pool2d(L, 4)[:, 0] if use_L else None
    mean_a = mixture.coupled_mean_a(split, L_quarter)
    mean_b = mixture.coupled_mean_b(split, ab[:, 0], L_quarter)
    weights = torch.randn(params.shape[1], dtype=torch.float64)  # random projection: no accidental cancelling
    for i in range(size):
        for j in range(size):
            index = i * size + j
            (grad,) = torch.autograd.grad((params[0, :, i, j] * weights).sum(), ab, retain_graph=True)
            flat = grad[0].reshape(2, -1)
            assert torch.count_nonzero(flat[:, index:]) == 0, f"pixel {(i, j)} sees itself or a later pixel"
            if j > 0:
                assert flat[:, index - 1].abs().sum() > 0, f"pixel {(i, j)} does not see its left neighbour"
            if i > 0:
                assert flat[:, index - size].abs().sum() > 0, f"pixel {(i, j)} does not see the pixel above"
                if j + 1 < size:  # the classic blind spot of a single masked stack
                    assert flat[:, index - size + 1].abs().sum() > 0, f"pixel {(i, j)} has a blind spot"
            # within the pixel: a's distribution ignores (a, b) of the pixel; b's mean uses a but not b
            (grad_a,) = torch.autograd.grad(mean_a[0, :, i, j].sum(), ab, retain_graph=True)
            (grad_b,) = torch.autograd.grad(mean_b[0, :, i, j].sum(), ab, retain_graph=True)
            assert torch.count_nonzero(grad_a[0].reshape(2, -1)[:, index:]) == 0
            assert torch.count_nonzero(grad_b[0].reshape(2, -1)[:, index + 1 :]) == 0
            assert grad_b[0, 1, i, j] == 0 and grad_b[0, 0, i, j] != 0


@pytest.mark.parametrize("name,opts", CASES, ids=CASE_IDS)
def test_cached_sampling_equals_naive_sampling(name, opts):
    model = _model(name, torch.float64, **opts).eval()
    L = _batch(32, n=2, dtype=torch.float64)["L"]
    naive = model.sample(L, k=2, temperature=0.9, seed=11, method="naive")
    cached = model.sample(L, k=2, temperature=0.9, seed=11, method="cached")
    assert naive.shape == (2, 2, 2, 8, 8)
    assert torch.equal(naive, cached)
    assert not torch.equal(cached[:, 0], cached[:, 1]), "the k samples of an image must differ"
    assert not torch.equal(cached, model.sample(L, k=2, temperature=0.9, seed=12))
    on_grid = psc.to_mixture_units(cached)  # samples are Lab8 codes, in project units
    torch.testing.assert_close(mixture.quantize(on_grid), on_grid, rtol=0, atol=1e-9)


def test_cached_equals_naive_in_float32_too():
    model = _model("psc_full").eval()
    L = _batch(32, n=1)["L"]
    naive = model.sample(L, k=3, seed=5, method="naive")
    assert torch.equal(naive, model.sample(L, k=3, seed=5, method="cached"))


def test_samples_follow_the_generator_distribution():
    # a sample's log-likelihood under g (teacher-forced) is finite and the samples are reproducible
    model = _model("psc_embed", torch.float64).eval()
    L = _batch(32, n=1, dtype=torch.float64)["L"]
    ab = model.sample(L, k=1, seed=3)[:, 0]
    with torch.no_grad():
        params = model(L, ab).gen_params
    assert torch.isfinite(mixture.log_prob(params, ab, TINY["num_mixtures"], False)).all()
    assert torch.equal(ab, model.sample(L, k=1, seed=3)[:, 0])


def test_combine_L_ab_returns_full_resolution_lab_in_physical_units():
    L = torch.tensor([-1.0, 0.0, 1.0, 0.5]).reshape(1, 1, 2, 2).repeat(1, 1, 4, 4)  # (1, 1, 8, 8)
    ab = torch.stack([torch.full((2, 2), -1.0), torch.full((2, 2), 1.0)])[None]  # a at -128, b at +127
    lab = combine_L_ab(L, ab)
    assert lab.shape == (1, 3, 8, 8)
    assert torch.allclose(lab[0, 0], (L[0, 0] + 1) * 50)
    assert torch.allclose(lab[0, 1], torch.full((8, 8), -128.0))
    assert torch.allclose(lab[0, 2], torch.full((8, 8), 127.0))
    many = combine_L_ab(L, ab[:, None].repeat(1, 3, 1, 1, 1))
    assert many.shape == (1, 3, 3, 8, 8) and torch.equal(many[:, 2], lab)


def test_downsampling_of_targets():
    ab = torch.zeros(1, 2, 8, 8)
    ab[0, 0, :4, :4] = 0.5  # one block of a at 0.5, averaged exactly
    ab[0, 1, :4, :4] = torch.linspace(-1, 1, 16).reshape(4, 4)  # mean 0
    q = downsample_ab(ab)
    assert q.shape == (1, 2, 2, 2)
    # snapped to the 8-bit grid: 0.5 -> code 191, 0 -> code 128 (ties round to even)
    assert float(q[0, 0, 0, 0]) == pytest.approx(191 / 127.5 - 1, abs=1e-6)
    assert float(q[0, 1, 0, 0]) == pytest.approx(128 / 127.5 - 1, abs=1e-6)


def test_bad_configs_and_batches_are_reported_by_name():
    with pytest.raises(ConfigError, match="psc_full.widht"):
        create_model("psc_full", widht=0.5)
    with pytest.raises(ConfigError, match="width"):
        create_model("psc_full", width=0.0)
    with pytest.raises(ConfigError, match="seg_conditioning"):
        create_model("psc_full", seg_conditioning="sum")
    with pytest.raises(ValueError, match="fixed by the model name"):
        create_model("psc_plain", variant="full")
    model = _model("psc_embed")
    batch = _batch(32)
    with pytest.raises(KeyError, match="'seg'"):
        model.compute_losses({"L": batch["L"], "ab": batch["ab"]})
    bad = dict(batch, seg=torch.full((2, 32, 32), 7, dtype=torch.long))
    with pytest.raises(ValueError, match="num_classes=5"):
        model.compute_losses(bad)
    with pytest.raises(ValueError, match="multiples of 4"):
        model.compute_losses(dict(batch, L=batch["L"][:, :, :30, :30], ab=batch["ab"][:, :, :30, :30]))
    only_ignored = dict(batch, seg=torch.full((2, 32, 32), 255, dtype=torch.uint8))
    assert float(model.compute_losses(only_ignored)["seg"].detach()) == 0.0


def test_project_units_round_trip_through_the_mixture_grid():
    from semcolor.models.psc import from_mixture_units, to_mixture_units
    from semcolor.scaling import lab8_to_unit

    codes = np.arange(256, dtype=np.uint8)
    lab8 = np.stack([codes, codes, codes], -1)[None]  # (1, 256, 3)
    _, ab_unit = lab8_to_unit(lab8)
    x = to_mixture_units(torch.from_numpy(ab_unit))
    # every Lab8 code lands exactly on a mixture bin centre k / 127.5 - 1, and back
    torch.testing.assert_close(x[0, 0], torch.from_numpy(codes.astype(np.float32) / 127.5 - 1.0)[None].expand(1, 256)[0])
    torch.testing.assert_close(from_mixture_units(x), torch.from_numpy(ab_unit))


def test_segmentation_loss_is_the_full_resolution_cross_entropy_that_evaluation_measures():
    # the loss compares h's logits upsampled to the label map (as segment(full_resolution=True) and the
    # evaluation do), not labels subsampled on a grid of their own
    model = _model("psc_embed").eval()
    batch = _batch(32)
    logits = model.segment(batch["L"], full_resolution=True)
    expected = torch.nn.functional.cross_entropy(logits, batch["seg"].long(), ignore_index=255)
    got = model.compute_losses(batch)["seg"]
    torch.testing.assert_close(got.detach(), expected, rtol=1e-6, atol=1e-6)
    # moving the labels by two pixels (the old 4k + 2 subsampling offset) changes the loss
    shifted = dict(batch, seg=torch.roll(batch["seg"], shifts=(2, 2), dims=(1, 2)))
    assert float(model.compute_losses(shifted)["seg"].detach()) != pytest.approx(float(got.detach()))


def test_a_term_with_weight_zero_is_not_computed():
    # seg_only: the segmentation head trained alone never runs f's top or g (cost and gradients)
    model = _model("psc_embed", emb_weight=0.0, gen_weight=0.0)
    calls = []
    model.generator.register_forward_hook(lambda *args: calls.append("generator"))
    model.color_top.register_forward_hook(lambda *args: calls.append("color_top"))
    losses = model.compute_losses(_batch(32))
    assert set(losses) == {"seg", "seg_weighted", "loss"} and calls == []
    losses["loss"].backward()
    assert _grad(model.generator.head_out) is None and _grad(model.seg_top.aspp[0]).abs().sum() > 0
    with pytest.raises(ConfigError, match="must be > 0"):
        create_model("psc_plain", **{**TINY, "emb_weight": 0.0, "gen_weight": 0.0})


def test_generator_channels_are_not_scaled_by_width_and_aspp_rates_are_configurable():
    narrow = _model("psc_full", generator_channels=24, aspp_rates=(1, 2, 3))
    assert narrow.generator.channels == 24 and narrow.trunk.out_channels == 32  # 512 x 1/16
    assert [conv.dilation[0] for conv in narrow.seg_top.aspp] == [1, 2, 3]
    with pytest.raises(ConfigError, match="aspp_rates"):
        create_model("psc_full", **{**TINY, "aspp_rates": []})


def _stage_std(model, L: torch.Tensor) -> list[float]:
    out, stds = L, []
    with torch.no_grad():
        for stage in model.trunk:
            out = stage(out)
            stds.append(float(out.std()))
    return stds


@pytest.mark.slow
def test_data_dependent_init_starts_every_stage_at_unit_scale_and_the_heads_at_the_data():
    batch = _batch(64, n=4)
    model = _model("psc_full", width=0.25)
    before = _stage_std(model, batch["L"])
    initialised = model.data_dependent_init(batch)
    assert initialised == len([m for m in model.modules() if hasattr(m, "init_scale")])
    after = _stage_std(model, batch["L"])
    # PixelCNN++'s init: each stage's output at about unit scale (residual branches start at 0.1), where
    # the plain N(0, 0.05) directions give a signal that shrinks or grows with the fan-in
    assert all(0.8 < std < 1.6 for std in after), after
    assert not all(0.8 < std < 1.6 for std in before), before
    # the mixture heads start at the batch's marginal: log-scale ~ log(std * sqrt(3) / pi)
    k = TINY["num_mixtures"]
    with torch.no_grad():
        params = model.embedding_head(model.encode(batch["L"])[0])
    target = downsample_ab(psc.to_mixture_units(batch["ab"]))
    expected = math.log(float(target[:, 0].std()) * math.sqrt(3) / math.pi)
    assert float(params[:, 3 * k : 4 * k].mean()) == pytest.approx(expected, abs=0.05)
    # and the init is a pure function of the batch and the starting weights
    again = _model("psc_full", width=0.25)
    again.data_dependent_init(batch)
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


def test_per_image_seeds_make_samples_independent_of_the_batch():
    model = _model("psc_full").eval()
    L = _batch(32, n=3)["L"]
    together = model.sample(L, k=2, seeds=[7, 8, 9])
    alone = model.sample(L[2:], k=2, seeds=[9])
    assert torch.equal(together[2:], alone)
    # the same image under another seed, and two images under distinct seeds, get different noise
    assert not torch.equal(model.sample(L[2:], k=2, seeds=[10]), alone)
    twin = model.sample(L[:1].repeat(2, 1, 1, 1), k=1, seeds=[1, 2])
    assert not torch.equal(twin[0], twin[1])
    # naive and cached samplers agree on per-image noise too
    assert torch.equal(model.sample(L[:1], k=1, seeds=[4], method="naive"), model.sample(L[:1], k=1, seeds=[4]))
    with pytest.raises(ValueError, match="one seed per image"):
        model.sample(L, seeds=[1])


def test_output_norm_ends_f_and_h_with_a_per_pixel_rms_normalization():
    L = _batch(32)["L"]
    normed, plain = _model("psc_embed"), _model("psc_embed", output_norm=False)
    assert isinstance(normed.color_top[-1], psc.PixelRMSNorm) and isinstance(normed.seg_top.body[-1], psc.PixelRMSNorm)
    assert not any(isinstance(m, psc.PixelRMSNorm) for m in plain.modules())
    normed.data_dependent_init(_batch(32))
    with torch.no_grad():
        embedding, _ = normed.encode(L * 5.0)
    rms = embedding.pow(2).mean(dim=1).sqrt()
    torch.testing.assert_close(rms, torch.ones_like(rms), rtol=1e-4, atol=1e-4)  # every pixel, any input scale
