"""The model registry: aliases per registered model, promotion with a record of what it replaced.

Models are registered per family and variant as ``semcolor-<family>-<variant>``, the variant spelled with
hyphens (``semcolor-psc-seg-only`` for the params variant ``seg_only``): ``registered_name`` makes the
name, ``model_key`` turns it back into the ``<family>_<variant>`` key of checkpoints and metrics files.
Two aliases mark a model's role: ``champion`` (the model in use; ``models:/<name>@champion`` is what
``semcolor colorize --model`` and evaluation load) and ``challenger`` (a candidate). ``promote`` moves an
alias to a version and remembers the version it pointed at before, twice over: in the alias
``previous_<alias>`` (so ``rollback`` and ``models:/<name>@previous_champion`` work) and in the promoted
version's tag ``semcolor.previous_<alias>`` (the history stays readable when the alias moves on).

Every function takes an optional ``client`` (``mlflow.MlflowClient``); by default one for MLflow's own
tracking/registry URI resolution (MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semcolor import tracking_tags

REGISTERED_PREFIX = "semcolor-"
CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_PREFIX = "previous_"
PREVIOUS_TAG_PREFIX = tracking_tags.PREVIOUS_PREFIX
NO_PREVIOUS = "none"
METRIC_TAG_PREFIX = tracking_tags.METRIC_PREFIX  # version tag: the metric it scored when it was promoted  # tag value when the alias pointed nowhere before the promotion


@dataclass(frozen=True)
class Promotion:
    """The outcome of ``promote``/``rollback``: ``alias`` of ``name`` now points at ``version``; ``previous``
    is the version it pointed at before (None: it was unset). ``moved`` is False when it already pointed
    there."""

    name: str
    alias: str
    version: str
    previous: str | None

    @property
    def moved(self) -> bool:
        return self.previous != self.version

    @property
    def uri(self) -> str:
        return model_uri(self.name, self.alias)


def registered_name(family: str, variant: str | None = None) -> str:
    """The registry name of a model family and variant: ``semcolor-psc-full``, ``semcolor-psc-seg-only``
    (variant ``seg_only``), ``semcolor-gridnet`` (no variant). Family names hold neither ``-`` nor ``_``."""
    if not family or "-" in family:
        raise ValueError(f"model family {family!r}: expected a name without '-', e.g. psc")
    return REGISTERED_PREFIX + family + (f"-{variant.replace('_', '-')}" if variant else "")


DEFAULT_MODEL = registered_name("sdc", "paper")  # what `semcolor colorize` and the retrain flow use by default


def split_registered_name(name: str) -> tuple[str, str | None]:
    """``semcolor-<family>-<variant>`` -> (family, variant with ``_`` as in params.yaml); the variant is
    None for ``semcolor-<family>``. Accepts the older ``_`` spelling (``semcolor-psc-seg_only``) too.
    ValueError for a name without the prefix."""
    if not name.startswith(REGISTERED_PREFIX) or len(name) == len(REGISTERED_PREFIX):
        raise ValueError(f"registered model name {name!r} is not of the form semcolor-<family>-<variant>, "
                         "e.g. semcolor-sdc-paper")
    family, _, variant = name[len(REGISTERED_PREFIX):].partition("-")
    return family, (variant.replace("-", "_") or None)


def model_key(name: str) -> str:
    """``semcolor-psc-seg-only`` -> ``psc_seg_only``: the model's key in ``metrics/evaluate.json``, the stem
    of ``models/<key>.pt`` and of ``metrics/train/<key>.json``."""
    family, variant = split_registered_name(name)
    if variant is None:
        raise ValueError(f"registered model name {name!r} names no variant (semcolor-<family>-<variant>)")
    return f"{family}_{variant}"


def model_uri(name: str, alias: str = CHAMPION) -> str:
    """``models:/<name>@<alias>``."""
    return f"models:/{name}@{alias}"


def _client(client: Any | None) -> Any:
    if client is not None:
        return client
    from mlflow import MlflowClient

    return MlflowClient()


def _versions(client: Any, name: str) -> list[str]:
    """The versions of registered model ``name`` (LookupError naming the known models when it does not
    exist)."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        raise LookupError(_unknown_model_message(client, name)) from None
    versions = client.search_model_versions(filter_string=f"name = '{name}'", max_results=10000)
    return sorted((str(v.version) for v in versions), key=int)


def _unknown_model_message(client: Any, name: str) -> str:
    import difflib

    known = sorted(model.name for model in client.search_registered_models(max_results=1000))
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return (f"no registered model {name!r} in {client.tracking_uri}; {hint}registered: "
            + (", ".join(known) if known else "none (run the pipeline: dvc repro)"))


def check_model_uri(uri: str, client: Any | None = None) -> None:
    """Check that ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` exists in the registry;
    LookupError with one line saying what is missing and what to do (a close registered name, the
    aliases and versions the model has, the ``semcolor promote`` command). Other URIs are not checked."""
    from mlflow.exceptions import MlflowException

    if not uri.startswith("models:/"):
        return
    body = uri[len("models:/"):].strip("/")
    if "@" in body:
        name, alias, version = *body.split("@", 1), None
    else:
        name, _, version = body.partition("/")
        alias = None
    client = _client(client)
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        raise LookupError(f"{uri}: " + _unknown_model_message(client, name)) from None
    versions = sorted((str(v.version) for v in client.search_model_versions(
        filter_string=f"name = '{name}'", max_results=10000)), key=int)
    aliases = dict(getattr(model, "aliases", {}) or {})
    if alias is not None and alias not in aliases:
        have = ", ".join(f"{a} -> v{v}" for a, v in sorted(aliases.items())) or "none"
        newest = versions[-1] if versions else "N"
        raise LookupError(f"{uri}: {name} has no alias {alias!r} (aliases: {have}; versions: "
                          f"{', '.join(versions) or 'none'}); set it with: semcolor promote {name} "
                          f"--version {newest}" + (f" --alias {alias}" if alias != CHAMPION else ""))
    if alias is None and version and version not in versions and version != "latest":
        raise LookupError(f"{uri}: {name} has no version {version}; it has {', '.join(versions) or 'none'}")


def get_by_alias(name: str, alias: str, client: Any | None = None) -> Any | None:
    """The ``ModelVersion`` that ``alias`` of registered model ``name`` points at, or None when the alias is
    unset. LookupError when there is no registered model ``name``. (Its ``version`` is an int from a SQLite
    store and a str from a server: compare ``str(version)``.)"""
    from mlflow.exceptions import MlflowException

    client = _client(client)
    _versions(client, name)  # a missing model is an error, an unset alias is not
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def set_alias(name: str, alias: str, version: str | int, client: Any | None = None) -> Any:
    """Point ``alias`` of ``name`` at ``version`` and return that ``ModelVersion``. LookupError when the model
    or version does not exist (listing the versions there are)."""
    client = _client(client)
    versions = _versions(client, name)
    version = str(version)
    if version not in versions:
        raise LookupError(f"registered model {name!r} has no version {version}; it has {versions or 'none'}")
    client.set_registered_model_alias(name, alias, version)
    return client.get_model_version(name, version)


def promote(name: str, version: str | int, alias: str = CHAMPION, client: Any | None = None) -> Promotion:
    """Move ``alias`` (default ``champion``) of ``name`` to ``version``, recording the version it replaced in
    the alias ``previous_<alias>`` and in the tag ``semcolor.previous_<alias>`` of the promoted version.
    Promoting the version the alias already points at changes nothing (``moved`` is False)."""
    client = _client(client)
    version = str(version)
    current = get_by_alias(name, alias, client)
    previous = str(current.version) if current is not None else None
    if previous == version:
        return Promotion(name, alias, version, previous)
    set_alias(name, alias, version, client)
    if previous is not None:
        client.set_registered_model_alias(name, PREVIOUS_PREFIX + alias, previous)
    client.set_model_version_tag(name, version, PREVIOUS_TAG_PREFIX + alias, previous or NO_PREVIOUS)
    return Promotion(name, alias, version, previous)


def rollback(name: str, alias: str = CHAMPION, client: Any | None = None) -> Promotion:
    """Move ``alias`` back to the version ``previous_<alias>`` points at (a promotion of that version, so
    rolling back twice returns to where it started). LookupError when there is nothing to roll back to."""
    client = _client(client)
    previous = get_by_alias(name, PREVIOUS_PREFIX + alias, client)
    if previous is None:
        raise LookupError(f"{name!r} has no alias {PREVIOUS_PREFIX + alias!r}: nothing to roll back to")
    return promote(name, previous.version, alias, client)


def best_champion(family: str, metric: str, client: Any | None = None,
                  higher_is_better: bool = True) -> str | None:
    """``models:/<name>@champion`` of the family's registered model (``semcolor-<family>-*``) whose champion
    scored best on ``metric`` (its version tag ``semcolor.metric.<metric>``, set when it was promoted); None
    when no model of the family has a champion with that tag. E.g. ``best_champion("sdc",
    "palette_accuracy")`` -> ``models:/semcolor-sdc-paper@champion``."""
    client = _client(client)
    prefix = registered_name(family) + "-"
    scored: list[tuple[float, str]] = []
    for model in client.search_registered_models(max_results=1000):
        if not model.name.startswith(prefix):
            continue
        champion = get_by_alias(model.name, CHAMPION, client)
        value = None if champion is None else (champion.tags or {}).get(METRIC_TAG_PREFIX + metric)
        if value is not None:
            scored.append((float(value) if higher_is_better else -float(value), model.name))
    if not scored:
        return None
    return model_uri(max(scored)[1], CHAMPION)


# ---------------------------------------------------------------------------------------------- command


def add_promote_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "promote",
        help="point a registry alias (champion) at a model version",
        description=(
            "Move ALIAS of registered model NAME (e.g. semcolor-psc-full) to VERSION, recording the version "
            f"it replaced as alias {PREVIOUS_PREFIX}ALIAS; --rollback moves it back. Then "
            "`semcolor colorize --model models:/NAME@champion` uses it. Exit status 0, or 2 for an unknown "
            "model, version or tracking store."
        ),
    )
    parser.add_argument("name", metavar="NAME", help="registered model name, e.g. semcolor-psc-full")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--version", help="the model version to promote")
    target.add_argument("--rollback", action="store_true",
                        help=f"move the alias back to {PREVIOUS_PREFIX}ALIAS")
    parser.add_argument("--alias", default=CHAMPION, help=f"alias to move (default {CHAMPION})")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLflow's own resolution)")
    parser.set_defaults(handler=run_promote)
    return parser


def run_promote(args: argparse.Namespace) -> int:
    """The ``semcolor promote`` handler: prints what moved; returns the exit status."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=args.tracking_uri)
    try:
        if args.rollback:
            result = rollback(args.name, args.alias, client)
        else:
            result = promote(args.name, args.version, args.alias, client)
    except LookupError as error:
        print(f"semcolor promote: error: {error.args[0]}", file=sys.stderr)
        return 2
    except MlflowException as error:
        print(f"semcolor promote: error: {client.tracking_uri}: {error.message}", file=sys.stderr)
        return 2
    if result.moved:
        before = f"version {result.previous}" if result.previous else "unset"
        print(f"{result.uri} -> version {result.version} (was {before})")
    else:
        print(f"{result.uri} already points at version {result.version}")
    return 0
