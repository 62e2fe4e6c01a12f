"""DVC stage `check`: the Python environment and params.yaml, checked before any other stage runs.

    python -m pipeline.check

DVC deletes a stage's outputs before it runs the stage's command, so a stage that fails at its start (the
wrong interpreter, an unknown key in params.yaml) would cost its existing outputs. Every stage depends on
this one (through the download stages, the root of the graph), and this one depends on params.yaml and
the code (``pipeline/``, ``semcolor/``): whenever one of them changes, `dvc repro` runs this check first, and when it fails
DVC stops before touching any other stage's outputs.

It checks (1) that this Python has semcolor installed with its dependencies (run through a Python without
them, e.g. `.venv/bin/dvc repro` in a shell whose `python` is the system's, it says so in one line instead
of failing later on `import torch`), and (2) every params.yaml section the stages read, loaded into the
same typed configs the stages use (an unknown key or a wrong type names the dotted key). Its output,
``data/setup-check.txt``, has the same bytes on every success, so a passing check never makes another
stage rerun. Only the standard library is imported before (1) has passed.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from pathlib import Path

OUTPUT = Path("data/setup-check.txt")
# what every stage imports; absent from a Python that is not the project's environment
REQUIRED_MODULES = ("numpy", "torch", "yaml", "PIL", "mlflow", "prefect", "webdataset")
ACTIVATE_HINT = ("run dvc from the project's environment: `source .venv/bin/activate` first "
                 "(or `make install` when .venv is missing)")


def environment_problem() -> str | None:
    """One line when this interpreter lacks semcolor or its dependencies, else None."""
    missing = [name for name in REQUIRED_MODULES if importlib.util.find_spec(name) is None]
    try:
        importlib.metadata.version("semcolor")
    except importlib.metadata.PackageNotFoundError:
        missing.insert(0, "semcolor (not installed)")
    if not missing:
        return None
    return f"this Python ({sys.executable}) lacks {', '.join(missing)}; {ACTIVATE_HINT}"


def check_params(params_path: str | Path = "params.yaml") -> list[str]:
    """Load every params section a stage reads into its typed config; the dotted names checked. Raises
    ConfigError (naming the key) at the first invalid one."""
    import torch

    from pipeline.params import DataConfig, DownloadConfig, ShardsConfig, read_params, section
    from pipeline.photo_strip import PhotosConfig
    from pipeline.stages.ab_bins import AbBinsConfig
    from semcolor.evaluation.suite import EvaluateConfig
    from pipeline.stages.train import TrainStageConfig
    from semcolor.config import ConfigError, load_config
    from semcolor.models import create_model

    params = read_params(params_path)
    checked = []
    data = load_config(DataConfig, section(params, "data"), "data")
    for cls, name in ((DownloadConfig, "download"), (ShardsConfig, "shards"), (AbBinsConfig, "ab_bins"),
                      (EvaluateConfig, "evaluate"), (PhotosConfig, "photos")):
        load_config(cls, section(params, name), name)
        checked.append(name)
    if "synthetic" in data.sources:
        from semcolor.data.sources.synthetic import WorldConfig

        load_config(WorldConfig, section(params, "sources.synthetic"), "sources.synthetic")
        checked.append("sources.synthetic")
    for name in sorted(key for key in params if key.startswith("train_")):
        stage = load_config(TrainStageConfig, section(params, name), name)
        for variant, chosen in stage.variants.items():
            where = f"{name}.variants.{variant}"
            # build the model on the meta device: its config is validated, no memory is allocated (the
            # class weights of train_cls come from a file the pipeline makes; their default stands in)
            try:
                with torch.device("meta"):
                    create_model(chosen.model, **{**stage.model, **chosen.config})
            except (TypeError, ValueError) as error:
                raise ConfigError(f"{where}: {error}") from None
            checked.append(where)
    return checked


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    problem = environment_problem()
    if problem is not None:
        print(f"pipeline.check: {problem}", file=sys.stderr)
        return 3
    from semcolor.config import ConfigError

    try:
        checked = check_params(args.params)
    except ConfigError as error:
        print(f"params.yaml: {error}", file=sys.stderr)
        return 2
    from semcolor.atomic import write_text_atomic

    write_text_atomic(OUTPUT, "params.yaml and the Python environment passed `python -m pipeline.check`\n")
    print(f"checked the Python environment and {len(checked)} params sections")
    return 0


if __name__ == "__main__":
    sys.exit(main())
