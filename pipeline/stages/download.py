"""DVC stage `download@<source>`: fetch (or, for `synthetic`, generate) and safely extract one source.

    python -m pipeline.stages.download voc2012
"""

from __future__ import annotations

import argparse
import sys

from pipeline.prefect_server import ensure_prefect_api
from pipeline.params import DataConfig, DownloadConfig, read_params, section
from semcolor.config import ConfigError, config_to_dict, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    try:
        params = read_params(args.params)
        data = load_config(DataConfig, section(params, "data"), "data")
        download = load_config(DownloadConfig, section(params, "download"), "download")
        synthetic = None
        options = {} if args.source == "synthetic" else dict(section(params, f"sources.{args.source}") or {})
        if args.source == "synthetic":
            from semcolor.data.sources.synthetic import WorldConfig

            world = load_config(WorldConfig, section(params, "sources.synthetic"), "sources.synthetic")
            synthetic = config_to_dict(world)
    except ConfigError as error:
        print(f"params.yaml: {error}", file=sys.stderr)
        return 2
    with ensure_prefect_api():
        # imported only now: Prefect snapshots its settings (the API URL) at import and hands them to
        # the task runner's worker processes
        from pipeline.flows.download import download_sources
        roots = download_sources([args.source], data.raw_dir, data.extracted_dir, mirror=download.mirror,
                                 synthetic=synthetic, checksum_dir=download.checksum_dir,
                                 retry_delay_seconds=list(download.retry_delays),
                                 source_options={args.source: options})
    print(f"{args.source}: extracted to {roots[args.source]}")
    return 0


if __name__ == "__main__":
    from pipeline.stage_main import stage_main  # one line per user error, exit 2

    sys.exit(stage_main(main, "download"))
