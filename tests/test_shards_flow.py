"""pipeline/flows/shards.py: the Prefect flow gives the same shards as the library, on a process pool and
on a Dask cluster, for a tiny tree in the real VOC2012 layout read by the registered ``voc2012`` source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.flows.shards import convert_chunk, run_shards, shards_task_runner
from semcolor.data.shard_settings import ShardSettings
from semcolor.data.shard_format import MANIFEST_NAME
from semcolor.data.shard_reader import read_manifest
from semcolor.data.shards import convert_items, convert_source
from semcolor.data.sources import get_source

SIZE = 24
TRAIN_IDS = ("2007_000032", "2007_000039", "2007_000063", "2007_000068", "2007_000121")
VAL_IDS = ("2007_000033", "2007_000042")
CORRUPT_ID = "2007_000063"


def write_voc_tree(root: Path) -> Path:
    """``root/VOCdevkit/VOC2012`` with JPEGImages, SegmentationClass (palette PNGs, 255 band) and
    ImageSets/Segmentation/{train,val}.txt; one truncated JPEG."""
    devkit = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (devkit / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for index, image_id in enumerate((*TRAIN_IDS, *VAL_IDS)):
        height, width = 30 + 3 * index, 41 - 2 * index
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        jpeg_path = devkit / "JPEGImages" / f"{image_id}.jpg"
        Image.fromarray(image).save(jpeg_path, quality=90)
        if image_id == CORRUPT_ID:
            jpeg_path.write_bytes(jpeg_path.read_bytes()[:200])
        label = np.zeros((height, width), np.uint8)
        label[5:20, 4:30] = 255
        label[7:18, 6:28] = 1 + index
        png = Image.fromarray(label, mode="P")
        png.putpalette([0, 0, 0] + [128, 0, 0] * 255)
        png.save(devkit / "SegmentationClass" / f"{image_id}.png")
    (devkit / "ImageSets/Segmentation/train.txt").write_text("\n".join(TRAIN_IDS) + "\n")
    (devkit / "ImageSets/Segmentation/val.txt").write_text("\n".join(VAL_IDS) + "\n")
    return root


@pytest.fixture(scope="module")
def voc_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_voc_tree(tmp_path_factory.mktemp("extracted") / "voc2012")


@pytest.fixture(scope="module")
def library_build(voc_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the library in this process, one worker."""
    out_dir = tmp_path_factory.mktemp("library") / "voc2012" / str(SIZE)
    source = get_source("voc2012", voc_tree)
    convert_source(source, out_dir, SIZE, settings=ShardSettings(samples_per_shard=2, max_skipped_fraction=0.5),
                   progress=False)
    return out_dir


def _assert_same_files(built: Path, reference: Path) -> None:
    names = sorted(p.name for p in reference.iterdir())
    assert sorted(p.name for p in built.iterdir()) == names
    for name in names:
        assert (built / name).read_bytes() == (reference / name).read_bytes(), name


def test_task_runner_choice() -> None:
    from prefect.task_runners import ProcessPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    local = shards_task_runner(workers=3)
    assert isinstance(local, ProcessPoolTaskRunner) and local._max_workers == 3
    remote = shards_task_runner(workers=3, dask_address="tcp://127.0.0.1:8786")
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://127.0.0.1:8786"
    with pytest.raises(ValueError, match="workers must be positive"):
        shards_task_runner(workers=0)


def test_chunk_task_is_the_library_conversion(voc_tree: Path) -> None:
    source = get_source("voc2012", voc_tree)
    items = source.list_items("train")[:3]
    assert convert_chunk.fn(source, items, SIZE) == convert_items(source, items, SIZE)


def test_library_reference_build(library_build: Path) -> None:
    manifest = read_manifest(library_build)
    assert manifest["source"] == "voc2012" and len(manifest["class_names"]) == 21
    assert [s["samples"] for s in manifest["splits"]["train"]["shards"]] == [2, 2]
    assert [s["key"] for s in manifest["splits"]["train"]["skipped"]] == [CORRUPT_ID]
    assert manifest["splits"]["val"]["samples"] == 2


@pytest.mark.server
@pytest.mark.slow
def test_flow_on_process_pool_and_dask_matches_library(
    prefect_harness, voc_tree: Path, library_build: Path, tmp_path: Path
) -> None:
    from distributed import LocalCluster

    options = {"settings": ShardSettings(samples_per_shard=2, max_skipped_fraction=0.5), "progress": False,
               "chunk_size": 2}
    options["workers"] = 2
    manifest = run_shards("voc2012", voc_tree, tmp_path / "pool", SIZE, **options)
    assert manifest == tmp_path / "pool" / "voc2012" / str(SIZE) / MANIFEST_NAME
    _assert_same_files(manifest.parent, library_build)

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        manifest = run_shards("voc2012", voc_tree, tmp_path / "dask", SIZE, dask_address=address, **options)
    _assert_same_files(manifest.parent, library_build)
