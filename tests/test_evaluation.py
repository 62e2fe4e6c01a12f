"""The evaluation's measurements on models whose answer is known: an oracle U-Net that paints the classes
of its map, one that ignores the twins in its map; the baselines on a real world sample; the test-time
jitter; and the evaluate + claims stages end to end on tiny random checkpoints (a broken method)."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from semcolor import baselines as bl
from semcolor import evaluation as ev
from semcolor import metrics
from semcolor.evaluation_suite import EvaluateConfig, World, evaluate_models
from semcolor.scaling import AB_SCALE
from tests.oracle_models import PaintsItsMap, mode_table
from semcolor.sources.synthetic import (
    CLASS_NAMES,
    WorldConfig,
    class_spec,
    gray_alike_pairs_of,
    palette_of,
    render_image,
)

SPEC = class_spec(WorldConfig())
PALETTE = palette_of(SPEC)
PAIRS = gray_alike_pairs_of(SPEC)
TINY = EvaluateConfig(max_images=8, samples=2, sample_images=4, sweep_images=2, sweep_temperatures=(1.0, 0.6),
                      batch_size=8, grid_images=2, jitter=ev.JitterSweep(levels=(0.0, 1.0)))


def world_set(count: int = 8, size: int = 64) -> ev.EvalSet:
    """Rendered world images in model units (no JPEG), with their labels."""
    images = [render_image(WorldConfig(seed=2, image_size=size), "val", i) for i in range(count)]
    lab = torch.from_numpy(np.stack([w.lab for w in images])).float().permute(0, 3, 1, 2)
    seg = torch.from_numpy(np.stack([w.label for w in images]).astype(np.int64))
    return ev.EvalSet(lab[:, :1] / 50.0 - 1.0, lab[:, 1:] / AB_SCALE, seg, [w.image_id for w in images])


def test_steering_moves_a_map_reader_to_the_twin_and_not_a_map_ignorer():
    data = world_set()
    swapped = ev.swap_twins(data.seg, PAIRS)
    for a, b in PAIRS:
        assert torch.equal(swapped == b, data.seg == a) and torch.equal(swapped == a, data.seg == b)
    reader, ignorer = PaintsItsMap(mode_table(False)), PaintsItsMap(mode_table(True))
    with torch.no_grad():
        shares = ev.steering_shares(data, reader(data.L, data.seg), reader(data.L, swapped), PAIRS, PALETTE)
        ignored = ev.steering_shares(data, ignorer(data.L, data.seg), ignorer(data.L, swapped), PAIRS, PALETTE)
    assert shares["pixels"] > 500 and shares["before"] == 0.0 and shares["after"] == 1.0
    # the ignorer paints both twins like the first twin, whatever the map says: the second twins' pixels
    # "land on the twin" before and after alike, the map changes nothing
    assert 0.0 < ignored["before"] == ignored["after"] < 0.9


def test_the_suite_measures_steering_through_the_prediction_path_and_claim_f_follows():
    """Through evaluate_models (inference.predict_ab): the oracle as sdc_paper steers fully, the twin
    ignorer as sdc_no_in does not, so claim (f) does not hold; with the oracle as both it holds."""
    from semcolor.claims import evaluate_claims

    data = world_set()
    statistics = bl.TrainStatistics(np.bincount(data.seg.numpy().ravel()[data.seg.numpy().ravel() != 255],
                                                minlength=len(CLASS_NAMES)), np.array([2.0, 5.0]))
    world = World(PALETTE, tuple(PAIRS))

    def record(no_in_table):
        out = evaluate_models({"sdc_paper": PaintsItsMap(mode_table(False)), "sdc_no_in": PaintsItsMap(no_in_table)},
                              {}, None, None, data, statistics, len(CLASS_NAMES), world, TINY, progress=False)
        return {"models": out.results, "baselines": out.baselines, "details": out.details}, out

    broken, out = record(mode_table(True))
    assert broken["models"]["sdc_paper"]["steer_after"] == 1.0 and broken["models"]["sdc_no_in"]["steer_after"] < 0.6
    assert broken["models"]["sdc_paper"]["gt_map_palette_accuracy"] == 1.0  # the oracle knows every class
    assert out.images["steering_sdc_paper"].shape[1] == 5 * (64 + 2) + 2
    assert evaluate_claims([broken], [0])["f"]["holds"] is False
    working, _ = record(mode_table(False))
    assert evaluate_claims([working], [0])["f"]["holds"] is True
    # the jitter sweep: an oracle that reads only its map does not care about the gray input
    curve = broken["details"]["jitter_sweep"]["sdc_paper"]
    assert curve["levels"] == [0.0, 1.0] and curve["psnr"][0] == pytest.approx(curve["psnr"][1])


def test_baselines_on_world_images():
    """The best constant scores the largest chromatic class's share; painting every pixel with its class's
    likeliest mode scores palette accuracy 1 (all classes here have one likeliest mode); gray scores 0 on
    palette accuracy; majority class mIoU = its IoU / classes present."""
    data = world_set(count=12)
    labels = data.seg.numpy()
    statistics = bl.train_statistics([(data.seg, data.ab)], len(CLASS_NAMES))
    scored = labels[np.isin(labels, PALETTE.chromatic_classes)]
    found = bl.colorization_baselines(data, statistics, PALETTE, data.subset(range(4)))
    assert found["constant_color"]["palette_accuracy"] == pytest.approx(np.bincount(scored).max() / scored.size)
    assert found["single_mode"]["palette_accuracy"] == 1.0 and found["gray"]["palette_accuracy"] == 0.0
    assert found["real"]["palette_accuracy"] == 1.0
    assert found["gray"]["colorfulness"] < 0.5  # 8-bit rounding only
    assert found["constant_color"]["ab_mean"] == pytest.approx(list(statistics.mean_ab))
    assert "palette_accuracy_sampled_images" in found["constant_color"]
    majority = bl.majority_class_baseline(data, statistics, len(CLASS_NAMES))
    labelled = labels[labels != 255]
    top = np.bincount(labelled).argmax()
    iou = np.mean(labelled == top)  # predicted everywhere: intersection = its pixels, union = all pixels
    assert majority["seg_miou"] == pytest.approx(iou / len(np.unique(labelled)))
    prior = statistics.class_prior
    assert majority["seg_seg_loss"] == pytest.approx(-np.mean(np.log(prior[labelled])), rel=1e-4)
    with pytest.raises(ValueError, match="outside"):
        bl.train_statistics([(torch.full((1, 2, 2), 20), torch.zeros(1, 2, 2, 2))], len(CLASS_NAMES))


def test_jittered_gray_follows_its_formula():
    sweep = ev.JitterSweep(levels=(0.0, 0.5, 1.0), contrast=0.5, brightness=10.0, gamma=2.0)
    L = torch.full((2, 1, 4, 4), 0.2)  # L = 60
    assert torch.equal(ev.jittered_gray(L, 0.0, sweep), L)
    out = (ev.jittered_gray(L, 1.0, sweep) + 1.0) * 50.0
    assert float(out[0, 0, 0, 0]) == pytest.approx(50 + 0.5 * (100 * 0.6**2 - 50) + 10, abs=1e-4)  # even: +
    assert float(out[1, 0, 0, 0]) == pytest.approx(50 + 0.5 * (100 * 0.6**0.5 - 50) - 10, abs=1e-4)  # odd: -
    assert float(ev.jittered_gray(torch.ones(1, 1, 2, 2), 1.0, ev.JitterSweep(brightness=50.0)).max()) <= 1.0
    with pytest.raises(ValueError, match="increasing"):
        ev.JitterSweep(levels=(0.5, 0.2))


@pytest.mark.slow
def test_evaluate_and_claims_stages_end_to_end_on_tiny_random_models(tmp_path, mlflow_store):  # noqa: F811
    """Random (untrained) checkpoints of all 11 models through the real stages: metrics/evaluate.json has
    the layout the report, the retrain flow and issue #10 expect; the figures are written; claims.json
    is keyed a-f, single-seed, and a broken (random) method holds none of (a), (b), (d), (e), (f)."""
    import yaml

    from pipeline.stages import claims as claims_stage
    from pipeline.stages import evaluate as evaluate_stage
    from tests.mlflow_store import save_tiny_checkpoint
    from tests.world_shards import build_world_shards

    build_world_shards(tmp_path)
    classes = {"num_classes": len(CLASS_NAMES)}
    configs = {
        "psc_plain": ("psc_plain", {"width": 0.03125, "generator_layers": 1, "generator_channels": 8, "num_mixtures": 2}),
        "sdc_paper": ("sdc", {"width": 0.0625}), "sdc_no_in": ("sdc", {"width": 0.0625, "instance_norm": False}),
        "gridnet_gray": ("gridnet", {"width": 0.125}),
        "gridnet_color": ("gridnet", {"width": 0.125, "input_mode": "lab"}),
        "cls_plain": ("cls_plain", {"width": 0.0625, "discriminator_width": 0.0625}),
        "cls_semantic": ("cls_semantic", {"width": 0.0625, "discriminator_width": 0.0625}),
        "cls_semantic_gan": ("cls_semantic_gan", {"width": 0.0625, "discriminator_width": 0.0625}),
    }
    for variant in ("embed", "full", "seg_only"):
        configs[f"psc_{variant}"] = ("psc_full" if variant == "full" else "psc_embed", configs["psc_plain"][1])
    for seed, (name, (model_name, config)) in enumerate(sorted(configs.items())):
        save_tiny_checkpoint(tmp_path / "models" / f"{name}.pt", model_name, {**config, **classes}, seed=seed)
    (tmp_path / "metrics" / "seeds").mkdir(parents=True)
    params = {"evaluate": {"max_images": 8, "samples": 2, "sample_images": 4, "sweep_images": 2,
                           "sweep_temperatures": [1.0, 0.6], "batch_size": 8, "grid_images": 2,
                           "jitter": {"levels": [0.0, 0.5, 1.0]}},
              "claims": {"extra_seeds": []}, "train_psc": {"train": {"seed": 0}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert evaluate_stage.main(["--no-progress"]) == 0
    record = json.loads((tmp_path / "metrics" / "evaluate.json").read_text())
    models = record["models"]
    for variant in ("plain", "embed", "full"):
        psc = models[f"psc_{variant}"]
        for key in ("psnr", "fast_psnr", "colorfulness", "ms_ssim_between_samples", "palette_accuracy",
                    "fast_palette_accuracy", "mode_tv"):
            assert math.isfinite(psc[key]), (variant, key)
    assert {"seg_miou", "seg_seg_loss", "seg_twin_confusion"} <= set(models["psc_full"])
    assert set(models["sdc_paper"]) >= {"psnr", "gt_map_psnr", "steer_before", "steer_after", "jitter_psnr_2"}
    assert 0.0 <= models["gridnet_gray"]["seg_miou"] <= 1.0
    assert {"miou_gray", "miou_real", "miou_psc_full", "miou_sdc_paper", "miou_cls_plain"} \
        <= set(models["table3_color_segmenter"])
    baselines = record["baselines"]
    assert baselines["real"]["colorfulness"] > 5 and 0 < baselines["majority_class"]["seg_miou"] < 0.5
    assert {"constant_color", "single_mode", "gray"} <= set(baselines) and "mode_tv" in baselines["single_mode"]
    assert record["details"]["temperature_sweep"]["psc_full"].keys() == {"temperature_1", "temperature_0.6"}
    assert len(record["details"]["palette_confusion"]["sdc_paper"]) == len(CLASS_NAMES)
    figures = sorted(p.name for p in (tmp_path / "reports" / "figures").iterdir())
    assert {"colorizations.png", "semantic_maps.png", "jitter_sweep.png", "steering_sdc_paper.png",
            "temperature_sweep_psc_full.png", "columns.json"} <= set(figures)

    assert claims_stage.main([]) == 0
    verdicts = json.loads((tmp_path / "metrics" / "claims.json").read_text())
    assert list(verdicts) == list("abcdef")
    assert all(v["single_seed"] and v["seeds"] == [0] for v in verdicts.values())
    for letter in "abdef":
        assert verdicts[letter]["holds"] is not True, (letter, verdicts[letter]["reason"])
    small = json.loads((tmp_path / "metrics" / "headline.json").read_text())
    assert small["seeds"] == 1 and set(small["claims"]) == set("abcdef")
    assert set(small["claims"].values()) <= {"fails", "untestable", "holds"}

    from pipeline.stages import report
    os.makedirs(tmp_path / "metrics" / "train", exist_ok=True)
    assert report.main([]) == 0
    text = (tmp_path / "reports" / "report.md").read_text()
    assert "*baseline: constant_color*" in text and "(single seed)" in text and "## PixelCNN temperature sweep" in text
    assert "figures/steering_sdc_paper.png" in text and "figures/jitter_sweep.png" in text


from tests.mlflow_store import migrated_mlflow_db, mlflow_store  # noqa: E402, F401  (fixtures)


def test_sampling_noise_is_per_image_and_independent_of_the_batch_size():
    """26 copies of one gray image through the suite's sampler: image i's draws are the same for batch
    sizes 8 and 104 (the seeds decide, not the chunks), and no two images share their noise (images 0,
    12 and 24 of the old evaluate stage did)."""
    from semcolor.evaluation_suite import _draw
    from semcolor.models import create_model

    torch.manual_seed(0)
    model = create_model("psc_full", num_classes=len(CLASS_NAMES), width=0.03125, generator_layers=1,
                         generator_channels=8, num_mixtures=2)
    one = world_set(count=1, size=64)
    data = ev.EvalSet(one.L.repeat(26, 1, 1, 1), one.ab.repeat(26, 1, 1, 1), one.seg.repeat(26, 1, 1),
                      [f"copy_{i}" for i in range(26)])
    small, large = _draw(model, data, 2, 1.0, 5, 8), _draw(model, data, 2, 1.0, 5, 104)
    assert small.shape == (26, 2, 2, 64, 64) and torch.equal(small, large)
    flat = small[:, 0].flatten(1)
    for i in range(26):
        for j in range(i + 1, 26):
            assert not torch.equal(flat[i], flat[j]), (i, j)
