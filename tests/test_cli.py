"""The `vasrch` command line: train (and its alias run) end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vasrch.cli import build_parser
from vasrch.cli import train as train_command
from vasrch.cli.options import settle_config


def test_run_is_an_alias_of_train_and_the_config_is_an_argument_or_an_option():
    parser = build_parser()
    for command in ("train", "run"):
        for config in (["c.yaml"], ["--config", "c.yaml"], ["-c", "c.yaml"]):
            args = parser.parse_args([command, *config, "--set", "search.top_n=3"])
            settle_config(args)
            assert args.func is train_command.run and args.config == "c.yaml"
            assert args.set == ["search.top_n=3"]


def _vasrch(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vasrch.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


# `vasrch ARGS`, then the heavy packages it imported printed on stdout
HEAVY_AFTER_MAIN = """import sys
from vasrch.cli import main
status = main(sys.argv[1:])
print(*sorted({"tensorflow", "keras", "prefect"} & set(sys.modules)))
sys.exit(status)
"""


def test_user_mistakes_are_one_error_line_and_exit_2(tmp_path: Path):
    config = tmp_path / "config.yaml"
    config.write_text("catalog:\n  path: cat\nworkspace: ws\nworkspace: other\n")
    aliases = tmp_path / "aliases.yaml"
    aliases.write_text("catalog: &c\n  path: cat\nworkspace: ws\nx: *c\n")
    good = tmp_path / "good.yaml"
    good.write_text("catalog:\n  path: cat\nworkspace: ws\n")
    cases = [
        (["train", str(tmp_path / "nope.yaml")], "config file not found"),
        (["train", str(config)], "line 4: duplicate key 'workspace'"),
        (["train", str(aliases)], "YAML aliases"),
        (["train", str(good), "--set", "=5"], "--set expects key=value"),
        (["train", str(good), "--set", "search.probes=yes"], "yes/no value"),
        (["train", str(good), "--set", "search.top_n=" + "x" * 500], "xxx..."),
        (["train", str(good)], f"catalog.path: folder not found: {tmp_path / 'cat'}"),
        (["query", "x.jpg"], "give a config (CONFIG or --config CONFIG) or --workspace FOLDER"),
        (["runs", "prune", "--workspace", str(tmp_path)], "runs prune needs --keep"),
        (["runs", "promote", "--workspace", str(tmp_path)], "runs promote needs"),
    ]
    for args, fragment in cases:
        done = subprocess.run(
            [sys.executable, "-c", HEAVY_AFTER_MAIN, *args],
            capture_output=True,
            text=True,
            timeout=300,
        )
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2, (args, done.stderr)
        assert lines[0].startswith("vasrch: error: ") and fragment in done.stderr, (args, lines)
        assert len(lines) <= 3 and "Traceback" not in done.stderr, (args, lines)
        if args[0] == "train":  # the target: no Prefect or TensorFlow start-up first
            assert done.stdout.split() == [], args


def test_argument_mistakes_exit_2_and_version(tmp_path: Path):
    for args in (
        ["query", "x.jpg", "--workspace", str(tmp_path), "--probes", "0"],
        ["query-server", "--workspace", str(tmp_path), "--port", "99999"],
        ["serve", str(tmp_path / "c.yaml"), "--poll-interval", "0"],
        ["serve", str(tmp_path / "c.yaml"), "--with-query-service", "--query-port", "70000"],
        ["runs", "prune", "--workspace", str(tmp_path), "--keep", "-1"],
        ["extract"],
    ):
        done = _vasrch(*args)
        assert done.returncode == 2 and "Traceback" not in done.stderr, (args, done.stderr)
    done = _vasrch("--version")
    assert done.returncode == 0 and done.stdout.startswith("vasrch ")


def test_keep_0_prunes_all_but_latest(tmp_path: Path):
    done = _vasrch("runs", "prune", "--workspace", str(tmp_path), "--keep", "0")
    assert done.returncode == 0 and done.stdout.startswith("removed 0"), done.stderr


@pytest.mark.slow  # long: run with -m slow
def test_data_and_environment_errors_inside_a_flow_are_one_line(tmp_path: Path, demo_catalog):
    """An empty catalog and a workspace the process may not write: one line each, exit 2, no
    Prefect traceback."""
    empty = tmp_path / "empty"
    empty.mkdir()
    config = tmp_path / "empty.yaml"
    config.write_text(yaml.safe_dump({"catalog": {"path": str(empty)}, "workspace": "ws"}))
    done = _vasrch("train", str(config), "--no-progress")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"vasrch: error: no readable images found under {empty} (png, jpg, jpeg, gif, bmp, tiff, "
        "webp)"
    ]

    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    config = tmp_path / "readonly.yaml"
    config.write_text(
        yaml.safe_dump({"catalog": {"path": str(demo_catalog)}, "workspace": str(readonly)})
    )
    done = subprocess.run(
        # root ignores file modes; without these capabilities it does not
        [
            *("setpriv", "--bounding-set", "-dac_override,-dac_read_search"),
            *(sys.executable, "-m", "vasrch.cli", "extract", "-c", str(config), "--no-progress"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "Permission denied" in lines[0] and str(readonly) in lines[0]
