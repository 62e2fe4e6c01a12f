"""Prefect flow: a scheduled retrain that promotes the new model only when it beats the champion.

Steps (each a task; a failing step fails the flow with the step's command output, and the alias never moves):

1. ``dvc-pull``     ``dvc pull --allow-missing`` when the repository has a default DVC remote (retried:
   network/storage). Outputs the remote lacks (never pushed, or a first run) are not an error: the next step
   rebuilds them.
2. ``run-pipeline`` ``dvc repro``; with ``params_overrides``, ``dvc exp run -S key=value ...`` instead (not
   retried: a failing stage fails the same way again).
3. ``evaluate``     the challenger's ``metric`` from ``metrics/evaluate.json`` (written by the evaluate
   stage as ``{"models": {"<family>_<variant>": {metric: value}}}``) and the challenger version: the
   newest version of ``model_name`` in the MLflow registry. The value is recorded on that version as tag
   ``semcolor.metric.<metric>``, so it can be compared again once the version is champion.
4. ``dvc-push``     ``dvc push`` when a default remote exists (retried).
5. ``compare-and-promote``  the challenger version gets alias ``challenger``; ``champion`` moves to it
   (through ``semcolor.registry.promote``, which records ``previous_champion``) when there is no champion
   yet, or when the challenger is better by more than ``margin``. It runs last so that any earlier
   failure - push included - leaves the aliases as they were: a promoted model's data is on the remote.
6. A Markdown artifact ``retrain-comparison`` with the table (metric, champion, challenger, decision).

Why ``dvc exp run`` without ``--temp``: it runs in the workspace like ``dvc repro`` and leaves the results
there (no ``dvc exp apply`` needed), so ``dvc push`` shares exactly the outputs that were evaluated; the
experiment is also kept as a git ref (``dvc exp show``). Its ``-S`` overrides stay in the workspace's
params.yaml, uncommitted, like the changed dvc.lock after ``dvc repro``: commit them when the result is kept.
``dvc exp run`` needs a git repository with at least one commit.

Commands run in ``repo_dir`` as ``<this python> -m dvc`` (PATH does not matter), with
``MLFLOW_TRACKING_URI`` set to the store the flow reads, so the stages log where the flow looks.

Schedule it (README, "Scheduled retrains"; ``--serve`` refuses to start without a reachable server)::

    prefect server start                      # another terminal; UI at http://127.0.0.1:4200
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python -m pipeline.flows.retrain --serve --cron "0 3 * * 0"  # deployment retrain/weekly-retrain
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

# model version tag holding the metric measured when it was challenger (semcolor.metric.<metric>)
from semcolor.registry import DEFAULT_MODEL, METRIC_TAG_PREFIX

DEFAULT_METRIC = "palette_accuracy"
DEFAULT_CRON = "0 3 * * 0"  # Sundays 03:00 (the server's timezone, UTC unless configured)
DEPLOYMENT_NAME = "weekly-retrain"
METRICS_FILE = "metrics/evaluate.json"
TRAIN_SUMMARIES = "metrics/train"  # <key>.json per trained model: its run id and registered version
ARTIFACT_KEY = "retrain-comparison"
OUTPUT_TAIL_CHARS = 8000  # of stdout and stderr each, in the log and the error of a failed command
PULL_PUSH_RETRIES = 2
PULL_PUSH_RETRY_DELAYS_SECONDS = [10, 60]


class StepFailed(RuntimeError):
    """A command of a retrain step exited non-zero; the message holds the command, directory and output."""


@dataclass(frozen=True)
class Challenger:
    """The model this retrain produced: ``version`` of registered model ``name`` scored ``value`` on
    ``metric``."""

    name: str
    version: str
    metric: str
    value: float


@dataclass(frozen=True)
class Decision:
    """The comparison of a challenger with the champion (``champion_version``/``champion_value`` None when the
    model had no champion, or when the champion has no recorded value of the metric)."""

    metric: str
    challenger_version: str
    challenger_value: float
    champion_version: str | None
    champion_value: float | None
    promote: bool
    reason: str


# ------------------------------------------------------------------------------------------ pure helpers


def metrics_key(model_name: str) -> str:
    """``semcolor-<family>-<variant>`` -> ``<family>_<variant>``, the key of that model in evaluate.json
    (``semcolor-psc-seg-only`` -> ``psc_seg_only``; see ``semcolor.registry.model_key``)."""
    from semcolor.registry import model_key

    try:
        return model_key(model_name)
    except ValueError:
        raise ValueError(f"model_name {model_name!r} is not of the form semcolor-<family>-<variant>") from None


def _override_value(value: Any) -> str:
    # Hydra override grammar, which `dvc exp run -S` parses: YAML-like scalars and [a,b] lists
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_override_value(item) for item in value) + "]"
    return str(value)


def override_arguments(overrides: Mapping[str, Any]) -> list[str]:
    """``{"train": {"lr": 0.001}, "seed": 1}`` -> ``["-S", "train.lr=0.001", "-S", "seed=1"]``. Keys may be
    nested mappings or already dotted; every key must exist in params.yaml (DVC rejects new keys)."""
    arguments: list[str] = []

    def walk(mapping: Mapping[str, Any], prefix: str) -> None:
        for key, value in mapping.items():
            if isinstance(value, Mapping):
                walk(value, f"{prefix}{key}.")
            else:
                arguments.extend(["-S", f"{prefix}{key}={_override_value(value)}"])

    walk(overrides, "")
    return arguments


def pipeline_command(overrides: Mapping[str, Any] | None) -> list[str]:
    """The dvc arguments that run the pipeline: ``repro``, or ``exp run -S ...`` when there are overrides."""
    return ["exp", "run", *override_arguments(overrides)] if overrides else ["repro"]


def resolve_tracking_uri(tracking_uri: str | None, repo_dir: str | Path) -> str:
    """The MLflow store of the stages: ``tracking_uri``, else MLFLOW_TRACKING_URI, else MLflow's default
    ``sqlite:///mlflow.db``; a relative SQLite path is made absolute against ``repo_dir``, where the stages
    run."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        uri = prefix + str((Path(repo_dir) / uri[len(prefix):]).resolve())
    return uri


def decide(metric: str, challenger_version: str, challenger_value: float, champion_version: str | None,
           champion_value: float | None, higher_is_better: bool = True, margin: float = 0.0) -> Decision:
    """Promote when there is no champion, or when the challenger beats it by MORE than ``margin`` (in the
    metric's units, >= 0). A champion without a recorded value is kept: no comparison, no promotion."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    args = (metric, str(challenger_version), float(challenger_value), champion_version, champion_value)
    if champion_version is None:
        return Decision(*args, promote=True, reason="no champion yet")
    if str(champion_version) == str(challenger_version):
        return Decision(*args, promote=False,
                        reason="the challenger is the champion already (nothing retrained)")
    if champion_value is None:
        return Decision(*args, promote=False,
                        reason=f"champion v{champion_version} has no recorded {metric}; promote by hand")
    gain = challenger_value - champion_value if higher_is_better else champion_value - challenger_value
    if gain > margin:
        return Decision(*args, promote=True, reason=f"better by {gain:.6g} > margin {margin:g}")
    return Decision(*args, promote=False,
                    reason=f"not better by more than the margin {margin:g} ({gain:+.6g})")


def comparison_markdown(decision: Decision, model_name: str) -> str:
    """The artifact: a Markdown table of metric, champion, challenger and the decision."""
    champion = ("none" if decision.champion_version is None else
                f"v{decision.champion_version}: " + ("n/a" if decision.champion_value is None
                                                      else f"{decision.champion_value:.6g}"))
    verdict = "promoted" if decision.promote else "kept champion"
    return (
        f"## Retrain of `{model_name}`\n\n"
        "| metric | champion | challenger | decision |\n"
        "|---|---|---|---|\n"
        f"| {decision.metric} | {champion} | v{decision.challenger_version}: {decision.challenger_value:.6g} "
        f"| {verdict} ({decision.reason}) |\n"
    )


# ------------------------------------------------------------------------------------------ commands


def _tail(text: str) -> str:
    return text if len(text) <= OUTPUT_TAIL_CHARS else "..." + text[-OUTPUT_TAIL_CHARS:]


def run_dvc(args: Sequence[str], repo_dir: str | Path, env: Mapping[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
    """``<python> -m dvc <args>`` in ``repo_dir``, output captured; logged, and StepFailed with it on
    failure."""
    logger = get_run_logger()
    command = [sys.executable, "-m", "dvc", *args]
    result = subprocess.run(command, cwd=repo_dir, capture_output=True, text=True, env=dvc_env(env))
    shown = " ".join(["dvc", *args])
    output = f"--- stdout ---\n{_tail(result.stdout)}\n--- stderr ---\n{_tail(result.stderr)}"
    if check and result.returncode != 0:
        logger.error("`%s` failed with exit status %d in %s\n%s", shown, result.returncode, repo_dir, output)
        raise StepFailed(f"`{shown}` failed with exit status {result.returncode} in {repo_dir}\n{output}")
    logger.info("`%s` (exit status %d)\n%s", shown, result.returncode, output)
    return result


def dvc_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the dvc commands: this one, with this interpreter's bin folder first on PATH so that
    the stages' ``python`` is the flow's own (a served flow need not run in an activated venv)."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "DVC_NO_ANALYTICS": "1", **(extra or {})}


def default_remote(repo_dir: str | Path) -> str | None:
    """The repository's default DVC remote name, or None (`dvc remote default` exits 1 when unset)."""
    result = subprocess.run([sys.executable, "-m", "dvc", "remote", "default"], cwd=repo_dir,
                            capture_output=True, text=True, env=dvc_env())
    name = result.stdout.strip()
    return name if result.returncode == 0 and name else None


# ------------------------------------------------------------------------------------------ tasks


@task(name="dvc-pull", retries=PULL_PUSH_RETRIES, retry_delay_seconds=PULL_PUSH_RETRY_DELAYS_SECONDS,
      cache_policy=NO_CACHE)
def dvc_pull(repo_dir: str) -> bool:
    """``dvc pull --allow-missing`` from the default remote; False (skipped) when none is configured."""
    remote = default_remote(repo_dir)
    if remote is None:
        get_run_logger().info("no default DVC remote in %s: nothing to pull", repo_dir)
        return False
    # --allow-missing: outputs absent from the remote are rebuilt by the pipeline step, not a reason to fail
    run_dvc(["pull", "--allow-missing"], repo_dir)
    return True


@task(name="run-pipeline", cache_policy=NO_CACHE)
def run_pipeline(repo_dir: str, params_overrides: dict[str, Any] | None, tracking_uri: str) -> list[str]:
    """``dvc repro`` (or ``dvc exp run -S ...``); the dvc arguments it ran."""
    args = pipeline_command(params_overrides)
    run_dvc(args, repo_dir, env={"MLFLOW_TRACKING_URI": tracking_uri})
    return args


def read_challenger(repo_dir: str | Path, model_name: str, metric: str, client: Any,
                    metrics_file: str = METRICS_FILE) -> Challenger:
    """The challenger: ``model_name``'s ``metric`` from ``metrics_file`` and the version the pipeline's training
    stage registered (``registered_model`` in ``metrics/train/<key>.json``), else the newest version. The value
    is recorded on that version as tag ``semcolor.metric.<metric>``. StepFailed when the metric or the model
    is missing."""
    path = Path(repo_dir) / metrics_file
    if not path.is_file():
        raise StepFailed(f"{path} does not exist: the pipeline has no evaluate stage output; "
                         "check dvc.yaml's evaluate stage and its metrics file")
    models = json.loads(path.read_text()).get("models", {})
    key = metrics_key(model_name)
    if key not in models or metric not in models[key]:
        raise StepFailed(f"{path} has no models.{key}.{metric}; models there: "
                         f"{ {name: sorted(values) for name, values in models.items()} }")
    value = float(models[key][metric])
    versions = client.search_model_versions(filter_string=f"name = '{model_name}'", max_results=10000)
    if not versions:
        raise StepFailed(f"no registered versions of {model_name!r} in {client.tracking_uri}: did the training "
                         "stage run with this MLFLOW_TRACKING_URI?")
    known = {str(v.version) for v in versions}
    version = _trained_version(Path(repo_dir), key, model_name)
    if version not in known:  # no training summary (or one from another store): the newest version
        version = str(max(int(v) for v in known))
    client.set_model_version_tag(model_name, version, METRIC_TAG_PREFIX + metric, repr(value))
    return Challenger(model_name, version, metric, value)


def _trained_version(repo_dir: Path, key: str, model_name: str) -> str | None:
    """The version ``metrics/train/<key>.json`` says its training run registered, when it names this model."""
    summary = repo_dir / TRAIN_SUMMARIES / f"{key}.json"
    try:
        registered = str(json.loads(summary.read_text()).get("registered_model", ""))
    except (OSError, ValueError):
        return None
    name, _, version = registered.rpartition("/")
    return version if name == model_name and version else None


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(repo_dir: str, model_name: str, metric: str, tracking_uri: str,
             metrics_file: str = METRICS_FILE) -> Challenger:
    """The challenger (``read_challenger``): the version this run trained and its ``metric``."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    challenger = read_challenger(repo_dir, model_name, metric, client, metrics_file)
    get_run_logger().info("challenger %s v%s: %s = %.6g", model_name, challenger.version, metric,
                          challenger.value)
    return challenger


@task(name="dvc-push", retries=PULL_PUSH_RETRIES, retry_delay_seconds=PULL_PUSH_RETRY_DELAYS_SECONDS,
      cache_policy=NO_CACHE)
def dvc_push(repo_dir: str) -> bool:
    """``dvc push`` to the default remote; False (skipped) when none is configured."""
    if default_remote(repo_dir) is None:
        get_run_logger().info("no default DVC remote in %s: nothing to push", repo_dir)
        return False
    run_dvc(["push"], repo_dir)
    return True


def _champion_value(client: Any, name: str, version: str, metric: str) -> float | None:
    """The champion's ``metric``: the tag recorded when it was challenger, else its training run's metric."""
    model_version = client.get_model_version(name, version)
    tagged = (model_version.tags or {}).get(METRIC_TAG_PREFIX + metric)
    if tagged is not None:
        return float(tagged)
    if model_version.run_id:
        logged = client.get_run(model_version.run_id).data.metrics.get(metric)
        if logged is not None:
            return float(logged)
    return None


def promote_if_better(challenger: Challenger, client: Any, higher_is_better: bool = True,
                      margin: float = 0.0) -> Decision:
    """The promotion rule: alias ``challenger`` -> the new version; ``champion`` -> it too when ``decide``
    says so (no champion yet, or better by more than ``margin``), through ``semcolor.registry.promote``."""
    from semcolor import registry

    champion = registry.get_by_alias(challenger.name, registry.CHAMPION, client)
    champion_version = None if champion is None else str(champion.version)
    champion_value = (None if champion_version is None
                      else _champion_value(client, challenger.name, champion_version, challenger.metric))
    decision = decide(challenger.metric, challenger.version, challenger.value, champion_version,
                      champion_value, higher_is_better=higher_is_better, margin=margin)
    registry.set_alias(challenger.name, registry.CHALLENGER, challenger.version, client)
    if decision.promote:
        registry.promote(challenger.name, challenger.version, registry.CHAMPION, client)
    return decision


@task(name="compare-and-promote", cache_policy=NO_CACHE)
def compare_and_promote(challenger: Challenger, tracking_uri: str, higher_is_better: bool = True,
                        margin: float = 0.0) -> Decision:
    """Alias ``challenger`` -> the new version; ``champion`` -> it too when ``decide`` says so."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    decision = promote_if_better(challenger, client, higher_is_better=higher_is_better, margin=margin)
    get_run_logger().info("%s: %s", "promoted" if decision.promote else "kept champion", decision.reason)
    return decision


# ------------------------------------------------------------------------------------------ flow


@flow(name="retrain", log_prints=True)
def retrain(
    params_overrides: dict[str, Any] | None = None,
    model_name: str = DEFAULT_MODEL,
    metric: str = DEFAULT_METRIC,
    higher_is_better: bool = True,
    margin: float = 0.0,
    pull: bool = True,
    push: bool = True,
    repo_dir: str = ".",
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Pull, rebuild (optionally with params overrides), evaluate, push, and promote ``model_name``'s new
    version to ``champion`` only if it beats the champion on ``metric`` by more than ``margin``.

    ``params_overrides``: params.yaml keys to change for this run (``{"train": {"lr": 1e-4}}`` or
    ``{"train.lr": 1e-4}``), run through ``dvc exp run -S``. ``tracking_uri``: the MLflow store (default:
    MLFLOW_TRACKING_URI, else ``<repo_dir>/mlflow.db``). Returns the decision as a dict."""
    repo_dir = str(Path(repo_dir).resolve())
    uri = resolve_tracking_uri(tracking_uri, repo_dir)
    if pull:
        dvc_pull(repo_dir)
    run_pipeline(repo_dir, params_overrides, uri)
    challenger = evaluate(repo_dir, model_name, metric, uri)
    if push:
        dvc_push(repo_dir)
    decision = compare_and_promote(challenger, uri, higher_is_better=higher_is_better, margin=margin)
    create_markdown_artifact(markdown=comparison_markdown(decision, model_name), key=ARTIFACT_KEY,
                             description=f"champion vs challenger of {model_name} on {metric}")
    return asdict(decision)


START_SERVER_HINT = ("start one with `prefect server start` (another terminal), then "
                     "`export PREFECT_API_URL=http://127.0.0.1:4200/api`")


def prefect_server_problem(timeout_s: float = 5.0) -> str | None:
    """Why ``--serve`` cannot schedule, as one line (None when PREFECT_API_URL names a server that answers):
    a schedule needs a real Prefect server; the temporary one a bare process starts dies with it."""
    import urllib.error
    import urllib.request

    from prefect.settings import PREFECT_API_URL

    url = os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()  # the variable, else the profile's
    if not url:
        return f"no Prefect server: PREFECT_API_URL is not set; {START_SERVER_HINT}"
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout_s):
            return None
    except urllib.error.HTTPError:
        return None  # it answered (e.g. 401 without an API key): reachable; serve reports auth problems
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        return f"the Prefect server at PREFECT_API_URL={url} does not answer ({reason}); {START_SERVER_HINT}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the retrain flow once, or serve it on a cron schedule.")
    parser.add_argument("--serve", action="store_true",
                        help=f"serve deployment retrain/{DEPLOYMENT_NAME} (needs PREFECT_API_URL of a "
                             "`prefect server start`); runs until interrupted")
    parser.add_argument("--cron", default=DEFAULT_CRON,
                        help=f"schedule when serving (default {DEFAULT_CRON!r})")
    parser.add_argument("--name", default=DEPLOYMENT_NAME,
                        help=f"deployment name when serving (default {DEPLOYMENT_NAME})")
    parser.add_argument("--model-name", default=DEFAULT_MODEL,
                        help=f"registered model to promote (default {DEFAULT_MODEL})")
    parser.add_argument("--metric", default=DEFAULT_METRIC,
                        help=f"metric of metrics/evaluate.json it is compared on (default {DEFAULT_METRIC})")
    parser.add_argument("--lower-is-better", action="store_true",
                        help="smaller values of --metric are better (default: larger)")
    parser.add_argument("--margin", type=float, default=0.0,
                        help="how much better than the champion, in the metric's units (default 0.0)")
    parser.add_argument("--repo-dir", default=".", help="the project checkout (default .)")
    parser.add_argument("--no-pull", action="store_true", help="skip `dvc pull` before the run")
    parser.add_argument("--no-push", action="store_true", help="skip `dvc push` after the run")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="params.yaml override (repeatable); the run becomes `dvc exp run -S KEY=VALUE`")
    args = parser.parse_args(argv)
    parameters = {"model_name": args.model_name, "metric": args.metric,
                  "higher_is_better": not args.lower_is_better, "margin": args.margin,
                  "repo_dir": args.repo_dir, "pull": not args.no_pull, "push": not args.no_push}
    overrides = dict(item.split("=", 1) for item in args.set)
    if args.serve:
        problem = prefect_server_problem()
        if problem is not None:  # serving on the temporary server would schedule runs that never fire
            print(f"retrain --serve: {problem}", file=sys.stderr)
            return 2
        if overrides:
            parameters["params_overrides"] = overrides
        retrain.serve(name=args.name, cron=args.cron, parameters=parameters)
        return 0
    retrain(params_overrides=overrides or None, **parameters)
    return 0


if __name__ == "__main__":
    sys.exit(main())
