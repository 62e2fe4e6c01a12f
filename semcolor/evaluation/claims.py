"""The papers' claims as rules fixed before looking, over the evaluations of several training seeds.

Input: one evaluation record per training seed (the mapping the `evaluate` stage writes to
metrics/evaluate.json: ``models``, ``baselines``, ``details``; every record of the same world and
validation set). Output: ``metrics/claims.json``, a mapping keyed by claim letter::

    {"a": {"holds": true | false | null, "statement": ..., "rule": ..., "reason": ...,
           "figures": {name: {"values": [one per seed], "mean": m, "std": s}}, "seeds": [0, 1, 2],
           "single_seed": false}, ...}

How figures are compared (the same for every claim):

- each figure is summarized over seeds by its mean and its sample standard deviation (ddof 1; 0 for one
  seed); a baseline that does not depend on the training seed has std 0;
- "A beats B" means mean(A) - mean(B) > 2 * pooled std, pooled std = sqrt((std_A^2 + std_B^2) / 2),
  in the direction in which the metric is better (higher mIoU, lower cross-entropy, ...);
- "A <= B" (an ordering that allows equality) holds unless A exceeds B by more than 2 * pooled std;
- thresholds ("at least 50 %") and preconditions ("above the baseline") compare the seed mean;
- a failed precondition gives ``holds: null`` (not testable) with the reason; a missing figure too;
- with a single seed every std is 0, so the margins vanish: such verdicts are marked ``single_seed`` and
  say nothing about noise (``make demo``); ``make claims`` runs at least three seeds.

No rule, threshold or world parameter may be changed after looking at the result it decides.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MARGIN_STDS = 2.0  # "beats": by more than this many pooled seed standard deviations

PSC_VARIANTS = ("plain", "embed", "full")
SDC_VARIANTS = ("paper", "no_in")


@dataclass(frozen=True)
class Figure:
    """One figure over seeds: its per-seed values, mean and sample std (0 for a single value)."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(sum(self.values) / len(self.values))

    @property
    def std(self) -> float:
        if len(self.values) < 2:
            return 0.0
        mean = self.mean
        return float(math.sqrt(sum((v - mean) ** 2 for v in self.values) / (len(self.values) - 1)))

    @property
    def finite(self) -> bool:
        return bool(self.values) and all(isinstance(v, (int, float)) and math.isfinite(v) for v in self.values)

    def as_json(self) -> dict[str, Any]:
        return {"values": [_json_float(v) for v in self.values], "mean": _json_float(self.mean),
                "std": _json_float(self.std)}


def _json_float(value: float) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def pooled_std(first: Figure, second: Figure) -> float:
    return math.sqrt((first.std**2 + second.std**2) / 2.0)


def beats(better: Figure, worse: Figure, higher_is_better: bool = True) -> bool:
    """``better`` beats ``worse``: its mean is better by more than MARGIN_STDS pooled stds."""
    difference = better.mean - worse.mean if higher_is_better else worse.mean - better.mean
    return difference > MARGIN_STDS * pooled_std(better, worse)


def at_most(first: Figure, second: Figure) -> bool:
    """first <= second, unless first exceeds second by more than MARGIN_STDS pooled stds."""
    return first.mean - second.mean <= MARGIN_STDS * pooled_std(first, second)


class _Missing(Exception):
    """A figure a claim needs is absent (or not finite) in some seed's record."""


class Records:
    """The per-seed evaluation records, read by dotted paths (``models.psc_full.palette_accuracy``)."""

    def __init__(self, records: Sequence[Mapping[str, Any]], seeds: Sequence[int]):
        if not records or len(records) != len(seeds):
            raise ValueError(f"need one evaluation record per seed, got {len(records)} for seeds {list(seeds)}")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct, got {list(seeds)}")
        self.records, self.seeds = list(records), [int(s) for s in seeds]

    def figure(self, path: str, transform: Callable[[Any], float] | None = None) -> Figure:
        values = []
        for seed, record in zip(self.seeds, self.records):
            value: Any = record
            for part in path.split("."):
                if not isinstance(value, Mapping) or part not in value:
                    raise _Missing(f"{path} is missing in the evaluation of seed {seed}")
                value = value[part]
            value = transform(value) if transform else value
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise _Missing(f"{path} is not a finite number in the evaluation of seed {seed} ({value!r})")
            values.append(float(value))
        return Figure(tuple(values))

    def has(self, path: str) -> bool:
        try:
            self.figure(path)
        except _Missing:
            return False
        return True


@dataclass(frozen=True)
class Decision:
    """What a claim's rule decided: ``holds`` (None: not testable), the reason, and any further keys of
    the verdict (claim e: the ranking)."""

    holds: bool | None
    reason: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


class _NotTestable(Exception):
    """A claim's precondition fails: the verdict is ``holds: null`` with this reason."""

    def __init__(self, reason: str, extra: Mapping[str, Any] | None = None):
        super().__init__(reason)
        self.reason, self.extra = reason, dict(extra or {})


@dataclass(frozen=True)
class Claim:
    """A claim of the papers and its rule, fixed before looking. ``decide`` reads the figures it needs into
    the mapping it is given (they are reported even when it stops early) and returns its Decision; a
    missing figure (``_Missing``) or a failed precondition (``_NotTestable``) makes the claim not testable."""

    statement: str
    rule: str
    decide: Callable[[Records, dict[str, Figure]], Decision]

    def verdict(self, records: Records) -> dict[str, Any]:
        figures: dict[str, Figure] = {}
        try:
            decision = self.decide(records, figures)
        except _Missing as missing:
            decision = Decision(None, f"Not testable: {missing}.")
        except _NotTestable as untestable:
            decision = Decision(None, f"Not testable: {untestable.reason}", untestable.extra)
        reason = decision.reason
        single = len(records.seeds) == 1
        if single and decision.holds is not None:
            reason = (reason + " " if reason else "") + "Single seed: no seed spread is known, so the margins are 0."
        return {"holds": decision.holds, "statement": self.statement, "rule": self.rule, "reason": reason,
                "figures": {name: figure.as_json() for name, figure in figures.items()},
                "seeds": records.seeds, "single_seed": single, **decision.extra}


def _read(records: Records, figures: dict[str, Figure], wanted: Mapping[str, str]) -> None:
    """Read each ``name: dotted path`` of ``wanted`` into ``figures``, in order (raises ``_Missing``)."""
    for name, path in wanted.items():
        figures[name] = records.figure(path)


def _mean(figure: Figure) -> str:
    return f"{figure.mean:.4g}" + (f" +- {figure.std:.2g}" if len(figure.values) > 1 else "")


def _failures(failed: Sequence[str]) -> str:
    return "; ".join(failed) + ("." if failed else "")


# ------------------------------------------------------------------------------------------------ the claims


def _decide_a(records: Records, figures: dict[str, Figure]) -> Decision:
    for variant in PSC_VARIANTS:
        _read(records, figures, {f"palette_accuracy_samples_{variant}": f"models.psc_{variant}.palette_accuracy",
                                 f"palette_accuracy_fast_{variant}": f"models.psc_{variant}.fast_palette_accuracy"})
    _read(records, figures, {"constant_color_samples": "baselines.constant_color.palette_accuracy_sampled_images",
                             "constant_color_fast": "baselines.constant_color.palette_accuracy"})
    low = [path for path in ("samples", "fast")
           if not figures[f"palette_accuracy_{path}_plain"].mean > figures[f"constant_color_{path}"].mean]
    if low:
        raise _NotTestable(f"psc_plain is not above the constant_color baseline for {', '.join(low)} "
                           f"(plain {', '.join(_mean(figures[f'palette_accuracy_{p}_plain']) for p in low)} vs "
                           f"{', '.join(_mean(figures[f'constant_color_{p}']) for p in low)}).")
    failed = [f"{variant} ({path})" for path in ("samples", "fast") for variant in ("embed", "full")
              if not beats(figures[f"palette_accuracy_{path}_{variant}"], figures[f"palette_accuracy_{path}_plain"])]
    return Decision(not failed, "" if not failed else f"Does not beat plain: {', '.join(failed)}.")


CLAIM_A = Claim(
    statement="Semantics help colorization (Pixelated Semantic Colorization): psc_embed and psc_full beat "
              "psc_plain on palette accuracy, both for the samples and for the fast (non-autoregressive) path.",
    rule="Precondition: psc_plain's mean palette accuracy is above the constant_color baseline's (samples: on "
         "the sampled images; fast path: on all images). Holds when, for both paths, embed and full each beat "
         "plain (mean difference > 2 pooled seed stds).",
    decide=_decide_a)


def _decide_b(records: Records, figures: dict[str, Figure]) -> Decision:
    for name in ("psc_embed", "psc_seg_only", "psc_full"):
        _read(records, figures, {f"miou_{name}": f"models.{name}.seg_miou",
                                 f"cross_entropy_{name}": f"models.{name}.seg_seg_loss"})
    _read(records, figures, {"miou_majority_class": "baselines.majority_class.seg_miou",
                             "cross_entropy_class_prior": "baselines.majority_class.seg_seg_loss"})
    floor = 2.0 * figures["miou_majority_class"].mean
    low = [name for name in ("psc_embed", "psc_seg_only") if figures[f"miou_{name}"].mean < floor]
    if low:
        raise _NotTestable(f"{', '.join(low)} below 2x the majority-class mIoU ({floor:.4g}): "
                           + ", ".join(f"{n} {_mean(figures[f'miou_{n}'])}" for n in low) + ".")
    lower_loss = beats(figures["cross_entropy_psc_embed"], figures["cross_entropy_psc_seg_only"], higher_is_better=False)
    higher_miou = beats(figures["miou_psc_embed"], figures["miou_psc_seg_only"])
    failed = [what for what, ok in (("cross-entropy", lower_loss), ("mIoU", higher_miou)) if not ok]
    return Decision(not failed, "" if not failed else f"embed does not beat seg_only on {' and '.join(failed)}.")


CLAIM_B = Claim(
    statement="Joint training helps segmentation (Pixelated Semantic Colorization, Fig. 9): the segmentation "
              "head trained jointly with colorization (psc_embed) beats the same head trained alone "
              "(psc_seg_only) on validation cross-entropy and mIoU.",
    rule="Precondition: both heads reach a mean mIoU of at least 2x the majority_class baseline's. Holds when "
         "embed beats seg_only on cross-entropy (lower) and on mIoU (higher), each by > 2 pooled seed stds.",
    decide=_decide_b)


def _decide_c(records: Records, figures: dict[str, Figure]) -> Decision:
    for variant in SDC_VARIANTS:
        curve = f"details.jitter_sweep.sdc_{variant}.psnr"
        figures[f"psnr_level0_{variant}"] = records.figure(curve, lambda c: c[0])
        figures[f"psnr_strongest_{variant}"] = records.figure(curve, lambda c: c[-1])
        figures[f"drop_{variant}"] = records.figure(curve, lambda c: c[0] - c[-1])
    _read(records, figures, {"psnr_constant_color": "baselines.constant_color.psnr"})
    low = [v for v in SDC_VARIANTS if not figures[f"psnr_level0_{v}"].mean > figures["psnr_constant_color"].mean]
    if low:
        raise _NotTestable(f"sdc_{', sdc_'.join(low)} not above the constant_color PSNR "
                           f"({figures['psnr_constant_color'].mean:.4g} dB) without jitter.")
    holds = beats(figures["drop_paper"], figures["drop_no_in"], higher_is_better=False)
    return Decision(holds, "" if holds else f"drop with IN {_mean(figures['drop_paper'])} dB vs without "
                                            f"{_mean(figures['drop_no_in'])} dB: not smaller by the margin.")


CLAIM_C = Claim(
    statement="Instance Normalization helps (Semantic-driven Colorization): under a test-time sweep of contrast, "
              "brightness and gamma changes of increasing strength on the same validation gray images, with the "
              "true maps, the PSNR of sdc_paper (IN) falls less than that of sdc_no_in at the strongest level.",
    rule="Drop = PSNR at strength 0 minus PSNR at the strongest level (the original lightness joins the "
         "predicted ab). Precondition: both models' mean PSNR at strength 0 is above the constant_color "
         "baseline's. Holds when sdc_paper's drop beats sdc_no_in's (smaller by > 2 pooled seed stds).",
    decide=_decide_c)


def _decide_d(records: Records, figures: dict[str, Figure]) -> Decision:
    for variant in PSC_VARIANTS:
        _read(records, figures, {f"mode_tv_{variant}": f"models.psc_{variant}.mode_tv",
                                 f"ms_ssim_between_samples_{variant}": f"models.psc_{variant}.ms_ssim_between_samples"})
    _read(records, figures, {"mode_tv_single_mode": "baselines.single_mode.mode_tv"})
    closer = beats(figures["mode_tv_full"], figures["mode_tv_single_mode"], higher_is_better=False)
    similarity = figures["ms_ssim_between_samples_full"].mean
    in_range = 0.7 <= similarity <= 0.97
    failed = ([] if closer else [f"total variation {_mean(figures['mode_tv_full'])} does not beat the single-mode "
                                 f"sampler's {figures['mode_tv_single_mode'].mean:.4g}"]) + \
             ([] if in_range else [f"MS-SSIM between samples {similarity:.4g} is outside [0.7, 0.97]"])
    return Decision(not failed, _failures(failed))


CLAIM_D = Claim(
    statement="Diverse samples (Pixelated Semantic Colorization, Fig. 10): on the multimodal classes, the frequency "
              "of each mode over k samples of psc_full is closer to the world's true probabilities (total-variation "
              "distance) than a sampler that always paints the likeliest mode, and the MS-SSIM between two samples "
              "of one input is in [0.7, 0.97].",
    rule="Each region of a multimodal class, in each sample, counts for the mode nearest its median colour (or "
         "'another class'). Holds when psc_full's total-variation distance beats the single_mode baseline's "
         "(lower by > 2 pooled seed stds) and its mean MS-SSIM between samples lies in [0.7, 0.97].",
    decide=_decide_d)

TABLE3 = "models.table3_color_segmenter"  # the colour-trained segmenter's mIoU on gray, real and each colorizer
TABLE3_REFERENCES = ("gray", "real", "gray_on_sampled_images", "real_on_sampled_images")


def _decide_e(records: Records, figures: dict[str, Figure]) -> Decision:
    _read(records, figures, {f"miou_{name}": f"{TABLE3}.miou_{name}" for name in TABLE3_REFERENCES})
    _read(records, figures, {"miou_majority_class": "baselines.majority_class.seg_miou"})
    keys = records.records[0]["models"]["table3_color_segmenter"]  # present: the _read above found it
    colorizers = sorted(key.removeprefix("miou_") for key in keys
                        if key.startswith("miou_") and key.removeprefix("miou_") not in TABLE3_REFERENCES)
    _read(records, figures, {f"miou_{name}": f"{TABLE3}.miou_{name}" for name in colorizers})
    ranking = sorted(colorizers, key=lambda n: -figures[f"miou_{n}"].mean)
    rule_colorizers = [n for n in colorizers if not n.endswith("_fast")]
    ranked = "Ranking (mean mIoU): " + ", ".join(f"{n} {figures[f'miou_{n}'].mean:.4g}" for n in ranking) + "."
    if not beats(figures["miou_gray"], figures["miou_majority_class"]):
        raise _NotTestable(f"the colour-trained segmenter scores {_mean(figures['miou_gray'])} mIoU on gray, "
                           f"not above the majority-class baseline ({figures['miou_majority_class'].mean:.4g}). "
                           + ranked, {"ranking": ranking})
    failed = []
    for name in rule_colorizers:
        sampled = name.startswith("psc_")  # the PixelCNN's samples are scored on the sampled images only
        gray = figures["miou_gray_on_sampled_images" if sampled else "miou_gray"]
        real = figures["miou_real_on_sampled_images" if sampled else "miou_real"]
        colorized = figures[f"miou_{name}"]
        if not at_most(gray, colorized):
            failed.append(f"{name} below gray ({_mean(colorized)} vs {_mean(gray)})")
        if not at_most(colorized, real):
            failed.append(f"{name} above real ({_mean(colorized)} vs {_mean(real)})")
    if "psc_full" not in colorizers or "psc_plain" not in colorizers:
        raise _NotTestable("psc_full or psc_plain missing.")
    if not at_most(figures["miou_psc_plain"], figures["miou_psc_full"]):
        failed.append("psc_full below psc_plain")
    reason = ("; ".join(failed) + ". " if failed else "") + ranked
    return Decision(not failed, reason, {"ranking": ranking})


CLAIM_E = Claim(
    statement="The Table 3 protocol (Pixelated Semantic Colorization): a segmenter trained on colour images scores "
              "gray <= colorized <= real for each colorizer, and psc_full >= psc_plain; the ranking is reported.",
    rule="Precondition: the colour-trained segmenter's mIoU on gray beats the majority_class baseline. Each "
         "colorizer's headline output (PixelCNN samples on the sampled images, compared with gray and real on "
         "the same images; the others on all images) must satisfy gray <= colorized <= real, and psc_plain <= "
         "psc_full, where a <= b fails only if a exceeds b by > 2 pooled seed stds.",
    decide=_decide_e)


def _decide_f(records: Records, figures: dict[str, Figure]) -> Decision:
    if not records.has("models.sdc_paper.steer_after") and not records.has("models.sdc_no_in.steer_after"):
        raise _NotTestable("no twin-repainting figures (a world without gray-alike twins, or no sdc model).")
    for variant in SDC_VARIANTS:
        _read(records, figures, {f"share_before_{variant}": f"models.sdc_{variant}.steer_before",
                                 f"share_after_{variant}": f"models.sdc_{variant}.steer_after"})
    failed = []
    for variant in SDC_VARIANTS:
        after, before = figures[f"share_after_{variant}"].mean, figures[f"share_before_{variant}"].mean
        if after < 0.5:
            failed.append(f"sdc_{variant}: {after:.3g} of repainted pixels on the new class's modes (< 0.5)")
        if before > 0.1:
            failed.append(f"sdc_{variant}: {before:.3g} already on them with the true map (> 0.1)")
    return Decision(not failed, _failures(failed))


CLAIM_F = Claim(
    statement="The map steers (Semantic-driven Colorization): on validation images whose true map has every region "
              "of a gray-alike class repainted as its twin, at least 50 % of the repainted pixels land on the new "
              "class's modes (at most 10 % did before), for sdc_paper and for sdc_no_in.",
    rule="A pixel lands on a class's modes when the mode nearest its predicted ab (among all classes' modes) "
         "belongs to that class. Holds when, for both models, the mean share after repainting is >= 0.5 and the "
         "mean share with the true map is <= 0.1. Precondition: the world has gray-alike twins.",
    decide=_decide_f)

CLAIMS: dict[str, Claim] = {"a": CLAIM_A, "b": CLAIM_B, "c": CLAIM_C, "d": CLAIM_D, "e": CLAIM_E, "f": CLAIM_F}


def evaluate_claims(records: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> dict[str, dict[str, Any]]:
    """Every claim's verdict over the per-seed evaluation ``records`` (one per seed in ``seeds``)."""
    wrapped = Records(records, seeds)
    return {letter: claim.verdict(wrapped) for letter, claim in CLAIMS.items()}


VERDICT_WORDS = {True: "holds", False: "fails", None: "untestable"}  # `dvc metrics show` drops nulls
# headline key (short: `dvc metrics show` makes one column per key) -> the figure in the records
HEADLINE_FIGURES = {
    "palette.psc_full": "models.psc_full.palette_accuracy",
    "palette.psc_full_fast": "models.psc_full.fast_palette_accuracy",
    "palette.sdc_paper": "models.sdc_paper.palette_accuracy",
    "palette.sdc_true_map": "models.sdc_paper.gt_map_palette_accuracy",
    "palette.cls_gan": "models.cls_semantic_gan.palette_accuracy",
    "palette.constant": "baselines.constant_color.palette_accuracy",
    "psnr.psc_full": "models.psc_full.psnr",
    "psnr.psc_full_fast": "models.psc_full.fast_psnr",
    "psnr.sdc_paper": "models.sdc_paper.psnr",
    "psnr.constant": "baselines.constant_color.psnr",
    "miou.gridnet": "models.gridnet_gray.seg_miou",
    "miou.psc_full": "models.psc_full.seg_miou",
    "miou.majority": "baselines.majority_class.seg_miou",
    "colorfulness.psc_full": "models.psc_full.colorfulness",
    "colorfulness.real": "baselines.real.colorfulness",
    "ms_ssim.psc_full": "models.psc_full.ms_ssim_between_samples",
    "steer.sdc_paper": "models.sdc_paper.steer_after",
}


def headline(records: Sequence[Mapping[str, Any]], seeds: Sequence[int], verdicts: Mapping[str, Mapping[str, Any]]
             ) -> dict[str, Any]:
    """The small file `dvc metrics show` prints (about 25 values): each claim's verdict as a word
    (``VERDICT_WORDS``), the seed count and the seed means of ``HEADLINE_FIGURES`` (absent ones left out)."""
    wrapped = Records(records, seeds)
    out: dict[str, Any] = {"seeds": len(wrapped.seeds),
                           "claims": {letter: VERDICT_WORDS[verdict["holds"]] for letter, verdict in verdicts.items()}}
    for key, path in HEADLINE_FIGURES.items():
        try:
            mean = wrapped.figure(path).mean
        except _Missing:
            continue
        group, name = key.split(".")
        out.setdefault(group, {})[name] = round(mean, 4)
    return out
