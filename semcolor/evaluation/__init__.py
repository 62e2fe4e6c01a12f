"""Measuring colorizers and segmenters: the metrics, the measures over a validation split, the trivial
baselines, the evaluation suite, the pre-registered claims and the sample grids."""
