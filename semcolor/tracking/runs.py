"""The semcolor runs of an MLflow tracking store: a run as the comparison sees it, the filters, the query.

Runs are found in the MLflow tracking store by the tags every semcolor stage sets (``pipeline.tracking``):
``semcolor.stage`` (``train_psc@full``, ``evaluate/psc_full``, ...; a ``--stage`` filter also matches the
stages it groups: ``train``, ``train_psc``, ``evaluate``), ``semcolor.family`` (psc, sdc, ...),
``semcolor.variant`` (full, paper, ...), ``semcolor.dataset`` (the shard source) and
``semcolor.model_name``. Runs without a family tag (other tools' runs) are never listed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from semcolor.tracking.registry import REGISTERED_PREFIX, registered_name
from semcolor.tracking.tags import TAG_DATASET, TAG_FAMILY, TAG_MODEL_NAME, TAG_STAGE, TAG_VARIANT

STAGE_SEPARATORS = ("/", "_", "@")  # evaluate/<model>, train_<family>@<variant>


@dataclass(frozen=True)
class RunSummary:
    """One tracked run as the table sees it. start_time: ms since the epoch; metrics: last logged values."""

    run_id: str
    experiment: str
    stage: str
    family: str
    variant: str
    dataset: str
    model_name: str = ""
    start_time: int = 0
    params: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)

    @property
    def model(self) -> str:
        """``family-variant`` (or the family alone when the run has no variant), e.g. ``psc-full``."""
        return f"{self.family}-{self.variant}" if self.variant else self.family

    @property
    def registered_name(self) -> str:
        """The registry name of the run's model family and variant (``semcolor-psc-full``,
        ``semcolor-psc-seg-only`` for variant ``seg_only``)."""
        return registered_name(self.family, self.variant or None)


@dataclass(frozen=True)
class ModelSelector:
    """A ``--model`` filter: a family (``psc``: every variant) or a family and variant (``psc-full``)."""

    family: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelSelector:
        """``psc`` / ``psc-full`` / ``semcolor-psc-full`` (a registered name). Family names hold no ``-``,
        so the first ``-`` separates family from variant (variants may contain ``-``)."""
        text = text.strip()
        if text.startswith(REGISTERED_PREFIX):
            text = text[len(REGISTERED_PREFIX):]
        family, _, variant = text.partition("-")
        if not family:
            raise ValueError(f"model {text!r}: expected FAMILY or FAMILY-VARIANT, e.g. psc or psc-full")
        return cls(family, variant or None)

    def matches(self, run: RunSummary) -> bool:
        """Same family, and same variant when one is given; ``seg-only`` and ``seg_only`` are one variant
        (registered names spell variants with ``-``, params.yaml with ``_``)."""
        return run.family == self.family and (
            self.variant is None or run.variant.replace("-", "_") == self.variant.replace("-", "_"))


def filter_value(value: str) -> str:
    """A string constant for an MLflow filter (single quotes unless the value holds one)."""
    return f'"{value}"' if "'" in value else f"'{value}'"


def run_filter(*, datasets: Sequence[str] = (), models: Sequence[ModelSelector] = (),
               stages: Sequence[str] = (), finished_only: bool = True) -> str:
    """The MLflow ``filter_string`` for the filters MLflow can apply itself (it has no OR: a filter with
    several values is applied after the query, see ``select_runs``)."""
    clauses = []
    if finished_only:
        clauses.append("attributes.status = 'FINISHED'")
    if len(datasets) == 1:
        clauses.append(f"tags.`{TAG_DATASET}` = {filter_value(datasets[0])}")
    if len(stages) == 1:  # a superset (LIKE's "_" is a wildcard); stage_matches decides
        clauses.append(f"tags.`{TAG_STAGE}` LIKE {filter_value(stages[0] + '%')}")
    if len(models) == 1:  # the variant is matched afterwards (select_runs): its spelling may differ
        clauses.append(f"tags.`{TAG_FAMILY}` = {filter_value(models[0].family)}")
    return " and ".join(clauses)


def stage_matches(stage: str, wanted: str) -> bool:
    """Whether a run's stage tag is ``wanted`` or one of the stages it groups: ``evaluate`` matches
    ``evaluate`` and ``evaluate/psc_full``; ``train`` every ``train_<family>@<variant>``; ``train_psc``
    every ``train_psc@<variant>``."""
    return stage == wanted or any(stage.startswith(wanted + separator) for separator in STAGE_SEPARATORS)


def select_runs(runs: Iterable[RunSummary], *, datasets: Sequence[str] = (),
                models: Sequence[ModelSelector] = (), stages: Sequence[str] = (),
                latest: bool = False) -> list[RunSummary]:
    """The runs that pass every filter (an empty filter passes all), newest first. ``latest``: only the
    newest run per (stage, family, variant, dataset)."""
    chosen = [
        run for run in runs
        if run.family
        and (not datasets or run.dataset in datasets)
        and (not stages or any(stage_matches(run.stage, wanted) for wanted in stages))
        and (not models or any(selector.matches(run) for selector in models))
    ]
    chosen.sort(key=lambda run: (-run.start_time, run.run_id))
    if latest:
        seen: set[tuple[str, str, str, str]] = set()
        newest = []
        for run in chosen:
            key = (run.stage, run.family, run.variant, run.dataset)
            if key not in seen:
                seen.add(key)
                newest.append(run)
        chosen = newest
    return chosen


def search_runs(client: Any, *, experiments: Sequence[str] = (), datasets: Sequence[str] = (),
                models: Sequence[ModelSelector] = (), stages: Sequence[str] = (), latest: bool = False,
                finished_only: bool = True) -> list[RunSummary]:
    """Query the tracking store of ``client`` (an ``mlflow.MlflowClient``) for semcolor runs.

    experiments: experiment names (default: every active experiment); an unknown name is a LookupError
    listing the known ones. Other filters as ``select_runs``. Returns newest first."""
    from mlflow.entities import ViewType

    known = {e.name: e for e in all_pages(client.search_experiments, view_type=ViewType.ACTIVE_ONLY)}
    if experiments:
        missing = [name for name in experiments if name not in known]
        if missing:
            raise LookupError(f"no experiment named {', '.join(map(repr, missing))} in the tracking store "
                              f"{client.tracking_uri}; it has {sorted(known)}")
        chosen = [known[name] for name in experiments]
    else:
        chosen = list(known.values())
    if not chosen:
        return []
    names = {e.experiment_id: e.name for e in chosen}
    query = run_filter(datasets=datasets, models=models, stages=stages, finished_only=finished_only)
    found = all_pages(client.search_runs, experiment_ids=list(names), filter_string=query,
                       run_view_type=ViewType.ACTIVE_ONLY)
    return select_runs((_summary(run, names[run.info.experiment_id]) for run in found), datasets=datasets,
                       models=models, stages=stages, latest=latest)


def all_pages(search: Any, **kwargs: Any) -> list[Any]:
    """Every result of a paged MLflow search (``page_token`` until there is none)."""
    results: list[Any] = []
    token = None
    while True:
        page = search(max_results=1000, page_token=token, **kwargs)
        results.extend(page)
        token = page.token
        if not token:
            return results


def _summary(run: Any, experiment: str) -> RunSummary:
    tags = run.data.tags
    return RunSummary(
        run_id=run.info.run_id, experiment=experiment, stage=tags.get(TAG_STAGE, ""),
        family=tags.get(TAG_FAMILY, ""), variant=tags.get(TAG_VARIANT, ""), dataset=tags.get(TAG_DATASET, ""),
        model_name=tags.get(TAG_MODEL_NAME, ""), start_time=int(run.info.start_time or 0),
        params=dict(run.data.params),
        metrics={k: float(v) for k, v in run.data.metrics.items() if not k.startswith("system/")},
    )
