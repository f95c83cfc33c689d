"""The `vasrch` command line: train (and its alias run) end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from vasrch import runs
from vasrch.cli import build_parser, cmd_train


def test_run_is_an_alias_of_train():
    parser = build_parser()
    for command in ("train", "run"):
        args = parser.parse_args([command, "c.yaml", "--set", "search.top_n=3"])
        assert args.func is cmd_train and args.config == "c.yaml"
        assert args.set == ["search.top_n=3"]


def test_vasrch_train_publishes_a_run(tmp_path: Path, demo_catalog: Path):
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "catalog": {"path": str(demo_catalog)},
                "workspace": "ws",
                "clustering": {"num_clusters": 4},
                "evaluation": {"sample": 16},
                "bulk": {"enabled": False},
            }
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "vasrch.cli", "train", str(config), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    latest = runs.latest_run_id(tmp_path / "ws")
    assert latest is not None and f"run: {tmp_path / 'ws' / 'runs' / latest}" in done.stdout
    assert "chosen k: 4" in done.stdout
