import os
import shutil
from pathlib import Path

from PIL import Image

from vasrch.catalog import diff_catalog, iter_image_files, scan_catalog
from vasrch.hashing import sha256_file


def _img(path: Path, colour: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


def test_scan_ids_hashes_hidden_and_extensions(tmp_path: Path) -> None:
    _img(tmp_path / "a" / "one.PNG", (1, 2, 3))
    _img(tmp_path / "b" / "c" / "two.jpg", (4, 5, 6))
    _img(tmp_path / ".hidden" / "three.png", (7, 8, 9))
    _img(tmp_path / ".dot.png", (7, 8, 9))
    (tmp_path / "notes.txt").write_text("not an image")
    table = scan_catalog(tmp_path).table
    assert list(table["image_id"]) == ["a/one.PNG", "b/c/two.jpg"]
    assert table["sha256"][0] == sha256_file(tmp_path / "a" / "one.PNG")
    assert table["bytes"][1] == (tmp_path / "b" / "c" / "two.jpg").stat().st_size


def test_symlink_loop_survived(tmp_path: Path) -> None:
    _img(tmp_path / "x" / "p.png", (1, 1, 1))
    os.symlink(tmp_path, tmp_path / "x" / "loop")
    files = iter_image_files(tmp_path)
    assert [f.name for f in files] == ["p.png"]


def test_diff_new_changed_unchanged_gone(tmp_path: Path) -> None:
    _img(tmp_path / "keep.png", (1, 1, 1))
    _img(tmp_path / "edit.png", (2, 2, 2))
    _img(tmp_path / "drop.png", (3, 3, 3))
    first = scan_catalog(tmp_path).table
    (tmp_path / "drop.png").unlink()
    _img(tmp_path / "edit.png", (9, 9, 9))
    _img(tmp_path / "add.png", (4, 4, 4))
    second = scan_catalog(tmp_path, previous=first).table
    status = dict(zip(*diff_catalog(first, second)[["image_id", "status"]].T.values, strict=True))
    assert status == {
        "add.png": "new",
        "edit.png": "changed",
        "keep.png": "unchanged",
        "drop.png": "gone",
    }


def test_rescan_reuses_hash_only_when_file_unchanged(tmp_path: Path) -> None:
    p = _img(tmp_path / "a.png", (1, 1, 1))
    first = scan_catalog(tmp_path).table
    fake = first.assign(sha256="f" * 64)
    assert scan_catalog(tmp_path, previous=fake).table["sha256"][0] == "f" * 64
    shutil.copy(p, tmp_path / "tmp.png")
    _img(p, (5, 5, 5))
    assert scan_catalog(tmp_path, previous=fake).table["sha256"][0] == sha256_file(p)
