"""DVC stage `claims`: the papers' claims over every training seed's evaluation.

    python -m pipeline.stages.claims

Reads metrics/evaluate.json (the default stages, seed ``train_psc.train.seed``) and, for each of
``claims.extra_seeds``, metrics/seeds/<seed>/evaluate.json (stages train_*_seed@<seed>-* and
evaluate_seed@<seed>, run by `make claims`); calls ``semcolor.evaluation.claims.evaluate_claims``; writes
metrics/claims.json (one entry per claim a-f) and metrics/headline.json (the small file `dvc metrics show`
prints).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.params import load_section, read_params, section
from semcolor.atomic import write_json_atomic
from semcolor.evaluation.claims import evaluate_claims, headline
from semcolor.config import ConfigError

DEFAULT_EVALUATION = Path("metrics/evaluate.json")
SEED_EVALUATIONS = Path("metrics/seeds")
CLAIMS = Path("metrics/claims.json")
HEADLINE = Path("metrics/headline.json")


@dataclass(frozen=True)
class ClaimsConfig:
    """params.yaml `claims`: the training seeds trained and evaluated besides the default stages' (whose
    seed is train_*.train.seed). Empty: single-seed verdicts (`make demo`); `make claims` sets [1, 2]."""

    extra_seeds: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if any(seed < 0 for seed in self.extra_seeds) or len(set(self.extra_seeds)) != len(self.extra_seeds):
            raise ValueError(f"extra_seeds must be distinct non-negative integers, got {list(self.extra_seeds)}")


def collect(config: ClaimsConfig, default_seed: int) -> tuple[list[dict], list[int]]:
    """The evaluation records, default seed first; FileNotFoundError naming the missing file and stage."""
    if default_seed in config.extra_seeds:
        raise ConfigError(f"claims.extra_seeds lists {default_seed}, the default stages' train seed: "
                          "an extra seed must differ from it")
    paths = [(default_seed, DEFAULT_EVALUATION, "evaluate")] + [
        (seed, SEED_EVALUATIONS / str(seed) / "evaluate.json", f"evaluate_seed@{seed}") for seed in config.extra_seeds]
    records = []
    for seed, path, stage in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (seed {seed}): run `dvc repro {stage}`")
        records.append(json.loads(path.read_text()))
    return records, [seed for seed, _, _ in paths]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    try:
        config = load_section(ClaimsConfig, "claims", args.params)
        default_seed = int(section(read_params(args.params), "train_psc.train.seed"))
        records, seeds = collect(config, default_seed)
    except ConfigError as error:
        print(f"params.yaml: {error}", file=sys.stderr)
        return 2
    verdicts = evaluate_claims(records, seeds)
    write_json_atomic(CLAIMS, verdicts)
    write_json_atomic(HEADLINE, headline(records, seeds, verdicts))
    for letter, verdict in verdicts.items():
        outcome = {True: "holds", False: "does NOT hold", None: "not testable"}[verdict["holds"]]
        print(f"claim ({letter}) {outcome} over seeds {seeds}: {verdict['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
