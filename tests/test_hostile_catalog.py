"""A catalog of good photos with one of each hostile file: every good photo is extracted, every
bad one reported with its reason, and a second run adds nothing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.configs import write_config
from tests.hostile import (
    assert_reported,
    extract_without_read_override,
    reported,
    unlock,
    write_hostile_files,
)
from tests.imagefactory import picture, write_good_images
from vasrch.catalog.scan import scan_catalog
from vasrch.cli import main
from vasrch.features.backbones import BackboneSpec, fingerprint
from vasrch.features.extraction import cache_dir_for, load_vectors
from vasrch.orchestration.flows.extract import extract_flow


def _config(tmp_path: Path, features: dict) -> Path:
    config = {"catalog": {"path": str(tmp_path / "catalog")}, "workspace": "ws"}
    return write_config(tmp_path, {**config, "features": features})


def test_every_good_photo_extracted_every_bad_one_reported(tmp_path: Path, capsys) -> None:
    good = write_good_images(tmp_path / "catalog" / "good", n=12)
    expected = write_hostile_files(
        tmp_path / "catalog", tmp_path / "outside", unreadable=os.geteuid() != 0
    )
    features = {"weights": "none", "image_size": 32}
    config = _config(tmp_path, features)
    first = reported(extract_flow(str(config)))
    assert_reported(first, expected)
    assert (first["seen"], first["new"]) == (len(good) + len(expected.rejected), len(good))
    cache = cache_dir_for(tmp_path / "ws", fingerprint(BackboneSpec(**features)))
    ids, _ = load_vectors(cache, scan_catalog(tmp_path / "catalog").table)
    assert sorted(ids) == sorted(f"good/{p.name}" for p in good)

    second = reported(extract_flow(str(config)))
    assert_reported(second, expected)
    assert (second["new"], second["reused"]) == (0, len(good))

    assert main(["extract", "--no-progress", "-c", str(config)]) == 0
    shown = capsys.readouterr()
    for image_id in expected.rejected:
        assert image_id in shown.out
    assert "kept rejected" in shown.out and "retried" in shown.out
    assert "vasrch: warning: loop: leads to a folder already scanned" in shown.err


@pytest.mark.slow
def test_thousand_photos_and_every_hostile_case_in_one_run(tmp_path: Path) -> None:
    """The issue's target, on 1,000 generated photos with the default backbone, the extract
    flow run without root's read override so that unreadable files are unreadable."""
    rng = np.random.default_rng(0)
    for i in range(1000):
        path = tmp_path / "catalog" / f"class{i % 10}" / f"photo{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        picture(rng, 320, 240).save(path, quality=90)
    expected = write_hostile_files(tmp_path / "catalog", tmp_path / "outside")
    config = _config(tmp_path, {})
    try:
        first, _ = extract_without_read_override(config, timeout=1800)
        second, _ = extract_without_read_override(config, timeout=600)
    finally:
        unlock(tmp_path / "catalog")
    assert_reported(first, expected)
    assert (first["new"], first["rejected"]) == (1000, len(expected.rejected))
    assert_reported(second, expected)
    assert (second["new"], second["reused"]) == (0, 1000)
