"""The claims' rules on hand-made evaluation records: a working method holds, a broken one does not (or is
not testable), margins are twice the pooled seed std, single-seed verdicts are marked."""

from __future__ import annotations

import copy
import math

import pytest

from semcolor.evaluation.claims import Figure, at_most, beats, evaluate_claims, headline, pooled_std


def record(**changes) -> dict:
    """One seed's evaluation record in which every claim holds; ``changes``: dotted path -> value."""
    base = {
        "models": {
            "psc_plain": {"palette_accuracy": 0.50, "fast_palette_accuracy": 0.55, "mode_tv": 0.30,
                          "ms_ssim_between_samples": 0.85},
            "psc_embed": {"palette_accuracy": 0.60, "fast_palette_accuracy": 0.65, "mode_tv": 0.25,
                          "ms_ssim_between_samples": 0.85, "seg_miou": 0.50, "seg_seg_loss": 0.60},
            "psc_full": {"palette_accuracy": 0.62, "fast_palette_accuracy": 0.66, "mode_tv": 0.10,
                         "ms_ssim_between_samples": 0.88, "seg_miou": 0.52, "seg_seg_loss": 0.58},
            "psc_seg_only": {"seg_miou": 0.40, "seg_seg_loss": 0.80},
            "sdc_paper": {"steer_before": 0.02, "steer_after": 0.90},
            "sdc_no_in": {"steer_before": 0.03, "steer_after": 0.85},
            "table3_color_segmenter": {"miou_gray": 0.40, "miou_real": 0.70, "miou_gray_on_sampled_images": 0.41,
                                       "miou_real_on_sampled_images": 0.69, "miou_psc_plain": 0.50,
                                       "miou_psc_full": 0.55, "miou_psc_full_fast": 0.30, "miou_sdc_paper": 0.60},
        },
        "baselines": {
            "constant_color": {"palette_accuracy": 0.25, "palette_accuracy_sampled_images": 0.26, "psnr": 18.0},
            "single_mode": {"mode_tv": 0.40},
            "majority_class": {"seg_miou": 0.05, "seg_seg_loss": 2.1},
            "real": {"colorfulness": 40.0},
        },
        "details": {"jitter_sweep": {"sdc_paper": {"psnr": [26.0, 25.5, 25.0]},
                                     "sdc_no_in": {"psnr": [26.5, 24.0, 21.0]}}},
    }
    for path, value in changes.items():
        node = base
        *parents, leaf = path.split("/")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return base


def three_seeds(jitter: float = 0.005, **changes) -> list[dict]:
    """Three records whose every figure differs by -jitter, 0, +jitter relative (small seed spread)."""
    records = []
    for offset in (-1, 0, 1):
        one = record(**changes)

        def spread(node):
            for key, value in node.items():
                if isinstance(value, dict):
                    spread(value)
                elif isinstance(value, float) and "baselines" not in key:
                    node[key] = value * (1 + offset * jitter)
                elif isinstance(value, list):
                    node[key] = [v * (1 + offset * jitter) for v in value]
        spread(one["models"])
        spread(one["details"])
        records.append(one)
    return records


def test_the_comparison_rules():
    a, b = Figure((1.0, 1.2, 1.4)), Figure((0.5, 0.6, 0.7))
    assert a.mean == pytest.approx(1.2) and a.std == pytest.approx(0.2)
    assert pooled_std(a, b) == pytest.approx(math.sqrt((0.04 + 0.01) / 2))
    assert beats(a, b) and not beats(b, a) and beats(b, a, higher_is_better=False)
    close = Figure((0.9, 1.2, 1.5))  # mean 1.2 vs 1.0: 0.2 apart, but the spread is 0.3
    assert not beats(close, Figure((1.0, 1.0, 1.0)))
    assert at_most(Figure((1.0, 1.2, 1.4)), Figure((1.0, 1.0, 1.0)))  # 0.2 above, within 2 pooled stds (0.28)
    assert not at_most(Figure((1.1, 1.2, 1.3)), Figure((1.0, 1.0, 1.0)))  # 0.2 above, beyond 2 pooled (0.14)
    assert not at_most(Figure((2.0, 2.0, 2.0)), Figure((1.0, 1.0, 1.0)))
    assert Figure((3.0,)).std == 0.0


def test_every_claim_holds_for_a_working_method_over_three_seeds():
    verdicts = evaluate_claims(three_seeds(), [0, 1, 2])
    assert list(verdicts) == ["a", "b", "c", "d", "e", "f"]
    for letter, verdict in verdicts.items():
        assert verdict["holds"] is True, (letter, verdict["reason"])
        assert verdict["seeds"] == [0, 1, 2] and verdict["single_seed"] is False
        assert verdict["statement"] and verdict["rule"] and verdict["figures"]
        for figure in verdict["figures"].values():
            assert len(figure["values"]) == 3 and set(figure) == {"values", "mean", "std"}
    assert verdicts["e"]["ranking"][0] == "sdc_paper"


@pytest.mark.parametrize(("letter", "changes", "expected", "reason"), [
    # (a) semantics bring nothing: embed no better than plain
    ("a", {"models/psc_embed/palette_accuracy": 0.50}, False, "embed (samples)"),
    # (a) plain below the constant colour: the comparison is among broken models
    ("a", {"models/psc_plain/fast_palette_accuracy": 0.20}, None, "constant_color baseline for fast"),
    # (b) the heads sit at the prior (mIoU below 2x the majority class)
    ("b", {"models/psc_seg_only/seg_miou": 0.08}, None, "below 2x the majority-class mIoU"),
    ("b", {"models/psc_embed/seg_seg_loss": 0.80}, False, "cross-entropy"),
    # (c) IN falls as much as no IN
    ("c", {"details/jitter_sweep/sdc_paper/psnr": [26.0, 23.0, 20.5]}, False, "not smaller by the margin"),
    # (c) a model below the constant colour is not a colorizer to compare
    ("c", {"details/jitter_sweep/sdc_no_in/psnr": [15.0, 14.0, 12.0]}, None, "not above the constant_color PSNR"),
    # (d) confetti: right diversity number but mode frequencies no better than one mode
    ("d", {"models/psc_full/mode_tv": 0.45}, False, "does not beat the single-mode"),
    ("d", {"models/psc_full/ms_ssim_between_samples": 0.2}, False, "outside [0.7, 0.97]"),
    # (e) the colour segmenter fails on gray (the old demo's 0.0008)
    ("e", {"models/table3_color_segmenter/miou_gray": 0.0008}, None, "not above the majority-class baseline"),
    ("e", {"models/table3_color_segmenter/miou_psc_full": 0.30}, False, "psc_full below gray"),
    # (f) a U-Net that ignores its map
    ("f", {"models/sdc_paper/steer_after": 0.04}, False, "sdc_paper: 0.04"),
])
def test_a_broken_method_does_not_hold_or_is_not_testable(letter, changes, expected, reason):
    verdict = evaluate_claims(three_seeds(**changes), [0, 1, 2])[letter]
    assert verdict["holds"] is expected
    assert reason in verdict["reason"]


def test_a_difference_within_the_seed_spread_does_not_count():
    """embed 0.02 above plain, but the seeds spread by +-10 %: not a win over three seeds; the same
    difference from a single seed is a (marked) single-seed verdict."""
    records = three_seeds(jitter=0.1, **{"models/psc_embed/palette_accuracy": 0.52,
                                         "models/psc_full/palette_accuracy": 0.52})
    assert evaluate_claims(records, [0, 1, 2])["a"]["holds"] is False
    single = evaluate_claims([records[1]], [7])["a"]
    assert single["holds"] is True and single["single_seed"] is True and single["seeds"] == [7]
    assert "Single seed" in single["reason"]


def test_missing_figures_make_a_claim_not_testable_and_name_the_figure():
    broken = record()
    del broken["models"]["sdc_no_in"]
    verdicts = evaluate_claims([broken], [0])
    assert verdicts["f"]["holds"] is None and "models.sdc_no_in.steer_before" in verdicts["f"]["reason"]
    no_sweep = record()
    del no_sweep["details"]["jitter_sweep"]["sdc_paper"]
    verdict = evaluate_claims([no_sweep], [0])["c"]
    assert verdict["holds"] is None and "details.jitter_sweep.sdc_paper.psnr" in verdict["reason"]
    nan = record(**{"models/psc_full/mode_tv": float("nan")})
    assert evaluate_claims([nan], [0])["d"]["holds"] is None
    with pytest.raises(ValueError, match="distinct"):
        evaluate_claims([record(), record()], [1, 1])


def test_headline_is_small_and_nested():
    records = three_seeds()
    verdicts = evaluate_claims(records, [0, 1, 2])
    small = headline(records, [0, 1, 2], verdicts)
    assert small["seeds"] == 3 and small["claims"] == {k: "holds" for k in "abcdef"}
    assert small["palette"]["psc_full"] == pytest.approx(0.62)
    assert small["palette"]["constant"] == pytest.approx(0.25)
    broken = headline([record(**{"models/psc_seg_only/seg_miou": 0.01})], [0],
                      evaluate_claims([record(**{"models/psc_seg_only/seg_miou": 0.01})], [0]))
    assert broken["claims"]["b"] == "untestable"  # a word, not null: `dvc metrics show` drops nulls

    def numbers(node):
        return sum(numbers(v) if isinstance(v, dict) else 1 for v in node.values())
    assert numbers(small) <= 30
    untouched = copy.deepcopy(records)
    assert records == untouched  # reading does not modify the records
