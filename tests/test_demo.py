import json
import time

import numpy as np
import pytest
from PIL import Image

from vasrch.catalog.demo import CLASSES, MARKER, demo_image_paths, generate_demo_catalog


def files_under(folder):
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_class_folders_counts_formats_and_marker(tmp_path):
    assert generate_demo_catalog(tmp_path, per_class=6, seed=1, size=64) == 48
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == sorted(CLASSES)
    for name in CLASSES:
        images = sorted((tmp_path / name).iterdir())
        assert len(images) == 6
        assert {p.suffix for p in images} == {".jpg", ".png"}
        for path in images:
            with Image.open(path) as im:
                assert (im.format, im.mode, im.size) == (
                    "PNG" if path.suffix == ".png" else "JPEG",
                    "RGB",
                    (64, 64),
                )
    marker = json.loads((tmp_path / MARKER).read_text())
    assert (marker["per_class"], marker["seed"], marker["size"], marker["count"]) == (6, 1, 64, 48)
    assert [p for p in files_under(tmp_path) if p.name.startswith(".")] == [tmp_path / MARKER]


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        generate_demo_catalog(tmp_path / name, per_class=3, seed=seed, size=64)
    a, b, c = (demo_image_paths(tmp_path / n, 3) for n in "abc")
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b, strict=True))
    assert not any(x.read_bytes() == z.read_bytes() for x, z in zip(a, c, strict=True))


def test_second_call_does_nothing(tmp_path):
    generate_demo_catalog(tmp_path, per_class=4, size=64)
    before = {p: p.stat().st_mtime_ns for p in files_under(tmp_path)}
    time.sleep(0.01)
    assert generate_demo_catalog(tmp_path, per_class=4, size=64) == 32
    assert {p: p.stat().st_mtime_ns for p in files_under(tmp_path)} == before


def test_interrupted_generation_is_completed(tmp_path):
    generate_demo_catalog(tmp_path / "whole", per_class=4, size=64)
    broken = tmp_path / "broken"
    generate_demo_catalog(broken, per_class=4, size=64)
    # what a kill leaves: no marker, some images not written yet, a temporary file
    (broken / MARKER).unlink()
    for path in demo_image_paths(broken, 4)[10:]:
        path.unlink()
    (broken / "shoe" / ".shoe_001.jpg.999.tmp").write_bytes(b"half")
    assert generate_demo_catalog(broken, per_class=4, size=64) == 32
    for good, fixed in zip(
        demo_image_paths(tmp_path / "whole", 4), demo_image_paths(broken, 4), strict=True
    ):
        assert good.read_bytes() == fixed.read_bytes()
    assert (broken / MARKER).read_bytes() == (tmp_path / "whole" / MARKER).read_bytes()


def test_a_deleted_image_is_restored(tmp_path):
    generate_demo_catalog(tmp_path, per_class=2, size=64)
    victim = demo_image_paths(tmp_path, 2)[5]
    original = victim.read_bytes()
    victim.unlink()
    generate_demo_catalog(tmp_path, per_class=2, size=64)
    assert victim.read_bytes() == original


def test_refuses_other_parameters_and_foreign_folders(tmp_path):
    generate_demo_catalog(tmp_path / "demo", per_class=2, size=64)
    with pytest.raises(ValueError, match="same parameters"):
        generate_demo_catalog(tmp_path / "demo", per_class=2, seed=5, size=64)
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"not yours")
    with pytest.raises(ValueError, match="not part of a demo catalog"):
        generate_demo_catalog(mine, per_class=2, size=64)
    assert files_under(mine) == [mine / "holiday.jpg"]


@pytest.mark.parametrize("kwargs", [{"per_class": 0}, {"size": 16}, {"seed": -1}])
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        generate_demo_catalog(tmp_path, **kwargs)


def simple_features(path):
    """Colour histogram (4x4x4 bins) beside a standardised 16x16 grayscale thumbnail."""
    with Image.open(path) as im:
        rgb = im.convert("RGB")
        small = np.asarray(rgb.resize((32, 32), Image.BILINEAR)).reshape(-1, 3) // 64
        grey = np.asarray(rgb.convert("L").resize((16, 16), Image.BILINEAR), np.float64).ravel()
    hist = np.bincount(small[:, 0] * 16 + small[:, 1] * 4 + small[:, 2], minlength=64)
    grey = (grey - grey.mean()) / (grey.std() + 1e-9) / np.sqrt(grey.size)
    return np.concatenate([hist / hist.sum(), 0.5 * grey])


def test_default_catalog_is_quick_and_its_classes_separate(tmp_path):
    start = time.perf_counter()
    count = generate_demo_catalog(tmp_path)
    elapsed = time.perf_counter() - start
    print(f"demo catalog: {count} images in {elapsed:.1f} s")
    assert count == 320
    paths = demo_image_paths(tmp_path, 40)
    labels = np.array([p.parent.name for p in paths])
    features = np.stack([simple_features(p) for p in paths])
    dist = ((features[:, None, :] - features[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    same_class = labels[dist.argmin(axis=1)] == labels
    print(f"nearest neighbour in the same class: {same_class.mean():.3f}")
    assert same_class.mean() > 0.7
    # and the images within a class are not copies of each other
    assert len({p.read_bytes() for p in paths}) == count
