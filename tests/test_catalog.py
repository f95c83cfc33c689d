import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from tests.hostile import long_folder, without_read_override
from vasrch.catalog.scan import (
    ScanOptions,
    diff_catalog,
    iter_image_files,
    scan_catalog,
    write_catalog,
)
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


def _rejected(scan) -> dict[str, str]:
    return dict(zip(scan.rejected["image_id"], scan.rejected["reason"], strict=True))


def test_non_utf8_name_is_rejected_by_name_and_the_rest_scanned(tmp_path: Path) -> None:
    good = _img(tmp_path / "ok.png", (1, 2, 3))
    fd = os.open(os.path.join(os.fsencode(tmp_path), b"caf\xe9.jpg"), os.O_CREAT | os.O_WRONLY)
    os.write(fd, good.read_bytes())
    os.close(fd)
    scan = scan_catalog(tmp_path)
    assert list(scan.table["image_id"]) == ["ok.png"]
    assert _rejected(scan) == {
        "caf\\xe9.jpg": "file name is not valid UTF-8 (b'caf\\xe9.jpg'); rename the file"
    }
    write_catalog(scan.table, tmp_path / "out" / "table.parquet")
    write_catalog(scan.rejected, tmp_path / "out" / "rejected.parquet")  # strings Parquet takes


UNREADABLE_SCAN = """
import json, sys
from vasrch.catalog.scan import scan_catalog
scan = scan_catalog(sys.argv[1])
print(json.dumps({"ids": list(scan.table["image_id"]),
                  "rejected": dict(zip(scan.rejected["image_id"], scan.rejected["reason"])),
                  "warnings": scan.warnings}))
"""


def test_unreadable_file_is_rejected_and_unreadable_folder_warned(tmp_path: Path) -> None:
    _img(tmp_path / "ok.png", (1, 2, 3))
    os.chmod(_img(tmp_path / "locked.png", (4, 5, 6)), 0)
    _img(tmp_path / "private" / "inside.png", (7, 8, 9))
    os.chmod(tmp_path / "private", 0)
    try:
        done = subprocess.run(
            without_read_override([sys.executable, "-c", UNREADABLE_SCAN, str(tmp_path)]),
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
        )
    finally:
        os.chmod(tmp_path / "private", 0o755)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout)
    assert found["ids"] == ["ok.png"]
    assert found["rejected"] == {"locked.png": "cannot read file: Permission denied"}
    assert found["warnings"] == [
        "private: cannot read folder (Permission denied); its images are left out"
    ]


def test_symlinks_followed_inside_the_catalog_only(tmp_path: Path) -> None:
    root, outside = tmp_path / "cat", tmp_path / "outside"
    real = _img(root / "shoes" / "a.png", (1, 1, 1))
    _img(outside / "elsewhere" / "b.png", (2, 2, 2))
    os.symlink(real, root / "inner.png")
    os.symlink(root / "shoes", root / "alias")
    os.symlink(root, root / "shoes" / "loop")
    os.symlink(root / "gone.png", root / "dangling.png")
    os.symlink("self.png", root / "self.png")
    os.symlink(outside / "elsewhere" / "b.png", root / "escape.png")
    os.symlink(outside / "elsewhere", root / "escape-dir")
    scan = scan_catalog(root)
    assert list(scan.table["image_id"]) == ["inner.png", "shoes/a.png"]
    reasons = _rejected(scan)
    assert (
        reasons["dangling.png"] == f"broken symlink: its target {root / 'gone.png'} does not exist"
    )
    assert reasons["self.png"] == "symlink loop"
    assert reasons["escape.png"].startswith(
        f"symlink to {outside / 'elsewhere' / 'b.png'}, outside the catalog: not followed"
    )
    assert "catalog.follow_external_symlinks: true" in reasons["escape.png"]
    assert len(reasons) == 3
    warned = sorted(w.split(":")[0] for w in scan.warnings)
    assert warned == ["alias", "escape-dir", "shoes/loop"]
    followed = scan_catalog(root, options=ScanOptions(follow_external_symlinks=True))
    assert list(followed.table["image_id"]) == [
        "escape-dir/b.png",
        "escape.png",
        "inner.png",
        "shoes/a.png",
    ]


def test_fifo_long_path_and_oversized_file_are_rejected_unread(tmp_path: Path) -> None:
    good = _img(tmp_path / "ok.png", (1, 2, 3))
    os.mkfifo(tmp_path / "pipe.jpg")
    huge = tmp_path / "huge.jpg"
    shutil.copy(good, huge)
    os.truncate(huge, 1_500_000_000)  # a valid image plus sparse padding, 1.5 GB
    deep = long_folder(tmp_path)
    fd = os.open(".", os.O_RDONLY)
    try:
        os.chdir(deep)
        shutil.copy(good, "x" * 150 + ".png")
    finally:
        os.fchdir(fd)
        os.close(fd)
    scan = scan_catalog(tmp_path, options=ScanOptions(max_file_bytes=1_000_000))
    assert list(scan.table["image_id"]) == ["ok.png"]
    reasons = _rejected(scan)
    assert reasons.pop("pipe.jpg") == "not a regular file but a FIFO"
    assert reasons.pop("huge.jpg") == (
        "file too large: 1500000000 bytes > features.max_file_bytes 1000000; not read"
    )
    [(long_id, reason)] = reasons.items()
    assert long_id.endswith("x" * 150 + ".png")
    assert reason.startswith("path longer than the system allows (")


def test_rewrite_that_keeps_size_and_mtime_is_hashed_again(tmp_path: Path) -> None:
    p = _img(tmp_path / "a.png", (1, 1, 1))
    before = p.stat()
    first = scan_catalog(tmp_path).table
    time.sleep(0.05)  # ctime moves by the kernel's clock tick
    data = bytearray(p.read_bytes())
    data[-20] ^= 0xFF  # same size, other bytes
    p.write_bytes(bytes(data))
    os.utime(p, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert p.stat().st_size == before.st_size and p.stat().st_mtime_ns == before.st_mtime_ns
    second = scan_catalog(tmp_path, previous=first).table
    assert second["sha256"][0] == sha256_file(p) != first["sha256"][0]
    replaced = tmp_path / "new.png"
    replaced.write_bytes(p.read_bytes())
    os.utime(replaced, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(replaced, p)  # another inode, same size and mtime
    assert scan_catalog(tmp_path, previous=second.assign(sha256="f" * 64)).table["sha256"][0] != (
        "f" * 64
    )
