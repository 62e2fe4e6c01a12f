"""The U-Net's fast CPU inference path (oneDNN, prepacked weights) computes the eager model's function, and
``colorize`` / the editor use it by default."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semcolor.inference import Colorizer
from semcolor.models import create_model
from semcolor.models.sdc import AcceleratedUNet, FastUNetInference

CONFIGS = [
    {},
    {"semantic_encoding": "onehot", "num_classes": 9},
    {"semantic_encoding": "embedding"},
    {"semantic_stream": False},
    {"instance_norm": False, "output_activation": "leaky_relu"},
    {"output_activation": "linear", "center_gray": True, "negative_slope": 0.2},
]


def _inputs(model, batch: int, height: int, width: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    L = torch.rand(batch, 1, height, width, generator=generator) * 2 - 1
    seg = torch.randint(0, model.config.num_classes, (batch, height, width), generator=generator)
    seg[:, : height // 4] = 255
    return L, (seg if model.config.semantic_stream else None)


@pytest.mark.parametrize("config", CONFIGS)
def test_fast_path_equals_eager_within_1e_4(config):
    torch.manual_seed(1)
    model = create_model("sdc", width=0.25, **config).eval()
    fast = FastUNetInference(model)
    for shape in ((1, 64, 96), (2, 96, 64), (1, 64, 96)):  # a repeated shape reuses its packed weights
        L, seg = _inputs(model, *shape)
        with torch.no_grad():
            expected = model(L, seg)
            got = fast(L, seg)
            assert fast.supports(L)  # the oneDNN path ran, not the eager fallback
        assert got.shape == expected.shape and got.dtype == torch.float32
        assert float((got - expected).abs().max()) <= 1e-4, (config, shape)
        assert not torch.equal(got, torch.zeros_like(got))


@pytest.mark.slow
def test_paper_width_at_352_equals_eager():
    torch.manual_seed(2)
    model = create_model("sdc").eval()  # 37.7 M parameters, the default colorize model's shape
    L, seg = _inputs(model, 1, 352, 352)
    with torch.no_grad():
        assert float((FastUNetInference(model)(L, seg) - model(L, seg)).abs().max()) <= 1e-4


def test_changed_weights_are_repacked_and_shapes_are_bounded():
    torch.manual_seed(3)
    model = create_model("sdc", width=0.125).eval()
    fast = FastUNetInference(model, shapes_kept=2)
    L, seg = _inputs(model, 1, 64, 64)
    with torch.no_grad():
        before = fast(L, seg)
        for parameter in model.parameters():
            parameter.mul_(0.5)  # in place, as load_state_dict does
        after = fast(L, seg)
        assert float((after - model(L, seg)).abs().max()) <= 1e-4
        assert not torch.allclose(before, after)
        for height in (96, 128, 160):
            fast(*_inputs(model, 1, height, 64))
    assert all(len(conv.packed) <= 2 for conv, _ in fast.encoder)


def test_falls_back_to_eager_with_gradients_or_another_dtype():
    model = create_model("sdc", width=0.125).eval()
    fast = FastUNetInference(model)
    L, seg = _inputs(model, 1, 64, 64)
    with torch.enable_grad():
        out = fast(L, seg)
    assert out.requires_grad  # the eager model ran and recorded the graph
    with torch.no_grad():
        assert not fast.supports(L.double())
        assert not fast(L, seg).requires_grad


def test_errors_are_the_models_own():
    model = create_model("sdc", width=0.125).eval()
    fast = FastUNetInference(model)
    with torch.no_grad(), pytest.raises(ValueError, match="multiples of 32"):
        fast(torch.zeros(1, 1, 50, 64), torch.zeros(1, 50, 64, dtype=torch.long))
    with torch.no_grad(), pytest.raises(ValueError, match="needs seg"):
        fast(torch.zeros(1, 1, 64, 64))


@pytest.mark.parametrize("semantic_stream", [True, False])
@pytest.mark.slow
def test_colorizer_uses_the_fast_path_by_default_with_the_same_images(semantic_stream):
    torch.manual_seed(4)
    model = create_model("sdc", width=0.125, num_classes=5, semantic_stream=semantic_stream).eval()
    segmenter = create_model("gridnet", width=0.125, num_classes=5).eval() if semantic_stream else None
    fast = Colorizer(model=model, model_name="sdc", segmenter=segmenter)
    eager = Colorizer(model=model, model_name="sdc", segmenter=segmenter, fast_inference=False)
    assert isinstance(fast._predictor, AcceleratedUNet) and eager._predictor is model
    calls = []
    original = FastUNetInference._forward

    def counted(self, L, seg):
        calls.append(tuple(L.shape))
        return original(self, L, seg)

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)
    try:
        FastUNetInference._forward = counted
        got = fast.colorize(photo)
    finally:
        FastUNetInference._forward = original
    expected = eager.colorize(photo)
    assert calls == [(1, 1, *fast.working_shape(150, 200))]
    # ab within 1e-4 of eager; in 8-bit RGB a rounding boundary, or a step of the gamut bisection (1/256 of
    # the chroma), may fall in between for a few pixels
    difference = np.abs(got.images[0].astype(int) - expected.images[0].astype(int))
    assert difference.max() <= 3 and (difference > 0).any(axis=-1).mean() < 0.01
    if semantic_stream:
        np.testing.assert_array_equal(got.semantic_map, expected.semantic_map)
