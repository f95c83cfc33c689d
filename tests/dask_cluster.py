"""A real Dask cluster for tests: `dask scheduler` and `dask worker` processes on loopback, the
workers run as `nobody` with folders of their own and no access to the test's folders (they
share no disk with the flow, as machines of a real cluster do).

The venv's interpreter may live where `nobody` cannot go (pyenv under /root): the workers then
run the system's Python of the same version on the venv's site-packages (same ABI), which
`nobody` can read. Tests skip with the reason when neither runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import vasrch
from tests.object_store import free_ports

START_TIMEOUT_S = 180
NOBODY = ("nobody", "nogroup")
# Dropping these keeps a root-owned process from reading other users' folders anyway.
_SETPRIV = [
    "setpriv",
    f"--reuid={NOBODY[0]}",
    f"--regid={NOBODY[1]}",
    "--clear-groups",
    "--bounding-set",
    "-dac_override,-dac_read_search",
    "--",
]
_LAUNCH = (
    "import site, sys; site.addsitedir({site!r}); "
    "from distributed.cli.{module} import main; sys.argv[0] = {module!r}; main()"
)
_PASSED_ON = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "DO_NOT_TRACK",
    "PREFECT_SERVER_ANALYTICS_ENABLED",
    "PREFECT_LOGGING_LEVEL",
    "TF_CPP_MIN_LOG_LEVEL",
)


@dataclass(frozen=True)
class Cluster:
    """A running cluster: the scheduler's address, the workers' own folders and the process
    group of the scheduler and of each worker (its nanny and the worker process)."""

    address: str
    worker_folders: tuple[Path, ...]
    process_groups: tuple[int, ...] = ()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Every process of the cluster stopped (SIGSTOP) for the block and resumed after, so an
        idle cluster takes no CPU from another one being timed (its heartbeats, the nannies'
        memory polls, its workers' Prefect clients: up to a tenth of a core). A pause must stay
        under the scheduler's worker-ttl (5 minutes by default)."""
        for group in self.process_groups:
            os.killpg(group, signal.SIGSTOP)
        try:
            yield
        finally:
            for group in self.process_groups:
                os.killpg(group, signal.SIGCONT)


def _as_nobody(command: list[str], env: dict[str, str]) -> list[str]:
    return [*_SETPRIV, "env", "-i", *(f"{k}={v}" for k, v in env.items()), *command]


def _python_for_nobody(site_packages: str) -> str:
    """An interpreter `nobody` can run that imports this venv's packages; pytest.skip if none."""
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run workers as another user")
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    check = _LAUNCH.format(site=site_packages, module="dask_worker").split("; from")[0]
    for python in (sys.executable, shutil.which(version, path="/usr/bin:/bin")):
        if python is None:
            continue
        env = {"PYTHONPATH": site_packages, "HOME": "/nonexistent"}
        probe = _as_nobody([python, "-s", "-c", f"{check}; import vasrch, distributed"], env)
        if subprocess.run(probe, capture_output=True, timeout=120).returncode == 0:
            return python
    pytest.skip(f"no {version} that user nobody can run with {site_packages}")


def _private_folder(root: Path) -> Path:
    """A folder owned by nobody (home, temp and Dask working folder of one worker)."""
    for name in ("home", "tmp", "dask"):
        (root / name).mkdir(parents=True)
    for path in [root, *root.iterdir()]:
        shutil.chown(path, *NOBODY)
        path.chmod(0o700)
    return root


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def dask_cluster(workers: int, prefect_api_url: str, logs: Path) -> Iterator[Cluster]:
    """A scheduler and `workers` single-threaded worker processes (`--nworkers 1 --nthreads 1`)
    as nobody, each with its own HOME, TMPDIR and --local-directory in a fresh folder under the
    system's temp folder, reporting to `prefect_api_url`; `logs` gets their output. Each runs in
    a session of its own (Cluster.paused stops its process group)."""
    from distributed import Client

    site_packages = sysconfig.get_paths()["purelib"]
    python = _python_for_nobody(site_packages)
    # Dask's nanny starts each worker in a fresh interpreter, which reads no .pth file from
    # PYTHONPATH: an editable vasrch is found by its source folder
    import_path = os.pathsep.join([site_packages, str(Path(vasrch.__file__).parents[1])])
    (port,) = free_ports(1)
    address = f"tcp://127.0.0.1:{port}"
    logs.mkdir(parents=True, exist_ok=True)
    top = Path(tempfile.mkdtemp(prefix="vasrch-workers-"))
    top.chmod(0o755)
    processes: list[subprocess.Popen] = []
    try:
        scheduler = [
            sys.executable,
            "-c",
            _LAUNCH.format(site=site_packages, module="dask_scheduler"),
        ]
        scheduler += ["--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]
        with (logs / "scheduler.log").open("wb") as log:
            processes.append(
                subprocess.Popen(
                    scheduler, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
        folders = []
        for i in range(workers):
            folder = _private_folder(top / f"worker-{i}")
            folders.append(folder)
            env = {k: os.environ[k] for k in _PASSED_ON if k in os.environ}
            env |= {
                "PATH": "/usr/bin:/bin",
                "HOME": str(folder / "home"),
                "TMPDIR": str(folder / "tmp"),
                "PYTHONPATH": import_path,
                "PREFECT_HOME": str(folder / "home" / ".prefect"),
                "PREFECT_API_URL": prefect_api_url,
            }
            code = _LAUNCH.format(site=site_packages, module="dask_worker")
            command = [python, "-s", "-c", code, address, "--nworkers", "1", "--nthreads", "1"]
            command += ["--local-directory", str(folder / "dask"), "--no-dashboard"]
            command += ["--name", f"worker-{i}"]
            with (logs / f"worker-{i}.log").open("wb") as log:
                processes.append(
                    subprocess.Popen(
                        _as_nobody(command, env),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=folder / "home",
                        start_new_session=True,
                    )
                )
        with Client(address, timeout=START_TIMEOUT_S) as client:
            client.wait_for_workers(workers, timeout=START_TIMEOUT_S)
        yield Cluster(address, tuple(folders), tuple(p.pid for p in processes))
    finally:
        _stop(processes[::-1])
        shutil.rmtree(top, ignore_errors=True)
