"""The classification colorizer (cls_*): losses, semantic guidance, decoding, the two-optimizer GAN step."""

from __future__ import annotations

import math

import pytest
import torch

from semcolor.config import ConfigError, config_to_dict
from semcolor.models import create_model
from semcolor.models import cls as cls_module  # registers the cls_* models
from semcolor.models.cls import AdversarialQuantizedColorizer, ClsConfig, QuantizedColorizer
from semcolor.quantized_ab import bins_tensor, in_gamut_bins, soft_encode
from semcolor.training.loop import TrainConfig, list_batches, train

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

NUM_CLASSES = 5
NARROW = {"width": 0.25, "num_classes": NUM_CLASSES, "discriminator_width": 0.125}
VARIANTS = [
    ("cls_plain", {}),
    ("cls_semantic", {}),  # the joint segmentation head
    ("cls_semantic", {"semantic": "input"}),
    ("cls_semantic", {"semantic": "both", "semantic_encoding": "scalar", "output_stride": 1}),
    ("cls_semantic_gan", {}),
    ("cls_semantic_gan",
     {"gan_loss": "standard", "r1_weight": 1.0, "spectral_norm": False, "semantic": "both"}),
]


def _batch(size: int = 64, n: int = 2, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    seg = torch.randint(0, NUM_CLASSES, (n, size, size), generator=generator)
    seg[:, :3] = 255  # an unlabelled strip
    return {
        "L": torch.rand(n, 1, size, size, generator=generator) * 2 - 1,
        "ab": (torch.rand(n, 2, size, size, generator=generator) - 0.5) * 0.8,
        "seg": seg,
        "key": [f"k{i}" for i in range(n)],
    }


def _build(name: str, **config) -> QuantizedColorizer:
    torch.manual_seed(0)
    return create_model(name, **{**NARROW, **config})


def _snapshot(parameters) -> list[torch.Tensor]:
    return [p.detach().clone() for p in parameters]


def _changed(before, parameters) -> list[bool]:
    return [not torch.equal(b, p.detach()) for b, p in zip(before, parameters)]


@pytest.mark.parametrize(("name", "config"), VARIANTS)
def test_forward_backward_at_64px(name, config):
    model = _build(name, **config)
    batch = _batch()
    stride = model.config.output_stride
    logits, seg_logits = model(batch["L"], batch["seg"])
    assert logits.shape == (2, 313, 64 // stride, 64 // stride)
    assert (seg_logits is not None) == (model.config.semantic in ("head", "both"))
    if isinstance(model, AdversarialQuantizedColorizer):
        optimizers = model.make_optimizers(1e-3, (0.9, 0.999), 0.0)
        before = _snapshot(model.parameters())
        losses = model.train_step(batch, optimizers, grad_clip=1.0)
        names = [name for name, _ in model.named_parameters()]
        changed = dict(zip(names, _changed(before, model.parameters())))
        # every parameter of G and every weight of D took a step (D's output bias has an exactly zero
        # hinge gradient while all scores lie in (-1, 1): +1 per real, -1 per fake, equal counts)
        assert all(moved for name, moved in changed.items() if not name.startswith("discriminator."))
        assert all(moved for name, moved in changed.items()
                   if name.startswith("discriminator.") and "weight" in name)
        assert {"discriminator", "adversarial", "d_real", "d_fake"} <= set(losses)
    else:
        losses = model.compute_losses(batch)
        losses["loss"].backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert all(torch.isfinite(v).all() for v in losses.values())
    # a fresh net predicts nearly uniform bin distributions: the cross-entropy starts near log 313
    assert losses["classification"].item() == pytest.approx(math.log(313), abs=0.5)
    assert ("segmentation" in losses) == (model.config.semantic in ("head", "both"))


def test_classification_loss_is_the_rebalanced_soft_cross_entropy():
    model = _build("cls_plain", output_stride=1)
    bins = bins_tensor()
    ab = torch.full((1, 2, 4, 4), 0.0)
    ab[0, 0], ab[0, 1] = 20 / 128, -30 / 128  # every pixel exactly on the bin (20, -30)
    target = soft_encode(ab * 128, bins)
    # logits equal to the target's log: the cross-entropy is the target's entropy, its minimum
    logits = target.clamp_min(1e-30).log()
    loss, pooled = model.classification_loss(logits, ab)
    entropy = -(target * target.clamp_min(1e-30).log()).sum(1).mean()
    assert loss.item() == pytest.approx(entropy.item(), rel=1e-5)
    assert torch.equal(pooled, ab)
    perturbed, _ = model.classification_loss(logits + 0.1 * torch.randn_like(logits), ab)
    assert perturbed.item() > loss.item()
    # rebalancing: a weight of 3 on the pixels' nearest bin triples the loss
    weights = [1.0] * 313
    weights[int(((bins - torch.tensor([20.0, -30.0])).abs().sum(1) == 0).nonzero())] = 3.0
    rebalanced = _build("cls_plain", output_stride=1, class_weights=weights)
    assert rebalanced.classification_loss(logits, ab)[0].item() == pytest.approx(3 * loss.item(), rel=1e-6)
    assert torch.equal(rebalanced.state_dict()["class_weights"], torch.tensor(weights))


def test_targets_at_output_stride_4_are_patch_means():
    model = _build("cls_plain", output_stride=4)
    ab = torch.zeros(1, 2, 16, 16)
    ab[:, :, :4, :4] = torch.tensor([0.5, -0.25]).reshape(1, 2, 1, 1)
    logits = torch.zeros(1, 313, 4, 4)
    _, pooled = model.classification_loss(logits, ab)
    assert pooled.shape == (1, 2, 4, 4)
    assert torch.allclose(pooled[0, :, 0, 0], torch.tensor([0.5, -0.25]))
    assert pooled[0, :, 1:, 1:].abs().max() == 0


def test_gan_step_updates_discriminator_and_generator_on_separate_optimizers():
    # the standard loss: under hinge, D's output bias can have an exactly zero gradient (see above)
    model = _build("cls_semantic_gan", r1_weight=0.5, gan_loss="standard")
    optimizers = model.make_optimizers(1e-3, (0.5, 0.999), 0.0)
    generator_params = model.generator_parameters()
    discriminator_params = list(model.discriminator.parameters())
    # each optimizer holds exactly its own network's parameters
    in_g = {id(p) for group in optimizers["generator"].param_groups for p in group["params"]}
    in_d = {id(p) for group in optimizers["discriminator"].param_groups for p in group["params"]}
    assert in_g == {id(p) for p in generator_params} and in_d == {id(p) for p in discriminator_params}
    assert not in_g & in_d and in_g | in_d == {id(p) for p in model.parameters()}

    batch = _batch()
    losses, fake_ab = model.generator_losses(batch)
    condition, real_ab = model._pool(batch["L"]), model._pool(batch["ab"])
    g_before, d_before = _snapshot(generator_params), _snapshot(discriminator_params)
    d_result = model.discriminator_step(condition, real_ab, fake_ab, optimizers["discriminator"], 1.0)
    assert all(_changed(d_before, discriminator_params))  # the D step moves D ...
    assert not any(_changed(g_before, generator_params))  # ... and leaves G alone
    assert all(p.grad is None for p in generator_params)  # the generated ab was detached
    assert d_result["r1"] > 0

    d_after = _snapshot(discriminator_params)
    d_grads = _snapshot(p.grad for p in discriminator_params)
    model.generator_step(condition, fake_ab, losses["loss"], optimizers["generator"], grad_clip=1.0)
    assert all(_changed(g_before, generator_params))  # the G step moves G ...
    assert not any(_changed(d_after, discriminator_params))  # ... and leaves D alone,
    assert not any(_changed(d_grads, (p.grad for p in discriminator_params)))  # adding nothing to its grads
    assert all(p.requires_grad for p in discriminator_params)  # unfrozen again for the next D step


def test_generator_step_adds_the_weighted_adversarial_term():
    # no spectral norm here: its power iteration would move D's weights between the two forwards
    model = _build("cls_semantic_gan", gan_weight=0.5, gan_loss="hinge", spectral_norm=False)
    optimizers = model.make_optimizers(1e-3, (0.5, 0.999), 0.0)
    losses, fake_ab = model.generator_losses(_batch())
    condition = model._pool(_batch()["L"])
    with torch.no_grad():
        expected_adversarial = -model.discriminator(condition, fake_ab).mean()
    result = model.generator_step(condition, fake_ab, losses["loss"], optimizers["generator"], None)
    assert result["adversarial"].item() == pytest.approx(expected_adversarial.item(), rel=1e-4, abs=1e-6)
    expected_total = losses["loss"].item() + 0.5 * result["adversarial"].item()
    assert result["loss"].item() == pytest.approx(expected_total, rel=1e-5)
    # the curves log the raw and the weighted term
    assert result["adversarial_weighted"].item() == pytest.approx(0.5 * result["adversarial"].item(), rel=1e-6)
    assert losses["segmentation_weighted"].item() == pytest.approx(
        model.config.semantic_weight * losses["segmentation"].item(), rel=1e-6)
    assert losses["loss"].item() == pytest.approx(
        losses["classification"].item() + losses["segmentation_weighted"].item(), rel=1e-6)


def test_gan_losses_hinge_and_standard():
    hinge = _build("cls_semantic_gan", gan_loss="hinge")
    standard = _build("cls_semantic_gan", gan_loss="standard")
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-3.0, 0.0])
    assert hinge.discriminator_loss(real, fake).item() == pytest.approx((0 + 0.5) / 2 + (0 + 1.0) / 2)
    assert hinge.adversarial_loss(fake).item() == pytest.approx(1.5)
    softplus = torch.nn.functional.softplus
    assert standard.discriminator_loss(real, fake).item() == pytest.approx(
        (softplus(-real).mean() + softplus(fake).mean()).item())
    non_saturating = -torch.log(torch.sigmoid(fake)).mean().item()
    assert standard.adversarial_loss(fake).item() == pytest.approx(non_saturating, rel=1e-6)


def test_the_shared_loop_trains_the_gan_with_both_optimizers(tmp_path):
    model = _build("cls_semantic_gan", output_stride=2)
    batches = list_batches([_batch(32, 2, seed) for seed in range(2)])
    config = TrainConfig(steps=3, lr=1e-3, log_every=1, checkpoint_every=100, device="cpu", progress=False)
    result = train(model, "cls_semantic_gan", model.config, batches, config, tmp_path / "cls.pt")
    assert result.step == 3
    assert {"loss", "discriminator", "adversarial", "classification"} <= set(result.losses)
    payload = torch.load(tmp_path / "cls.pt", weights_only=False)
    assert set(payload["optimizer"]) == {"generator", "discriminator"}
    # the checkpoint's plain config rebuilds the same network
    rebuilt = create_model(payload["model_name"], **payload["model_config"])
    rebuilt.load_state_dict(payload["model"])
    L = _batch(32)["L"]
    assert torch.equal(rebuilt.colorize(L), model.colorize(L))


def test_a_few_steps_fit_a_fixed_batch():
    model = _build("cls_plain", output_stride=2)
    batch = _batch(32, 2)
    # a learnable mapping: the color is a function of the lightness
    batch["ab"] = torch.stack([batch["L"][:, 0] * 0.4, -batch["L"][:, 0] * 0.3], dim=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(25):
        losses = model.compute_losses(batch)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        first = first if first is not None else {k: v.item() for k, v in losses.items()}
    assert losses["loss"].item() < 0.7 * first["loss"]
    assert losses["ab_mae"].item() < first["ab_mae"]


def test_colorize_any_size_in_range_and_restores_mode():
    model = _build("cls_semantic", semantic="both")
    model.train()
    L, seg = _batch(48)["L"][:, :, :37, :45], _batch(48)["seg"][:, :37, :45]
    ab = model.colorize(L, seg)
    assert ab.shape == (2, 2, 37, 45) and model.training
    assert ab.min() >= -1.0 and ab.max() <= 127 / 128
    # the annealed mean of in-gamut bins lies inside their bounding box
    box = torch.from_numpy(in_gamut_bins()).float() / 128
    assert ab[:, 0].min() >= box[:, 0].min() - 1e-6 and ab[:, 1].max() <= box[:, 1].max() + 1e-6
    with pytest.raises(ValueError, match="needs seg"):
        model.colorize(L)
    plain = _build("cls_semantic")  # head only: no map needed to colorize
    assert plain.colorize(L).shape == (2, 2, 37, 45)
    assert plain.predict_segmentation(_batch(32)["L"]).shape == (2, 32, 32)


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="semantic is fixed"):
        create_model("cls_plain", semantic="head")
    with pytest.raises(ValueError, match="gan is fixed"):
        create_model("cls_semantic", gan=True)
    with pytest.raises(ValueError, match="use cls_plain"):
        create_model("cls_semantic", semantic="none")
    with pytest.raises(ConfigError, match="class_weights"):
        create_model("cls_plain", class_weights=[1.0] * 312)
    with pytest.raises(ConfigError, match="output_stride"):
        create_model("cls_plain", output_stride=8)
    with pytest.raises(ConfigError, match="cls_plain.colour"):
        create_model("cls_plain", colour=1)
    with pytest.raises(ValueError, match="num_bins"):
        QuantizedColorizer(ClsConfig(num_bins=300))
    model = _build("cls_plain")
    with pytest.raises(ValueError, match="multiples of 16"):
        model(torch.zeros(1, 1, 40, 40))
    gan = _build("cls_semantic_gan", discriminator_downsamplings=3)
    with pytest.raises(ValueError, match="needs >= 32 px"):
        gan.train_step(_batch(64), gan.make_optimizers(1e-3, (0.5, 0.999), 0.0), None)


def test_plain_config_round_trips_through_the_checkpoint_form():
    model = _build("cls_semantic_gan", class_weights=[float(i % 7 + 1) for i in range(313)])
    plain = config_to_dict(model.config)
    assert isinstance(plain["class_weights"], list) and len(plain["class_weights"]) == 313
    rebuilt = create_model("cls_semantic_gan", **plain)
    assert rebuilt.config == model.config
    assert set(rebuilt.state_dict()) == set(model.state_dict())
    assert "bins" not in model.state_dict()  # recomputed from the gamut, never stored
    assert cls_module.SIZE_MULTIPLE == 16
