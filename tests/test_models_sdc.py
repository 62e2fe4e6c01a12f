"""Semantic-driven Colorization: the two-stream U-Net (`sdc`), GridNet (`gridnet`) and `colorize`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from semcolor.config import ConfigError
from semcolor.models import create_model, list_models
from semcolor.models.gridnet import GridNet, GridNetConfig
from semcolor.models.sdc import SdcConfig, SemanticDrivenUNet, SemanticMapInput, colorize

NUM_CLASSES = 60
SMALL = 0.125  # width multiplier for fast tests: encoder 4..64 channels


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def smooth_gray(batch: int, height: int, width: int, seed: int) -> torch.Tensor:
    """A photo-like gray batch, L / 50 - 1 in [-0.8, 0.8]: smooth blobs, not white noise."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 1, max(2, height // 8), max(2, width // 8), generator=generator)
    return F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False) * 1.6 - 0.8


def random_map(batch: int, height: int, width: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    seg = torch.randint(0, NUM_CLASSES, (batch, height, width), generator=generator)
    seg[:, :4, :] = 255  # a band of unknown pixels, as the loaders deliver them
    return seg


def build_sdc(seed: int = 0, **config) -> SemanticDrivenUNet:
    torch.manual_seed(seed)
    return create_model("sdc", **{"width": SMALL, **config})


def relative_change(new: list[torch.Tensor], old: list[torch.Tensor]) -> list[float]:
    return [float((n - o).norm() / o.norm()) for n, o in zip(new, old)]


def test_both_models_are_registered():
    assert {"sdc", "gridnet"} <= set(list_models())
    assert isinstance(create_model("sdc", width=SMALL), SemanticDrivenUNet)
    assert isinstance(create_model("gridnet", width=0.25), GridNet)


VARIANTS = [
    dict(semantic_encoding=encoding, instance_norm=norm)
    for encoding in ("scalar", "onehot", "embedding")
    for norm in (True, False)
] + [dict(semantic_stream=False, instance_norm=norm) for norm in (True, False)]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{k}={v[k]}" for k in v))
def test_sdc_forward_backward_at_64px(variant):
    model = build_sdc(**variant).train()
    batch = {
        "L": smooth_gray(2, 64, 64, seed=1),
        "ab": torch.rand(2, 2, 64, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1,
        "seg": random_map(2, 64, 64, seed=3),
    }
    losses = model.compute_losses(batch)
    prediction = model(batch["L"], batch["seg"] if model.config.semantic_stream else None)
    assert prediction.shape == (2, 2, 64, 64)
    assert float(prediction.detach().abs().max()) <= 1.0  # tanh head: ab scaled to [-1, 1]
    assert float(prediction.detach().std()) > 1e-3  # a fresh net is not constant
    assert torch.isfinite(losses["loss"]) and float(losses["loss"].detach()) > 0
    losses["loss"].backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    assert any(float(p.grad.abs().max()) > 0 for p in model.encoder.parameters())


def test_loss_is_huber_with_delta_one():
    model = build_sdc(output_activation="linear").eval()
    L, seg = smooth_gray(1, 64, 64, seed=4), random_map(1, 64, 64, seed=5)
    with torch.no_grad():
        prediction = model(L, seg)
    # targets both within and beyond 1 of the prediction: quadratic and linear parts of the Huber loss
    offset = torch.linspace(-1.8, 1.8, 64 * 64 * 2).reshape(1, 2, 64, 64)
    losses = model.compute_losses({"L": L, "ab": prediction + offset, "seg": seg})
    expected = torch.where(offset.abs() <= 1, 0.5 * offset**2, offset.abs() - 0.5).mean()
    assert float(losses["loss"].detach()) == pytest.approx(float(expected), rel=1e-5)
    assert float(losses["ab_mae"]) == pytest.approx(float(offset.abs().mean()), rel=1e-5)


def test_gridnet_forward_backward_and_cross_entropy_ignores_255():
    torch.manual_seed(0)
    model = create_model("gridnet", width=0.25).train()
    L, seg = smooth_gray(2, 64, 48, seed=6), random_map(2, 64, 48, seed=7)
    logits = model(L)
    assert logits.shape == (2, NUM_CLASSES, 64, 48)
    losses = model.compute_losses({"L": L, "seg": seg})
    # cross-entropy over the labelled pixels only (train-mode BN: the same batch gives the same logits)
    labelled = seg != 255
    expected = F.cross_entropy(logits.permute(0, 2, 3, 1)[labelled], seg[labelled])
    assert float(losses["loss"].detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    assert 0.0 <= float(losses["pixel_accuracy"]) <= 1.0
    losses["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.predict(L).shape == (2, 64, 48)

    unlabelled = model.compute_losses({"L": L, "seg": torch.full_like(seg, 255)})
    assert float(unlabelled["loss"].detach()) == 0.0  # not NaN
    unlabelled["loss"].backward()


def test_gridnet_eval_ignores_block_drop_and_rejects_bad_sides():
    torch.manual_seed(0)
    plain = GridNet(GridNetConfig(width=0.25)).eval()
    dropping = GridNet(GridNetConfig(width=0.25, block_drop_prob=0.9)).eval()
    dropping.load_state_dict(plain.state_dict())
    L = smooth_gray(1, 32, 48, seed=8)
    assert torch.equal(plain(L), dropping(L))
    with pytest.raises(ValueError, match="multiples of 16"):
        plain(smooth_gray(1, 40, 48, seed=8))


def test_parameter_counts_at_paper_width_match_the_release():
    # REFERENCE.md section 2: the released color network has 37.7 M parameters, GridNet 13.2 M
    color = sum(p.numel() for p in create_model("sdc").parameters())
    segmentation = sum(p.numel() for p in create_model("gridnet").parameters())
    assert color == pytest.approx(37.7e6, rel=0.002)
    assert segmentation == pytest.approx(13.2e6, rel=0.002)
    assert create_model("sdc").config.skip_channels == (64, 128, 256, 512, 1024, 1024)


def test_width_multiplier_scales_every_channel_count():
    config = SdcConfig(width=0.5)
    assert config.encoder_channels == (16, 32, 64, 128, 256, 256)
    assert SdcConfig(width=0.5, semantic_stream=False).skip_channels == (16, 32, 64, 128, 256, 256)
    assert GridNetConfig(width=0.5).row_channels == (8, 16, 32, 64, 128)


def test_streams_share_the_encoder_and_only_gray_is_normalized():
    # scalar encoding: a map whose encoding equals the gray image must give identical stream features
    seg = random_map(1, 64, 64, seed=9).clamp(max=NUM_CLASSES - 1)
    as_gray = (seg.float() * 2 / (NUM_CLASSES - 1) - 1).unsqueeze(1)
    raw = build_sdc(instance_norm=False).eval()
    with torch.no_grad():
        for level in raw.skip_features(as_gray, seg):
            gray, semantic = level.chunk(2, dim=1)
            assert torch.allclose(gray, semantic, atol=1e-6)

        normalized = build_sdc(instance_norm=True).eval()
        normalized.load_state_dict(raw.state_dict())
        L = smooth_gray(1, 64, 64, seed=10)
        for on, off in zip(normalized.skip_features(L, seg), raw.skip_features(L, seg)):
            gray_on, semantic_on = on.chunk(2, dim=1)
            gray_off, semantic_off = off.chunk(2, dim=1)
            assert torch.equal(semantic_on, semantic_off)  # semantic features keep their range
            assert not torch.allclose(gray_on, gray_off, atol=1e-3)
            assert torch.allclose(gray_on.mean(dim=(-2, -1)), torch.zeros(1), atol=1e-4)


@pytest.mark.parametrize("scale", [0.4, 1.7])
def test_instance_norm_removes_a_contrast_change(scale):
    # IN with a negligible eps: bias-free convs and LeakyReLU scale every gray feature map by `scale`
    on = build_sdc(instance_norm_eps=1e-10).eval()
    off = build_sdc(instance_norm=False).eval()
    L = smooth_gray(2, 64, 64, seed=11)
    with torch.no_grad():
        assert max(relative_change(on.gray_skip_features(scale * L), on.gray_skip_features(L))) < 1e-4
        change_off = relative_change(off.gray_skip_features(scale * L), off.gray_skip_features(L))
    assert change_off == pytest.approx([abs(scale - 1)] * 6, rel=1e-4)
    # with the default eps 1e-5, deep channels of small variance keep part of the scale, less than half
    default = build_sdc().eval()
    with torch.no_grad():
        change_default = relative_change(default.gray_skip_features(scale * L), default.gray_skip_features(L))
    assert max(change_default) < 0.5 * abs(scale - 1)


def test_instance_norm_removes_contrast_and_brightness_when_gray_is_centered():
    on = build_sdc(center_gray=True, instance_norm_eps=1e-10).eval()
    off = build_sdc(center_gray=True, instance_norm=False).eval()
    L = smooth_gray(2, 64, 64, seed=12)
    changed = 0.6 * L + 0.25  # lower contrast, brighter
    with torch.no_grad():
        assert max(relative_change(on.gray_skip_features(changed), on.gray_skip_features(L))) < 1e-4
        assert min(relative_change(off.gray_skip_features(changed), off.gray_skip_features(L))) > 0.3


def test_instance_norm_alone_does_not_remove_brightness():
    # documented limit of the paper's design (module docstring): an offset changes the features' shapes
    model = build_sdc(instance_norm_eps=1e-10).eval()
    L = smooth_gray(2, 64, 64, seed=13)
    with torch.no_grad():
        assert min(relative_change(model.gray_skip_features(L + 0.3), model.gray_skip_features(L))) > 0.1


@pytest.mark.parametrize("encoding", ["scalar", "onehot", "embedding"])
def test_editing_the_semantic_map_changes_the_colors_in_the_edited_region(encoding):
    model = build_sdc(seed=3, semantic_encoding=encoding).eval()
    L = smooth_gray(1, 64, 64, seed=14)
    seg = torch.full((1, 64, 64), 15)  # "person" everywhere
    edited = seg.clone()
    edited[:, 8:24, 8:24] = 40  # a patch relabelled
    with torch.no_grad():
        change = (model(L, edited) - model(L, seg)).abs().sum(dim=1)[0]
    inside = float(change[8:24, 8:24].mean())
    far = float(change[40:, 40:].mean())
    assert inside > 1e-3
    assert inside > 5 * far


def test_semantic_map_encodings_and_unknown_pixels():
    seg = torch.tensor([[[0, 59, 255], [30, 255, 1]]])
    scalar = SemanticMapInput(SdcConfig(semantic_encoding="scalar"))(seg)
    assert scalar.shape == (1, 1, 2, 3)
    assert scalar[0, 0, 0].tolist() == pytest.approx([-1.0, 1.0, -1.0])  # 255 -> background
    assert float(scalar[0, 0, 1, 0]) == pytest.approx(30 * 2 / 59 - 1, abs=1e-6)

    onehot = SemanticMapInput(SdcConfig(semantic_encoding="onehot"))(seg)
    assert onehot.shape == (1, 60, 2, 3)
    assert onehot.sum(dim=1)[0].tolist() == [[1, 1, 0], [1, 0, 1]]  # unknown: no class
    assert float(onehot[0, 59, 0, 1]) == 1.0

    torch.manual_seed(0)
    embed = SemanticMapInput(SdcConfig(semantic_encoding="embedding", embedding_dim=4))(seg)
    assert embed.shape == (1, 4, 2, 3)
    assert torch.equal(embed[0, :, 0, 2], embed[0, :, 1, 1])  # the dedicated "unknown" vector
    assert not torch.equal(embed[0, :, 0, 2], embed[0, :, 0, 0])

    with pytest.raises(ValueError, match="label 60"):
        SemanticMapInput(SdcConfig())(torch.tensor([[[60]]]))


def test_forward_rejects_sides_that_are_not_multiples_of_32_and_missing_maps():
    model = build_sdc().eval()
    with pytest.raises(ValueError, match="multiples of 32"):
        model(smooth_gray(1, 70, 64, seed=0), torch.zeros(1, 70, 64, dtype=torch.long))
    with pytest.raises(ValueError, match="needs seg"):
        model(smooth_gray(1, 64, 64, seed=0))
    with pytest.raises(ValueError, match="shape"):
        model(smooth_gray(1, 64, 64, seed=0), torch.zeros(1, 32, 64, dtype=torch.long))
    with pytest.raises(ValueError, match="semantic_stream=False"):
        gray_only = build_sdc(semantic_stream=False)
        gray_only(smooth_gray(1, 64, 64, seed=0), torch.zeros(1, 64, 64, dtype=torch.long))


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="sdc.bogus"):
        create_model("sdc", bogus=1)
    with pytest.raises(ConfigError, match="width"):
        create_model("sdc", width=0)
    with pytest.raises(ConfigError, match="semantic_encoding"):
        create_model("sdc", semantic_encoding="rgb")
    with pytest.raises(ConfigError, match="columns"):
        create_model("gridnet", columns=5)


def test_colorize_returns_the_photos_own_size():
    model = build_sdc()
    L = smooth_gray(1, 70, 45, seed=15)[0]  # (1, H, W), odd sides
    seg = random_map(1, 70, 45, seed=16)[0]
    ab = colorize(model, L, seg)
    assert ab.shape == (2, 70, 45)
    assert float(ab.abs().max()) <= 1.0
    assert model.training  # mode restored

    # pad mode: the same numbers as running the net on the padded input and cropping: the image reflected,
    # the map padded with 255 (unknown: semcolor.models.interface's one padding rule)
    padded_L = F.pad(L[None], (0, 64 - 45, 0, 96 - 70), mode="reflect")
    padded_seg = F.pad(seg[None], (0, 64 - 45, 0, 96 - 70), value=255)
    model.eval()
    with torch.no_grad():
        expected = model(padded_L, padded_seg)[0, :, :70, :45]
    assert torch.allclose(ab, expected, atol=1e-6)

    torch.manual_seed(0)
    gridnet = create_model("gridnet", width=0.25)
    for mode in ("pad", "resize"):
        predicted = colorize(model, L[None], gridnet=gridnet, mode=mode)
        assert predicted.shape == (1, 2, 70, 45)
    with pytest.raises(ValueError, match="seg_full or a gridnet"):
        colorize(model, L)
    gray_only = build_sdc(semantic_stream=False)
    assert colorize(gray_only, L).shape == (2, 70, 45)


def test_gridnet_lab_input_mode_reads_L_and_ab():
    from semcolor.models import create_model

    torch.manual_seed(0)
    model = create_model("gridnet", num_classes=5, width=0.25, input_mode="lab")
    batch = {"L": torch.rand(2, 1, 32, 32) * 2 - 1, "ab": torch.rand(2, 2, 32, 32) - 0.5,
             "seg": torch.randint(0, 5, (2, 32, 32))}
    losses = model.compute_losses(batch)
    losses["loss"].backward()
    assert model.stem is not None and torch.isfinite(losses["loss"])
    changed = dict(batch, ab=batch["ab"] + 0.5)  # the color input matters in lab mode
    assert not torch.allclose(model(model.input_from(batch)), model(model.input_from(changed)))
    with pytest.raises(ValueError, match="expects shape"):
        model(batch["L"])


def test_gridnet_gray_dropout_zeroes_the_colour_of_a_share_of_training_samples_only():
    """gray_dropout p: in training about p of the samples enter with ab = 0 (gray), the others unchanged
    (over 4000 samples the share is within 0.03 of p); in eval mode every sample keeps its colour; a
    gray-mode model refuses the option."""
    from semcolor.models import create_model

    torch.manual_seed(0)
    model = create_model("gridnet", num_classes=5, width=0.125, input_mode="lab", gray_dropout=0.3)
    ab = torch.rand(4000, 2, 4, 4) + 0.1  # never zero on its own
    batch = {"L": torch.zeros(4000, 1, 4, 4), "ab": ab}
    model.train()
    colour = model.input_from(batch)[:, 1:]
    dropped = (colour == 0).flatten(1).all(dim=1)
    kept = (colour == ab).flatten(1).all(dim=1)
    assert bool((dropped | kept).all()) and abs(float(dropped.float().mean()) - 0.3) < 0.03
    model.eval()
    assert torch.equal(model.input_from(batch)[:, 1:], ab)
    with pytest.raises(ValueError, match="gray_dropout needs input_mode 'lab'"):
        create_model("gridnet", num_classes=5, gray_dropout=0.5)
