"""The world oracle: a sampler that knows the synthetic world's own colour distribution, the reference that
PixelCNN samples are read against.

Given a gray validation image of the synthetic world, what colours could it have? Its layout, textures and
lightness are fixed by the gray image; its colours are not: each region of a gray-alike kind is either twin
with probability ``kind_share``, each region draws one of its class's modes with the listed probability,
and every chromatic pixel gets fresh chroma noise (``semcolor.data.sources.synthetic``). ``redraw_colors``
draws exactly those again for one rendered image, leaving L untouched, so two draws are two samples from the
world's own distribution of colours given the gray image: what a perfect model's samples look like.
``oracle_ab`` takes each draw through the shard path (sRGB JPEG at the world's quality, decode, resize,
8-bit Lab codes), so the draws are in the same units, and carry the same losses, as the validation shards.

A PixelCNN works at 1/4 resolution, so a perfect one would produce the 4 x 4 means of such draws:
``bench/psc_quality.py`` pools them the same way before scoring them with the models' own measures (PSNR of
a draw, colourfulness, MS-SSIM between two draws, and the PSNR of the mean of many draws, the oracle's
"fast path").
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from semcolor.color import rgb8_to_lab8
from semcolor.data.sources.labels import resize_image
from semcolor.data.sources.synthetic import (
    CLASS_ID,
    KIND_CLASSES,
    SPLIT_CODES,
    WORLD_CLASSES,
    WorldConfig,
    WorldImage,
    encode_world_image,
    render_image,
)
from semcolor.scaling import lab8_to_unit


def redraw_colors(world_image: WorldImage, config: WorldConfig, rng: np.random.Generator) -> np.ndarray:
    """``world_image.lab`` with every visible region's twin class, mode and chroma noise drawn again from the
    world's probabilities, L unchanged: float64 (S, S, 3), channel last, CIE L in [0, 100], a and b in Lab
    units (inside sRGB, as every world colour is)."""
    regions = world_image.facts["regions"]  # the visible regions, in instance order
    instances = np.unique(world_image.instances)
    if len(instances) != len(regions):
        raise ValueError(f"{world_image.image_id}: {len(instances)} visible regions, {len(regions)} in its facts")
    chroma = np.zeros(world_image.lab.shape[:2] + (2,))
    chromatic = np.zeros(world_image.lab.shape[:2], dtype=bool)
    for instance, region in zip(instances, regions):
        twins = KIND_CLASSES[WORLD_CLASSES[CLASS_ID[region["class"]]].kind]
        shares = [WORLD_CLASSES[CLASS_ID[name]].kind_share for name in twins]
        world_class = WORLD_CLASSES[CLASS_ID[twins[int(rng.choice(len(twins), p=shares))]]]
        mode = world_class.modes[int(rng.choice(len(world_class.modes), p=[m.p for m in world_class.modes]))]
        mask = world_image.instances == instance
        chroma[mask] = (mode.a, mode.b)
        chromatic[mask] = not world_class.achromatic
    if config.chroma_noise > 0:
        noise = rng.normal(0.0, config.chroma_noise / 2, size=chroma.shape)
        chroma += np.clip(noise, -config.chroma_noise, config.chroma_noise) * chromatic[..., None]
    return np.concatenate([world_image.lab[..., :1], chroma], axis=-1)


def shard_ab(world_image: WorldImage, config: WorldConfig, size: int) -> torch.Tensor:
    """a/b of ``world_image`` as a ``size`` px shard stores it and the loader reads it (the world's JPEG,
    decoded in full and resized as the ``synthetic`` source's samples are, 8-bit Lab codes, then
    ``semcolor.scaling.lab8_to_unit``): float32 (2, size, size), channel first (a, b), ab / 128."""
    jpeg, _ = encode_world_image(world_image, config.jpeg_quality)
    with Image.open(io.BytesIO(jpeg)) as image:
        rgb = np.asarray(image.convert("RGB"))
    _, ab = lab8_to_unit(rgb8_to_lab8(resize_image(rgb, size)))  # as the loader reads a shard
    return torch.from_numpy(ab)


# The world renders image (split, index) from the streams [world seed, split code, index, 0 or 1]
# (synthetic._rngs); the oracle's draws take a third stream, so they never replay the image's own colours.
ORACLE_STREAM = 2


def oracle_ab(config: WorldConfig, split: str, index: int, draws: int, size: int, seed: int = 0
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(the image's own a/b (2, S, S), ``draws`` oracle draws (draws, 2, S, S)), both as ``shard_ab`` gives
    them. The draws depend only on (seed, split, index)."""
    world_image = render_image(config, split, index)
    rng = np.random.default_rng([seed, SPLIT_CODES[split], index, ORACLE_STREAM])
    redrawn = []
    for _ in range(draws):
        lab = redraw_colors(world_image, config, rng)
        redrawn.append(shard_ab(WorldImage(world_image.image_id, lab, world_image.label, world_image.instances,
                                           world_image.facts), config, size))
    return shard_ab(world_image, config, size), torch.stack(redrawn)
