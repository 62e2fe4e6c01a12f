"""Scale-out: shard conversion on a Dask cluster (prefect-dask's DaskTaskRunner, `shards.dask_address`) writes
the same bytes as a single-process conversion, for a tiny synthetic world built through the real archive
and safe-extraction path."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.flows.shards import run_shards
from semcolor.data.extract import safe_extract
from semcolor.data.shard_settings import ShardSettings
from semcolor.data.shard_format import MANIFEST_NAME
from semcolor.data.shard_reader import read_manifest
from semcolor.data.shards import convert_source
from semcolor.data.sources import get_source
from semcolor.data.sources.synthetic import WorldConfig, write_world_archive
from tests.project_repo import tree_digests

SIZE = 128
SAMPLES_PER_SHARD = 8
SETTINGS = ShardSettings(samples_per_shard=SAMPLES_PER_SHARD)
CHUNK_SIZE = 4  # 32 items -> 8 task runs: enough for both workers to get some


@pytest.fixture(scope="module")
def world_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``data/extracted/synthetic`` of a 24 + 8 image world (64 px)."""
    base = tmp_path_factory.mktemp("world")
    archive = write_world_archive(WorldConfig(seed=3, num_train=24, num_val=8, image_size=64),
                                  base / "raw" / "semantic_world.tar", progress=False)
    return safe_extract(archive, base / "extracted" / "synthetic", progress=False)


@pytest.fixture(scope="module")
def single_process(world_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the library in this process, no task runner at all."""
    out_dir = tmp_path_factory.mktemp("single") / "synthetic" / str(SIZE)
    convert_source(get_source("synthetic", world_tree), out_dir, SIZE, settings=SETTINGS,
                   chunk_size=CHUNK_SIZE, progress=False)
    return out_dir


@pytest.mark.slow
@pytest.mark.server
def test_dask_cluster_of_two_workers_writes_the_single_process_shards(
    prefect_harness, world_tree: Path, single_process: Path, tmp_path: Path
) -> None:
    from distributed import Client, LocalCluster, get_task_stream

    reference = tree_digests(single_process)
    manifest = read_manifest(single_process)
    assert manifest["splits"]["train"]["samples"] == 24 and manifest["splits"]["val"]["samples"] == 8
    assert len([name for name in reference if name.endswith(".tar")]) == 4  # 3 train + 1 val shards

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        with get_task_stream(client) as stream:
            written = run_shards("synthetic", world_tree, tmp_path / "shards", SIZE, workers=2,
                                 settings=SETTINGS, dask_address=cluster.scheduler_address,
                                 chunk_size=CHUNK_SIZE, progress=False)
        worker_addresses = set(client.scheduler_info()["workers"])  # worker processes (not their nannies)

    assert written == tmp_path / "shards" / "synthetic" / str(SIZE) / MANIFEST_NAME
    assert tree_digests(written.parent) == reference
    # The chunks really ran on the cluster's worker processes, not in this one.
    ran_on = [task["worker"] for task in stream.data]
    assert len(ran_on) == 8 and set(ran_on) <= worker_addresses and len(worker_addresses) == 2
