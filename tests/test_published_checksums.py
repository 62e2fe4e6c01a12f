"""Archives whose checksums are published carry them, so the download flow verifies against them (not
against a record of the first download). Values: tensorflow-datasets' url_checksums/coco2017.txt, as
quoted in ../shared/REFERENCE.md section 1."""

from __future__ import annotations

import pytest

from semcolor.data.sources import coco_stuff

PUBLISHED = {
    "COCO2017_TRAIN_IMAGES_ZIP": ("train2017.zip", 19_336_861_798,
                                  "69a8bb58ea5f8f99d24875f21416de2e9ded3178e903f1f7603e283b9e06d929"),
    "COCO2017_VAL_IMAGES_ZIP": ("val2017.zip", 815_585_330,
                                "4f7e2ccb2866ec5041993c9cf2a952bbed69647b115d0f74da7ce8f4bef82f05"),
    "COCO2017_INSTANCES_ZIP": ("annotations_trainval2017.zip", 252_907_541,
                               "113a836d90195ee1f884e704da6304dfaaecff1f023f49b6ca93c4aaae470268"),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_coco_2017_archives_carry_their_published_sha256(name):
    filename, size, sha256 = PUBLISHED[name]
    archive = getattr(coco_stuff, name)
    assert (archive.filename, archive.size, archive.sha256) == (filename, size, sha256)


def test_the_reference_quotes_the_same_values(shared_dir):
    reference = (shared_dir / "REFERENCE.md").read_text()
    for filename, _, sha256 in PUBLISHED.values():
        assert sha256 in reference and filename in reference


def test_the_164k_source_lists_them():
    """The source's archive lists hold these very objects, so their sha256 reach the download flow."""
    listed = {a.filename: a for a in (*coco_stuff.CocoStuff164k.archives,
                                      *coco_stuff.CocoStuff164k.annotation_archives)}
    for filename, _, sha256 in PUBLISHED.values():
        assert listed[filename].sha256 == sha256
