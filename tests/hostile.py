"""A hostile catalog built for real on disk: one of each file a scan or an extraction must
reject or warn about, next to the good photos.

``write_hostile_files`` adds the hostile entries to a catalog folder and returns what a run
must report: each rejected image id with a fragment of its reason and whether the next run
tries it again, and the folders it must warn about. The unreadable file and folder only stop
a reader without root's capabilities (see ``without_read_override``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.imagefactory import picture
from vasrch.features.extraction import ExtractSummary

NON_UTF8_NAME = b"caf\xe9.jpg"
ROOT = Path(__file__).resolve().parents[1]
EXTRACT = """
import json, resource, sys
from vasrch.orchestration.flows.extract import extract_flow
from tests.hostile import reported
result = reported(extract_flow(sys.argv[1]))
result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(result))
"""


@dataclass
class Expected:
    """What a run over the hostile catalog must report."""

    rejected: dict[str, tuple[str, bool]] = field(default_factory=dict)  # id -> (reason, retry)
    warned: list[str] = field(default_factory=list)  # folders, by the start of the warning


def without_read_override(cmd: list[str]) -> list[str]:
    """`cmd` run so that file permissions apply: as root, without the capabilities that bypass
    them (setpriv must be installed); as anyone else, unchanged."""
    if os.geteuid() != 0:
        return cmd
    if shutil.which("setpriv") is None:
        raise RuntimeError("running as root without setpriv: cannot make a file unreadable")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *cmd]


def _jpeg(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    picture(np.random.default_rng(seed)).save(path, "JPEG", quality=90)
    return path


def long_folder(root: Path, room: int = 100) -> Path:
    """A folder under `root` whose absolute path is `room` bytes short of PATH_MAX, made with
    relative steps (the kernel refuses longer absolute paths)."""
    limit = os.pathconf("/", "PC_PATH_MAX")
    here = os.open(".", os.O_RDONLY)
    path = str(root)
    try:
        os.chdir(root)
        while len(os.fsencode(path)) < limit - room:
            name = "d" * min(250, limit - room - len(os.fsencode(path)) - 1)
            os.mkdir(name)
            os.chdir(name)
            path += "/" + name
    finally:
        os.fchdir(here)
        os.close(here)
    return Path(path)


def write_hostile_files(root: Path, outside: Path, unreadable: bool = True) -> Expected:
    """Add one of each hostile entry to the catalog folder `root` (images outside it go to
    `outside`); return what a run must report about them. `unreadable` adds a file and a
    folder without read permission (root reads them anyway: see without_read_override)."""
    expected = Expected()
    root.mkdir(parents=True, exist_ok=True)
    good = _jpeg(outside / "source.jpg", 1).read_bytes()

    fd = os.open(os.path.join(os.fsencode(root), NON_UTF8_NAME), os.O_CREAT | os.O_WRONLY)
    os.write(fd, good)
    os.close(fd)
    expected.rejected["caf\\xe9.jpg"] = ("file name is not valid UTF-8", True)

    if unreadable:
        locked = root / "locked.jpg"
        locked.write_bytes(good[::-1] + b"locked")  # bytes no good photo has
        locked.chmod(0)
        expected.rejected["locked.jpg"] = ("cannot read file: Permission denied", True)
        private = root / "private"
        _jpeg(private / "hidden-away.jpg", 2)
        private.chmod(0)
        expected.warned.append("private: cannot read folder (Permission denied)")

    huge = root / "huge.jpg"
    huge.write_bytes(good)
    os.truncate(huge, 1_500_000_000)  # a valid JPEG plus sparse padding: 1.5 GB
    expected.rejected["huge.jpg"] = ("file too large", True)

    deep = long_folder(root)
    here = os.open(".", os.O_RDONLY)
    try:
        os.chdir(deep)
        with open("x" * 150 + ".jpg", "wb") as f:
            f.write(good)
    finally:
        os.fchdir(here)
        os.close(here)
    long_id = Path(os.path.relpath(deep, root), "x" * 150 + ".jpg").as_posix()
    expected.rejected[long_id] = ("path longer than the system allows", True)

    os.symlink(root / "nowhere.jpg", root / "dangling.jpg")
    expected.rejected["dangling.jpg"] = ("broken symlink", True)
    os.symlink("looping.jpg", root / "looping.jpg")
    expected.rejected["looping.jpg"] = ("symlink loop", True)
    os.symlink(root, root / "loop")
    expected.warned.append("loop: leads to a folder already scanned")
    os.symlink("/etc/passwd", root / "passwd.jpg")
    expected.rejected["passwd.jpg"] = ("outside the catalog: not followed", True)
    _jpeg(outside / "elsewhere" / "outside.jpg", 3)
    os.symlink(outside / "elsewhere", root / "elsewhere")
    expected.warned.append("elsewhere: symlink to")

    os.mkfifo(root / "pipe.jpg")
    expected.rejected["pipe.jpg"] = ("not a regular file but a FIFO", True)

    (root / "truncated.jpg").write_bytes(good[: len(good) // 2])
    expected.rejected["truncated.jpg"] = ("truncated image", False)
    return expected


def unlock(root: Path) -> None:
    """Make the unreadable folder removable again (so a temporary folder can be cleaned)."""
    if (root / "private").is_dir():
        (root / "private").chmod(0o755)


def reported(summary: ExtractSummary) -> dict[str, Any]:
    """The extract flow's summary as plain data: its counts, every rejected image (image_id,
    reason, retry) and the scan's folder warnings."""
    return {
        **summary.as_dict(),
        "rejections": summary.rejections.to_dict("records"),
        "warnings": summary.warnings,
    }


def assert_reported(result: dict[str, Any], expected: Expected) -> None:
    """The extract flow's `result` lists exactly the expected rejections (reason fragment and
    whether it is retried) and warns about exactly the expected folders."""
    got = {r["image_id"]: r for r in result["rejections"]}
    assert set(got) == set(expected.rejected), set(got) ^ set(expected.rejected)
    for image_id, (fragment, retry) in expected.rejected.items():
        assert fragment in got[image_id]["reason"], (image_id, got[image_id]["reason"])
        assert got[image_id]["retry"] is retry, (image_id, got[image_id])
    assert len(result["warnings"]) == len(expected.warned), result["warnings"]
    for start in expected.warned:
        assert any(w.startswith(start) for w in result["warnings"]), (start, result["warnings"])


def extract_without_read_override(config: Path, timeout: float) -> tuple[dict[str, Any], float]:
    """Run the extract flow on `config` in a process that file permissions stop (see
    without_read_override); return its result (plus peak_rss_mb) and its wall seconds."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_LOGGING_LEVEL": "ERROR"}
    command = without_read_override([sys.executable, "-c", EXTRACT, str(config)])
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise AssertionError(f"extract failed ({done.returncode}): {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), seconds
