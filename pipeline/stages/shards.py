"""DVC stage `shards@<source>-<size>`: convert an extracted source into Lab WebDataset shards.

    python -m pipeline.stages.shards synthetic 128
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.prefect_server import ensure_prefect_api
from pipeline.params import DataConfig, ShardsConfig, read_params, section
from semcolor.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("size", type=int, choices=(128, 352))
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    try:
        params = read_params(args.params)
        data = load_config(DataConfig, section(params, "data"), "data")
        shards = load_config(ShardsConfig, section(params, "shards"), "shards")
        options = {} if args.source == "synthetic" else dict(section(params, f"sources.{args.source}") or {})
    except ConfigError as error:
        print(f"params.yaml: {error}", file=sys.stderr)
        return 2
    with ensure_prefect_api():
        # imported only now: Prefect snapshots its settings (the API URL) at import and hands them to
        # the task runner's worker processes
        from pipeline.flows.shards import run_shards
        manifest = run_shards(
            args.source, Path(data.extracted_dir) / args.source, data.shards_dir, args.size,
            workers=shards.workers, settings=shards.settings, dask_address=shards.dask_address,
            source_options=options,
        )
    print(f"{args.source} {args.size}: {manifest}")
    return 0


if __name__ == "__main__":
    from pipeline.stage_main import stage_main  # one line per user error, exit 2

    sys.exit(stage_main(main, "shards"))
