"""Tests for semcolor.color: agreement with scikit-image, the 8-bit Lab codec, the fast path, torch."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
from skimage.color import deltaE_ciede2000, lab2rgb, rgb2lab

from semcolor import color
from semcolor.color import (
    decode_lab8,
    encode_lab8,
    lab_to_rgb8,
    lab_to_srgb,
    lab_to_srgb_torch,
    rgb8_to_lab,
    rgb8_to_lab8,
    rgb8_to_lab8_planar,
    srgb_to_lab,
    srgb_to_lab_torch,
)

FLOAT_TOLERANCE = 1e-3  # max abs error against scikit-image, in Lab units or sRGB [0, 1] units
ALL_COLORS = 1 << 24
# Every 5th 8-bit color (5 is coprime to 256, so all values of every channel occur): 3.4 M colors.
CIEDE_STRIDE = 5


def colors_by_index(index: np.ndarray) -> np.ndarray:
    """8-bit sRGB colors (n, 3) of flat indices R * 65536 + G * 256 + B."""
    index = index.astype(np.uint32)
    return np.stack([index >> 16, (index >> 8) & 255, index & 255], axis=-1).astype(np.uint8)


def lab2rgb_quiet(lab: np.ndarray) -> np.ndarray:
    # skimage warns when it clips a negative Z, which the random Lab box triggers on purpose.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return lab2rgb(lab)


@pytest.fixture(scope="module")
def rgb_sample() -> np.ndarray:
    """Dense random float sRGB, the 8 cube corners, and grays straddling the companding/Lab thresholds."""
    rng = np.random.default_rng(2024)
    corners = np.array(list(itertools.product([0.0, 1.0], repeat=3)))
    gray_levels = np.array([0.0, 1e-6, 0.01, 0.04045 - 1e-7, 0.04045, 0.04045 + 1e-7, 0.0893, 0.5, 1.0])
    grays = np.repeat(gray_levels[:, None], 3, axis=1)
    return np.concatenate([rng.random((20000, 3)), corners, grays])


@pytest.fixture(scope="module")
def lab_sample(rgb_sample) -> np.ndarray:
    """In-gamut Lab (of rgb_sample) plus a random box L in [0, 100], a and b in [-128, 127] (mostly
    out of gamut, some with negative Z)."""
    rng = np.random.default_rng(7)
    box = rng.uniform([0.0, -128.0, -128.0], [100.0, 127.0, 127.0], size=(20000, 3))
    return np.concatenate([rgb2lab(rgb_sample), box])


# ---------------------------------------------------------------------------------------------
# numpy float, against scikit-image
# ---------------------------------------------------------------------------------------------


def test_srgb_to_lab_matches_skimage(rgb_sample):
    lab = srgb_to_lab(rgb_sample)
    assert lab.dtype == np.float64 and lab.shape == rgb_sample.shape
    assert np.abs(lab - rgb2lab(rgb_sample)).max() <= FLOAT_TOLERANCE


def test_srgb_to_lab_keeps_float32(rgb_sample):
    lab = srgb_to_lab(rgb_sample.astype(np.float32))
    assert lab.dtype == np.float32
    assert np.abs(lab - rgb2lab(rgb_sample)).max() <= FLOAT_TOLERANCE


def test_lab_to_srgb_matches_skimage_in_and_out_of_gamut(lab_sample):
    rgb = lab_to_srgb(lab_sample)
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    assert np.abs(rgb - lab2rgb_quiet(lab_sample)).max() <= FLOAT_TOLERANCE


def test_reference_colors():
    lab = srgb_to_lab(np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.5, 0.5]]))
    np.testing.assert_allclose(lab[0], [0.0, 0.0, 0.0], atol=1e-12)
    # The D65 white of the sRGB matrix is a hair off (0.95047, 1, 1.08883): a, b within 0.005 of 0.
    np.testing.assert_allclose(lab[1], [100.0, 0.0, 0.0], atol=5e-3)
    assert abs(lab[1, 0] - 100.0) < 1e-9
    assert abs(lab[2, 0] - 53.389) < 1e-2  # mid gray 0.5 is L* 53.39, not 50 (sRGB gamma)


def test_srgb_lab_round_trip_float(rgb_sample):
    # 1e-7, not 1e-9: the standard sRGB constants disagree at the seam (0.04045 / 12.92 is just above
    # 0.0031308), so an input at exactly 0.04045 comes back as 0.04044997.
    np.testing.assert_allclose(lab_to_srgb(srgb_to_lab(rgb_sample)), rgb_sample, rtol=0, atol=1e-7)


def test_rgb8_to_lab_is_srgb_to_lab_of_code_over_255():
    rgb8 = np.random.default_rng(1).integers(0, 256, size=(64, 48, 3), dtype=np.uint8)
    np.testing.assert_array_equal(rgb8_to_lab(rgb8), srgb_to_lab(rgb8 / 255.0))


def test_lab_to_rgb8_inverts_rgb8_to_lab():
    rgb8 = colors_by_index(np.arange(0, ALL_COLORS, 97))
    np.testing.assert_array_equal(lab_to_rgb8(rgb8_to_lab(rgb8)), rgb8)


def test_lab_to_rgb8_rounds_to_nearest_and_clips(lab_sample):
    rgb8 = lab_to_rgb8(lab_sample)
    assert rgb8.dtype == np.uint8
    # Rounding (not truncation) of skimage's clipped sRGB: never more than half a code away.
    assert np.abs(rgb8 - lab2rgb_quiet(lab_sample) * 255.0).max() <= 0.5 + 1e-6
    extremes = np.array([[100.0, 0.0, 0.0], [0.0, 0.0, 0.0], [120.0, 0.0, 0.0], [-10.0, 0.0, 0.0]])
    np.testing.assert_array_equal(lab_to_rgb8(extremes), [[255] * 3, [0] * 3, [255] * 3, [0] * 3])


# ---------------------------------------------------------------------------------------------
# 8-bit Lab codec
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lab", "codes"),
    [
        ((0.0, 0.0, 0.0), (0, 128, 128)),
        ((100.0, -128.0, 127.0), (255, 0, 255)),
        ((50.0, -0.4, 0.4), (128, 128, 128)),  # 127.5 rounds half to even, to 128
        ((100.0 * 77 / 255, -60.6, 33.4), (77, 67, 161)),
        ((120.0, -200.0, 300.0), (255, 0, 255)),  # clipped high / low
        ((-5.0, -128.6, 127.6), (0, 0, 255)),
    ],
)
def test_encode_lab8_values_and_clipping(lab, codes):
    encoded = encode_lab8(np.array(lab))
    assert encoded.dtype == np.uint8
    np.testing.assert_array_equal(encoded, codes)


def test_encode_lab8_rounds_half_to_even():
    lab = np.array([[0.0, 0.5, -0.5], [0.0, 1.5, -1.5]])  # codes 128.5, 127.5, 129.5, 126.5
    np.testing.assert_array_equal(encode_lab8(lab), [[0, 128, 128], [0, 130, 126]])


def test_decode_lab8_ends_and_encode_inverts_every_code():
    codes = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    lab = decode_lab8(codes)
    assert lab.dtype == np.float32
    np.testing.assert_allclose(lab[0], [0.0, -128.0, -128.0])
    np.testing.assert_allclose(lab[255], [100.0, 127.0, 127.0], rtol=1e-6)
    np.testing.assert_allclose(lab[128], [100.0 * 128 / 255, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(encode_lab8(lab), codes)


def test_encode_lab8_rejects_non_finite():
    with pytest.raises(ValueError, match="NaN or infinity"):
        encode_lab8(np.array([[50.0, np.nan, 0.0]]))


def test_type_and_shape_errors_name_the_fix():
    with pytest.raises(TypeError, match="rgb8_to_lab"):
        srgb_to_lab(np.zeros((2, 3), dtype=np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        rgb8_to_lab8(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="uint8"):
        decode_lab8(np.zeros((2, 3), dtype=np.int32))
    with pytest.raises(TypeError, match="decode_lab8"):  # codes passed where Lab is expected
        lab_to_rgb8(np.zeros((2, 3), dtype=np.uint8))
    with pytest.raises(TypeError, match="decode_lab8"):
        encode_lab8(np.zeros((2, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        lab_to_srgb(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="dim=-3"):
        srgb_to_lab_torch(torch.zeros(1, 4, 2, 2))
    with pytest.raises(TypeError, match="floating-point"):
        srgb_to_lab_torch(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))


# ---------------------------------------------------------------------------------------------
# rgb8_to_lab8, the fast path, and the 8-bit round trip over (nearly) every color
# ---------------------------------------------------------------------------------------------


def computing(monkeypatch) -> None:
    """rgb8_to_lab8 in this test computes every pixel (the lookup table is never built)."""
    monkeypatch.setattr(color, "_lab8_of_color", None)
    monkeypatch.setattr(color, "_LOOKUP_AFTER_PIXELS", 1 << 62)


def looking_up(monkeypatch) -> None:
    """rgb8_to_lab8 in this test builds the table of all colors at its first call and looks every pixel up."""
    monkeypatch.setattr(color, "_lab8_of_color", None)
    monkeypatch.setattr(color, "_LOOKUP_AFTER_PIXELS", 0)


@pytest.mark.slow
def test_rgb8_to_lab8_equals_reference_on_every_8bit_color_computed_and_looked_up(monkeypatch):
    mismatched = {"computed": 0, "looked up": 0}
    chunk = 1 << 21
    for start in range(0, ALL_COLORS, chunk):
        # An image shape (not a flat list) spanning many of the function's internal chunks.
        rgb8 = colors_by_index(np.arange(start, start + chunk)).reshape(1024, 2048, 3)
        reference = encode_lab8(rgb8_to_lab(rgb8))
        for path, setup in (("computed", computing), ("looked up", looking_up)):
            setup(monkeypatch)
            fast = rgb8_to_lab8(rgb8)
            assert fast.shape == rgb8.shape and fast.dtype == np.uint8
            mismatched[path] += int((fast != reference).any(axis=-1).sum())
    assert mismatched == {"computed": 0, "looked up": 0}


def test_the_lookup_table_is_built_once_a_process_has_converted_its_size_in_pixels(monkeypatch):
    computing(monkeypatch)
    monkeypatch.setattr(color, "_LOOKUP_AFTER_PIXELS", 1000)
    monkeypatch.setattr(color, "_computed_pixels", 0)
    image = np.random.default_rng(5).integers(0, 256, size=(20, 20, 3), dtype=np.uint8)  # 400 pixels
    expected = encode_lab8(rgb8_to_lab(image))
    for call, built_after in enumerate((False, False, True, True)):  # 400, 800, then 1200 >= 1000 pixels
        result = rgb8_to_lab8(image) if call % 2 else np.moveaxis(rgb8_to_lab8_planar(image), 0, -1)
        np.testing.assert_array_equal(result, expected)
        assert (color._lab8_of_color is not None) == built_after, call
    assert color._lab8_of_color.shape == (ALL_COLORS,)


@pytest.mark.parametrize("shape", [(3,), (0, 3), (5, 7, 3), (2, 4, 9, 3)])
def test_rgb8_to_lab8_shapes_and_strided_input(shape):
    rgb8 = np.random.default_rng(3).integers(0, 256, size=shape, dtype=np.uint8)
    np.testing.assert_array_equal(rgb8_to_lab8(rgb8), encode_lab8(rgb8_to_lab(rgb8)))
    if len(shape) >= 3:
        strided = rgb8[..., ::2, :]
        np.testing.assert_array_equal(rgb8_to_lab8(strided), encode_lab8(rgb8_to_lab(strided)))


@pytest.fixture(scope="module")
def ciede_round_trip():
    """CIEDE2000 on every CIEDE_STRIDE-th 8-bit color: original Lab vs decoded lab8 (the codec's own
    error), and original vs the rgb8 -> lab8 -> rgb8 round trip (codec plus 8-bit RGB rounding)."""
    codec, round_trip = [], []
    chunk = 1 << 20
    for start in range(0, ALL_COLORS, chunk * CIEDE_STRIDE):
        rgb8 = colors_by_index(np.arange(start, min(start + chunk * CIEDE_STRIDE, ALL_COLORS), CIEDE_STRIDE))
        lab = rgb8_to_lab(rgb8)
        decoded = decode_lab8(rgb8_to_lab8(rgb8)).astype(np.float64)
        codec.append(deltaE_ciede2000(lab, decoded))
        round_trip.append(deltaE_ciede2000(lab, rgb8_to_lab(lab_to_rgb8(decoded))))
    return np.concatenate(codec), np.concatenate(round_trip)


@pytest.mark.slow
def test_lab8_codec_error_is_below_one_ciede2000(ciede_round_trip):
    codec, _ = ciede_round_trip
    assert codec.size == -(-ALL_COLORS // CIEDE_STRIDE)
    assert codec.max() <= 1.0


@pytest.mark.slow
def test_rgb8_lab8_rgb8_round_trip_ciede2000(ciede_round_trip):
    # Measured on all 16.7 M colors: max 1.69 (at RGB (27, 28, 35)) and 6835 colors (0.04%) above
    # 1.0: dark, low-chroma colors where one 8-bit RGB step is a large Lab step. No per-channel
    # rounding back to 8-bit RGB keeps every color <= 1.0 after the 1-unit a/b quantization
    # (picking the best of the 8 neighbouring RGB codes still leaves 1.20), so the bound here is
    # <= 1.0 for 99.9% of colors plus a cap; the codec itself stays below 1.0 (test above).
    _, round_trip = ciede_round_trip
    assert np.mean(round_trip > 1.0) <= 1e-3
    assert round_trip.max() <= 1.75
    assert np.median(round_trip) <= 0.5


# ---------------------------------------------------------------------------------------------
# torch
# ---------------------------------------------------------------------------------------------


def as_nchw(channel_last: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """(n, 3) numpy -> (1, 3, n, 1) tensor, channels on dim -3 as in an (N, C, H, W) batch."""
    return torch.from_numpy(channel_last).to(dtype).reshape(1, -1, 1, 3).permute(0, 3, 1, 2)


def from_nchw(tensor: torch.Tensor) -> np.ndarray:
    return tensor.permute(0, 2, 3, 1).reshape(-1, 3).detach().double().numpy()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_torch_matches_skimage_both_directions(rgb_sample, lab_sample, dtype):
    lab = srgb_to_lab_torch(as_nchw(rgb_sample, dtype))
    assert lab.dtype == dtype
    assert np.abs(from_nchw(lab) - rgb2lab(rgb_sample)).max() <= FLOAT_TOLERANCE
    rgb = lab_to_srgb_torch(as_nchw(lab_sample, dtype))
    assert rgb.dtype == dtype
    assert np.abs(from_nchw(rgb) - lab2rgb_quiet(lab_sample)).max() <= FLOAT_TOLERANCE


def test_torch_agrees_with_numpy_channel_last(rgb_sample, lab_sample):
    lab = srgb_to_lab_torch(torch.from_numpy(rgb_sample), dim=-1).numpy()
    np.testing.assert_allclose(lab, srgb_to_lab(rgb_sample), rtol=0, atol=1e-9)
    rgb = lab_to_srgb_torch(torch.from_numpy(lab_sample), dim=1).numpy()
    np.testing.assert_allclose(rgb, lab_to_srgb(lab_sample), rtol=0, atol=1e-9)


def test_torch_gradients_finite_at_black_and_thresholds():
    levels = torch.tensor([0.0, -1e-3, 0.04045, 0.0031308, 1.0], dtype=torch.float64)
    rgb = levels.view(1, 1, -1, 1).expand(1, 3, -1, 1).clone().requires_grad_(True)
    srgb_to_lab_torch(rgb).sum().backward()
    assert torch.isfinite(rgb.grad).all()
    assert rgb.grad[0, :, 0].abs().sum() > 0  # black still passes a gradient (linear segment)

    lab = torch.tensor([[0.0, 0.0, 0.0], [100.0, 0.0, 0.0], [8.0, 0.0, 0.0], [20.0, 0.0, 120.0]])
    lab = lab.T.reshape(1, 3, 4, 1).clone().requires_grad_(True)
    lab_to_srgb_torch(lab).sum().backward()
    assert torch.isfinite(lab.grad).all()


def test_torch_gradcheck_in_gamut():
    rgb = (torch.rand(1, 3, 4, 4, dtype=torch.float64) * 0.8 + 0.1).requires_grad_(True)
    assert torch.autograd.gradcheck(srgb_to_lab_torch, (rgb,))
    lab = srgb_to_lab_torch(rgb.detach()).requires_grad_(True)
    assert torch.autograd.gradcheck(lab_to_srgb_torch, (lab,))


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float16, 0.15), (torch.bfloat16, 1.0)])
def test_torch_low_precision_dtypes(rgb_sample, dtype, tolerance):
    rgb = as_nchw(rgb_sample[:1000], dtype)
    lab = srgb_to_lab_torch(rgb)
    assert lab.dtype == dtype
    reference = srgb_to_lab_torch(rgb.float())
    assert (lab.float() - reference).abs().max() <= tolerance
    assert lab_to_srgb_torch(lab).dtype == dtype


def test_torch_creates_nothing_on_another_device():
    # On the "meta" device any constant built as a CPU tensor would raise a device mismatch.
    rgb = torch.empty(2, 3, 5, 7, device="meta")
    lab = srgb_to_lab_torch(rgb)
    assert lab.device.type == "meta" and lab.shape == rgb.shape
    assert lab_to_srgb_torch(lab).shape == rgb.shape
