"""Every colorization metric, shared by training and evaluation (numpy; no I/O, no downloaded weights).

Conventions (state them, most colorization bugs live in a range):
- RGB images: uint8 in [0, 255] or float in [0, 1], channel-last (H, W, 3) or batched (N, H, W, 3).
  Float and uint8 inputs are brought to float [0, 1] before comparison; PSNR/SSIM use data range 1.
- Standards: SSIM (Wang et al. 2004, scikit-image's ``structural_similarity`` with the paper's Gaussian
  window) and CIEDE2000 (scikit-image's ``deltaE_ciede2000``) are the published definitions, so figures
  compare with the literature; MS-SSIM (Wang et al. 2003 weights, no scikit-image implementation) and
  the ab AUC (Zhang et al. 2016) are written here and checked against known answers.
- Lab: L in [0, 100], a/b in about [-128, 127], channel-last.
- ab arrays: (..., 2) in Lab units.
- Label maps: integer class indices, 255 = ignore.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.color import deltaE_ciede2000
from skimage.metrics import structural_similarity

from semcolor.sources.base import IGNORE_INDEX  # the one ignore value (also read as metrics.IGNORE_INDEX)



def _to_float01(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image.astype(np.float64) / 255.0
    return image.astype(np.float64)


def psnr(prediction: np.ndarray, target: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB between two RGB images (data range 1 after scaling to [0, 1]).

    Identical images give +inf."""
    mse = float(np.mean((_to_float01(prediction) - _to_float01(target)) ** 2))
    return float("inf") if mse == 0.0 else float(10.0 * np.log10(1.0 / mse))


def _gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    # truncate=3.5 gives the 11-tap window of the SSIM paper (radius 5) at sigma 1.5
    return ndimage.gaussian_filter(image, sigma=sigma, truncate=3.5, mode="reflect")


def _ssim_maps(x: np.ndarray, y: np.ndarray, sigma: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """SSIM and contrast-structure maps of two single-channel float images in [0, 1] (Wang et al. 2004),
    over the whole image (reflect padding): MS-SSIM's per-scale terms, for which scikit-image has no API."""
    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = _gaussian(x, sigma), _gaussian(y, sigma)
    var_x = _gaussian(x * x, sigma) - mu_x**2
    var_y = _gaussian(y * y, sigma) - mu_y**2
    cov = _gaussian(x * y, sigma) - mu_x * mu_y
    contrast_structure = (2 * cov + c2) / (var_x + var_y + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return luminance * contrast_structure, contrast_structure


def ssim(prediction: np.ndarray, target: np.ndarray) -> float:
    """Mean structural similarity of two RGB images (H, W, 3), averaged over channels; in [-1, 1].

    The standard SSIM of Wang et al. (2004) as published tables compute it: scikit-image's
    ``structural_similarity`` with an 11-tap Gaussian window (sigma 1.5), K1 0.01, K2 0.03, population
    (not sample) covariance and data range 1 on images brought to float [0, 1]; its mean skips the 5-pixel
    border the window does not cover. Images need at least 11 pixels per side."""
    x, y = _to_float01(prediction), _to_float01(target)
    return float(
        structural_similarity(
            x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1
        )
    )


MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003


def ms_ssim(image_a: np.ndarray, image_b: np.ndarray, weights: Sequence[float] = MS_SSIM_WEIGHTS) -> float:
    """Multi-scale SSIM of two RGB images (H, W, 3) in [0, 1] or uint8; 1 for identical images.

    Used as the diversity measure between two samples of the same input (lower = more diverse). Each
    scale halves the image by 2x2 averaging; negative contrast-structure terms are clipped to 0 so the
    weighted product stays defined."""
    x, y = _to_float01(image_a), _to_float01(image_b)
    values = []
    for channel in range(x.shape[-1]):
        xc, yc = x[..., channel], y[..., channel]
        factors = []
        for level, weight in enumerate(weights):
            ssim_map, cs_map = _ssim_maps(xc, yc)
            last = level == len(weights) - 1
            term = max(float((ssim_map if last else cs_map).mean()), 0.0)
            factors.append(term**weight)
            if not last:
                if min(xc.shape) < 2:
                    raise ValueError(f"image too small for {len(weights)} MS-SSIM scales: {x.shape}")
                xc, yc = _downsample2(xc), _downsample2(yc)
        values.append(float(np.prod(factors)))
    return float(np.mean(values))


def _downsample2(image: np.ndarray) -> np.ndarray:
    h, w = (image.shape[0] // 2) * 2, (image.shape[1] // 2) * 2
    image = image[:h, :w]
    return 0.25 * (image[0::2, 0::2] + image[1::2, 0::2] + image[0::2, 1::2] + image[1::2, 1::2])


def colorfulness(rgb: np.ndarray) -> float:
    """Hasler and Susstrunk colorfulness of an RGB image, in the 8-bit scale (0 for gray, ~100+ vivid).

    rg = R - G, yb = 0.5 (R + G) - B on [0, 255] values; CF = sqrt(std_rg^2 + std_yb^2) +
    0.3 sqrt(mean_rg^2 + mean_yb^2). We use the signed rg/yb of the paper (not |rg|, |yb|)."""
    image = _to_float01(rgb) * 255.0
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2))


def delta_colorfulness(predictions: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> float:
    """|mean CF(predictions) - mean CF(targets)| over two sets of RGB images (lower is better)."""
    return abs(float(np.mean([colorfulness(p) for p in predictions])) - float(np.mean([colorfulness(t) for t in targets])))


def ciede2000(lab_a: np.ndarray, lab_b: np.ndarray) -> np.ndarray:
    """CIEDE2000 color difference (kL = kC = kH = 1) between Lab arrays (..., 3); returns shape (...).

    scikit-image's ``deltaE_ciede2000`` (the Sharma, Wu and Dalal 2005 formulation), in float64."""
    lab_a, lab_b = np.asarray(lab_a, np.float64), np.asarray(lab_b, np.float64)
    return deltaE_ciede2000(lab_a, lab_b, kL=1, kC=1, kH=1, channel_axis=-1)


AUC_THRESHOLDS = np.arange(0, 151, dtype=np.float64)  # ab L2 error thresholds 0..150 (Zhang et al. 2016)


def ab_bin_index(ab: np.ndarray, bin_size: float = 10.0) -> np.ndarray:
    """Index of the bin of a grid of side ``bin_size`` over ab in [-110, 120) (23 x 23 cells), shape (...)."""
    cells = np.clip(np.floor((np.asarray(ab) + 110.0) / bin_size), 0, 22).astype(np.int64)
    return cells[..., 0] * 23 + cells[..., 1]


def rebalancing_weights(target_ab: np.ndarray, bin_size: float = 10.0) -> np.ndarray:
    """Per-pixel weights inversely proportional to the frequency of the pixel's ab bin in ``target_ab``
    (..., 2), normalized so that the weights average to 1 over the pixels."""
    bins = ab_bin_index(target_ab, bin_size).ravel()
    counts = np.bincount(bins, minlength=23 * 23).astype(np.float64)
    weights = 1.0 / counts[bins]
    weights *= weights.size / weights.sum()
    return weights.reshape(np.asarray(target_ab).shape[:-1])


def ab_error_auc(
    predicted_ab: np.ndarray, target_ab: np.ndarray, weights: np.ndarray | None = None,
    thresholds: np.ndarray = AUC_THRESHOLDS,
) -> float:
    """Area under the cumulative curve of per-pixel ab L2 error, normalized to [0, 1] (1 = perfect).

    For each threshold t in ``thresholds`` (default 0..150), the (weighted) share of pixels with
    ||ab_pred - ab_true|| <= t; the curve's mean over thresholds is the AuC. ``weights`` (same shape as
    the pixels) gives the class-rebalanced variant (see ``rebalancing_weights``)."""
    error = np.linalg.norm(np.asarray(predicted_ab, np.float64) - np.asarray(target_ab, np.float64), axis=-1).ravel()
    w = np.ones_like(error) if weights is None else np.asarray(weights, np.float64).ravel()
    if w.shape != error.shape:
        raise ValueError(f"weights have {w.size} entries for {error.size} pixels")
    thresholds = np.asarray(thresholds, np.float64)
    if thresholds.size and np.all(thresholds == np.round(thresholds)) and thresholds.min() >= 0:
        # integer thresholds: error <= t  <=>  ceil(error) <= t, so a cumulative histogram of ceil(error)
        # gives the same shares as the sort below in O(n)
        top = int(thresholds.max())
        bins = np.minimum(np.ceil(error), top + 1).astype(np.int64)
        cumulative = np.cumsum(np.bincount(bins, weights=w, minlength=top + 2)) / w.sum()
        return float(cumulative[thresholds.astype(np.int64)].mean())
    order = np.argsort(error)
    cumulative = np.cumsum(w[order]) / w.sum()
    positions = np.searchsorted(error[order], thresholds, side="right")
    shares = np.where(positions > 0, cumulative[np.maximum(positions - 1, 0)], 0.0)
    return float(shares.mean())


def confusion_matrix(prediction: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(num_classes, num_classes) counts, rows = target class, columns = predicted; ignored pixels dropped."""
    target = np.asarray(target).ravel().astype(np.int64)
    prediction = np.asarray(prediction).ravel().astype(np.int64)
    keep = target != ignore_index
    target, prediction = target[keep], prediction[keep]
    if target.size and (target.max() >= num_classes or target.min() < 0):
        raise ValueError(f"target class {target.max()} outside [0, {num_classes})")
    prediction = np.clip(prediction, 0, num_classes - 1)
    return np.bincount(target * num_classes + prediction, minlength=num_classes**2).reshape(num_classes, num_classes)


def mean_iou(confusion: np.ndarray) -> float:
    """Mean intersection over union over the classes present in target or prediction, in [0, 1]."""
    confusion = np.asarray(confusion, np.float64)
    intersection = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    present = union > 0
    return float((intersection[present] / union[present]).mean()) if present.any() else float("nan")


@dataclass(frozen=True)
class Palette:
    """The chroma modes of every class of a world: the answer key of palette accuracy.

    modes: (M, 2) float (a, b) in Lab units; mode_class: (M,) the class id of each mode; mode_probability:
    (M,) each mode's probability within its class (sums to 1 per class); num_classes: size of the label set
    (classes without modes are never scored). A class is achromatic when all its modes are (0, 0) exactly;
    its modes still compete in the nearest-mode assignment, its pixels are not scored."""

    modes: np.ndarray
    mode_class: np.ndarray
    mode_probability: np.ndarray
    num_classes: int

    @classmethod
    def from_class_modes(
        cls, class_modes: Mapping[int, np.ndarray], probabilities: Mapping[int, Sequence[float]] | None = None,
        num_classes: int | None = None,
    ) -> "Palette":
        """From class id -> (M_c, 2) modes (and optionally class id -> M_c probabilities; default uniform)."""
        ids = sorted(int(k) for k in class_modes)
        modes = [np.asarray(class_modes[k], np.float64).reshape(-1, 2) for k in ids]
        owners = np.concatenate([[k] * len(m) for k, m in zip(ids, modes)]).astype(np.int64)
        if probabilities is None:
            weights = np.concatenate([np.full(len(m), 1.0 / len(m)) for m in modes])
        else:
            weights = np.concatenate([np.asarray(probabilities[k], np.float64) for k in ids])
        if weights.shape != owners.shape:
            raise ValueError("probabilities must give one value per mode of every class")
        size = max(ids) + 1 if num_classes is None else num_classes
        if max(ids) >= size:
            raise ValueError(f"class {max(ids)} has modes but num_classes is {size}")
        return cls(np.concatenate(modes), owners, weights, size)

    def modes_of(self, class_id: int) -> np.ndarray:
        """Indices (into ``modes``) of the modes of ``class_id``."""
        return np.flatnonzero(self.mode_class == class_id)

    @property
    def chromatic_classes(self) -> list[int]:
        """Classes with at least one mode away from (0, 0): the pixels palette accuracy scores."""
        return sorted({int(c) for c, m in zip(self.mode_class, self.modes) if np.any(m != 0.0)})

    @property
    def multimodal_classes(self) -> list[int]:
        """Classes with two or more modes."""
        ids, counts = np.unique(self.mode_class, return_counts=True)
        return [int(c) for c, n in zip(ids, counts) if n >= 2]

    def nearest_mode(self, ab: np.ndarray) -> np.ndarray:
        """Index of the nearest mode (Euclidean in ab) of each color: ab (..., 2) -> (...) int64."""
        flat = np.asarray(ab, np.float32).reshape(-1, 2)
        best = np.full(flat.shape[0], np.inf, np.float32)
        index = np.zeros(flat.shape[0], np.int64)
        for m, (a, b) in enumerate(self.modes.astype(np.float32)):  # a loop over M: no (P, M) array
            distance = (flat[:, 0] - a) ** 2 + (flat[:, 1] - b) ** 2
            closer = distance < best
            best[closer], index[closer] = distance[closer], m
        return index.reshape(np.asarray(ab).shape[:-1])


def palette_confusion(predicted_ab: np.ndarray, labels: np.ndarray, palette: Palette) -> np.ndarray:
    """(C, C) counts, C = palette.num_classes: row = the pixel's class, column = the class owning the mode
    nearest to its predicted ab, among ALL classes' modes. Only labelled pixels of chromatic classes are
    counted (255 and achromatic or mode-less classes are not).

    predicted_ab: (..., 2) Lab units; labels: (...) class ids, 255 ignored."""
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    scored = np.isin(labels, palette.chromatic_classes)
    predicted = np.asarray(predicted_ab).reshape(-1, 2)[scored]
    owner = palette.mode_class[palette.nearest_mode(predicted)]
    size = palette.num_classes
    return np.bincount(labels[scored] * size + owner, minlength=size * size).reshape(size, size)


def palette_accuracy(confusion: np.ndarray) -> float:
    """Share of scored pixels whose nearest mode belongs to their own class (trace / total of a
    ``palette_confusion``), in [0, 1]; nan when nothing was scored.

    A constant color is nearest to one mode, so it scores at most the pixel share of one class; gray
    (a = b = 0) lands on an achromatic class's mode and scores 0 where the world has one."""
    confusion = np.asarray(confusion)
    total = confusion.sum()
    return float(np.trace(confusion) / total) if total else float("nan")


def per_class_palette_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Row-normalized diagonal of a ``palette_confusion``: (C,) accuracy per class, nan for unscored rows."""
    confusion = np.asarray(confusion, np.float64)
    rows = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, np.diag(confusion) / rows, np.nan)


def region_mode_counts(
    sample_abs: Sequence[np.ndarray], labels: np.ndarray, palette: Palette, min_pixels: int = 25,
) -> dict[int, np.ndarray]:
    """How often k samples of one image paint each region of a multimodal class with each of its modes.

    sample_abs: k predictions (H, W, 2) in Lab units of one image; labels (H, W), 255 ignored. A region is a
    4-connected component of one multimodal class with at least ``min_pixels`` labelled pixels (the label
    map's 255 band separates neighbouring regions). For each sample, the region's median ab is assigned to
    its nearest mode among all classes' modes. Returns class id -> counts (M_c + 1,): one per mode of the
    class, in palette order, and last the samples whose region landed on another class's mode."""
    labels = np.asarray(labels)
    counts: dict[int, np.ndarray] = {}
    for class_id in palette.multimodal_classes:
        own = palette.modes_of(class_id)
        pieces, count = ndimage.label(labels == class_id)
        for piece in range(1, count + 1):
            pixels = pieces == piece
            if pixels.sum() < min_pixels:
                continue
            tally = counts.setdefault(class_id, np.zeros(len(own) + 1, np.int64))
            for ab in sample_abs:
                nearest = int(palette.nearest_mode(np.median(np.asarray(ab)[pixels], axis=0)))
                position = np.flatnonzero(own == nearest)
                tally[int(position[0]) if position.size else len(own)] += 1
    return counts


def mode_total_variation(counts: Mapping[int, np.ndarray], palette: Palette) -> float:
    """Mean over classes of the total-variation distance between the observed mode frequencies (pooled
    ``region_mode_counts``, last entry "another class's mode") and the class's true mode probabilities:
    TV = 0.5 * (sum_m |f_m - p_m| + f_other), in [0, 1] (0: the world's frequencies exactly). nan without
    counts."""
    distances = []
    for class_id, tally in counts.items():
        total = tally.sum()
        if total == 0:
            continue
        frequency = tally / total
        truth = np.append(palette.mode_probability[palette.modes_of(class_id)], 0.0)
        distances.append(0.5 * float(np.abs(frequency - truth).sum()))
    return float(np.mean(distances)) if distances else float("nan")


def single_mode_total_variation(classes: Sequence[int], palette: Palette) -> float:
    """``mode_total_variation`` of a sampler that always paints a class's most likely mode: per class
    1 - max_m p_m, averaged over ``classes`` (the multimodal classes present)."""
    values = [1.0 - float(palette.mode_probability[palette.modes_of(c)].max()) for c in classes]
    return float(np.mean(values)) if values else float("nan")
