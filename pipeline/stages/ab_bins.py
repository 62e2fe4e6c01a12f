"""DVC stage `ab_bins`: the empirical distribution of quantized ab over the training shards and the
class-rebalancing weights of the classification colorizers (Zhang et al. 2016), cached as JSON.

    python -m pipeline.stages.ab_bins --shards data/shards/synthetic/128
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.params import load_section, shard_dir
from semcolor.config import ConfigError


@dataclass(frozen=True)
class AbBinsConfig:
    """params.yaml `ab_bins`."""

    source: str = "synthetic"
    size: int = 128
    split: str = "train"
    max_samples: int | None = None  # null: every sample of the split
    sigma: float = 5.0  # Gaussian smoothing of the distribution over the bins, ab units
    lam: float = 0.5  # weight of the uniform distribution mixed into the rebalancing (lambda)
    out: str = "models/ab_bins.json"

    def __post_init__(self):
        if self.sigma <= 0 or not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"sigma must be > 0 and lam in [0, 1], got {self.sigma}, {self.lam}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--shards", default=None,
                        help="the shard folder to count (dvc.yaml passes it); default: "
                             "<data.shards_dir>/<ab_bins.source>/<ab_bins.size>")
    args = parser.parse_args(argv)
    try:
        config = load_section(AbBinsConfig, "ab_bins", args.params)
        shards = Path(args.shards) if args.shards else shard_dir(config.source, config.size, args.params)
    except ConfigError as error:
        print(f"params.yaml: {error}", file=sys.stderr)
        return 2
    from semcolor.quantized_ab import write_bin_statistics

    path = write_bin_statistics(shards, config.out, config.split, config.max_samples, sigma=config.sigma,
                                lam=config.lam)
    print(f"ab bin statistics of {shards} ({config.split}): {path}")
    return 0


if __name__ == "__main__":
    from pipeline.stage_main import stage_main  # one line per user error, exit 2

    sys.exit(stage_main(main, "ab_bins"))
