"""The world oracle draws the synthetic world's own colours for a fixed gray image, in the shards' units."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from semcolor.data.shard_reader import read_shard_samples
from semcolor.data.sources.synthetic import (CLASS_ID, SPLIT_CODES, WORLD_CLASSES, WorldConfig, WorldImage, _rngs,
                                             render_image)
from semcolor.evaluation.world_oracle import ORACLE_STREAM, oracle_ab, redraw_colors, shard_ab
from semcolor.scaling import lab8_to_unit
from tests.world_shards import build_world_shards

CONFIG = WorldConfig(seed=0, num_train=24, num_val=8, image_size=64)


def region_modes(image, lab: np.ndarray) -> list[tuple[str, str]]:
    """(kind, nearest mode's class/name) of each visible region, from its median (a, b)."""
    found = []
    for instance, region in zip(np.unique(image.instances), image.facts["regions"]):
        ab = np.median(lab[image.instances == instance][:, 1:], axis=0)
        kind = WORLD_CLASSES[CLASS_ID[region["class"]]].kind
        candidates = [(c.name, m.name, np.hypot(*(ab - (m.a, m.b)))) for c in WORLD_CLASSES if c.kind == kind
                      for m in c.modes]
        found.append((kind, min(candidates, key=lambda c: c[2])[:2]))
    return found


def test_a_redraw_keeps_the_gray_image_and_the_layout_and_draws_new_colors() -> None:
    image = render_image(CONFIG, "val", 3)
    first = redraw_colors(image, CONFIG, np.random.default_rng(1))
    again = redraw_colors(image, CONFIG, np.random.default_rng(1))
    other = redraw_colors(image, CONFIG, np.random.default_rng(2))
    assert np.array_equal(first, again)  # seeded
    for lab in (first, other):
        assert np.array_equal(lab[..., 0], image.lab[..., 0])  # L is the gray image: never redrawn
        assert lab.shape == image.lab.shape
    assert not np.array_equal(first[..., 1:], other[..., 1:])  # chroma noise at least
    # every region still carries a mode of a class of its own kind (nearest within the noise)
    for lab in (first, other):
        for (kind, (class_name, _)) in region_modes(image, lab):
            assert WORLD_CLASSES[CLASS_ID[class_name]].kind == kind


def first_image_with(kinds: set[str]):
    for index in range(50):
        image = render_image(CONFIG, "val", index)
        if kinds <= {WORLD_CLASSES[CLASS_ID[region["class"]]].kind for region in image.facts["regions"]}:
            return image
    raise AssertionError(f"no image with {kinds} among the first 50")


def test_twins_and_modes_are_drawn_with_the_worlds_probabilities() -> None:
    image = first_image_with({"sky", "tree"})
    rng = np.random.default_rng(0)
    sky, tree = [], []
    for _ in range(300):
        modes = dict(region_modes(image, redraw_colors(image, CONFIG, rng)))
        sky.append(modes["sky"][0])
        tree.append(modes["tree"][1])
    # 300 draws: standard deviations 0.029 and 0.026
    assert 0.4 < sky.count("sky") / 300 < 0.6  # kind_share 0.5 between sky and dusk
    assert 0.6 < tree.count("green") / 300 < 0.8  # tree: green 0.7, autumn 0.3


@pytest.fixture(scope="module")
def world_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_world_shards(tmp_path_factory.mktemp("oracle_world"))


def test_the_oracle_renders_through_the_shard_path_exactly(world_shards: Path) -> None:
    stored = {s.key: s for shard in sorted(world_shards.glob("val-*.tar")) for s in read_shard_samples(shard)}
    assert len(stored) == CONFIG.num_val
    for key, sample in stored.items():
        own, draws = oracle_ab(CONFIG, "val", int(key.split("_")[1]), 3, 128)
        _, ab = lab8_to_unit(sample.lab8)
        assert torch.equal(own, torch.from_numpy(ab)), key  # the image's own colours, as its shard holds them
        assert draws.shape == (3, 2, 128, 128)
        assert not torch.equal(draws[0], draws[1])


def test_the_draws_come_from_their_own_stream_of_seed_split_code_and_index() -> None:
    own, draws = oracle_ab(CONFIG, "val", 2, 2, 32)
    image = render_image(CONFIG, "val", 2)
    rng = np.random.default_rng([0, SPLIT_CODES["val"], 2, ORACLE_STREAM])  # the key, pinned
    for draw in draws:
        lab = redraw_colors(image, CONFIG, rng)
        expected = shard_ab(WorldImage(image.image_id, lab, image.label, image.instances, image.facts), CONFIG, 32)
        assert torch.equal(draw, expected)
    assert not torch.equal(draws[0], own)
    # a stream of its own: not one of the two the world renders the image from (synthetic._rngs)
    first = np.random.default_rng([0, SPLIT_CODES["val"], 2, ORACLE_STREAM]).random(4)
    for world_stream in _rngs(CONFIG, "val", 2):
        assert not np.array_equal(world_stream.random(4), first)
    assert not torch.equal(oracle_ab(CONFIG, "val", 2, 2, 32, seed=1)[1], draws)
