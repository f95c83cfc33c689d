"""Folders of a workspace's store that tasks on other machines write into and read from.

A Dask worker shares no disk with the flow: a task writes its files into a temporary folder of
its own and uploads them (`writing_into`); it reads a run's index from the store into a
temporary folder of its process, every file checked against its sha256 (`StoreFiles`); the flow
then gathers what the tasks wrote into its local cache (`StoreFolder.gather`). A worker's disk
only ever holds copies.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from vasrch.hashing import sha256_file
from vasrch.workspace.remote_runs import fetch_file, inside_folder
from vasrch.workspace.store import WorkspaceStore

# Index copies a worker process keeps (each run's index once; the oldest is dropped first).
_KEPT_COPIES = 2
_copies: OrderedDict[str, tempfile.TemporaryDirectory[str]] = OrderedDict()


def local_files(root: Path) -> dict[str, Path]:
    """The files under `root` by their POSIX path relative to it (dotfiles, i.e. temporary
    files, left out)."""
    if not root.is_dir():
        return {}
    return {
        p.relative_to(root).as_posix(): p
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


@dataclass(frozen=True)
class StoreFolder:
    """The objects under `prefix` (a key relative to the workspace, e.g. features/<fp>)."""

    store: WorkspaceStore
    prefix: str

    @classmethod
    def mirroring(cls, store: WorkspaceStore, workspace: Path, folder: Path) -> StoreFolder:
        """The store's folder that the local workspace's `folder` is a cache of."""
        return cls(store, Path(folder).relative_to(workspace).as_posix())

    def key(self, name: str) -> str:
        """The key of the file `name` (a relative POSIX path) in this folder."""
        return f"{self.prefix}/{name}"

    def names(self) -> list[str]:
        """The folder's files, relative to it, sorted."""
        start = len(self.prefix) + 1
        return [key[start:] for key in self.store.keys(self.prefix)]

    def upload_files(self, local: Path, skip: frozenset[str] = frozenset()) -> dict[str, str]:
        """Upload the files under `local` but those named in `skip`; their sha256s by name."""
        sent = {}
        for name, path in local_files(Path(local)).items():
            if name not in skip:
                sent[name] = sha256_file(path)
                self.store.upload(self.key(name), path, sent[name])
        return sent

    def gather(self, local: Path) -> int:
        """Download the folder's files that `local` lacks (each written atomically); how
        many. Files are named by what they hold, so one already there is the same."""
        have = local_files(Path(local))
        got = 0
        for name in self.names():
            if name in have:
                continue
            got += self.store.download(self.key(name), Path(local) / name)  # or pruned meanwhile
        return got


@contextlib.contextmanager
def writing_into(target: str | StoreFolder) -> Iterator[Path]:
    """A local folder to write into: `target` itself, or a temporary folder whose files are
    uploaded to the store folder `target` when the block succeeds."""
    if isinstance(target, str):
        yield Path(target)
        return
    with tempfile.TemporaryDirectory(prefix="vasrch-task-") as tmp:
        yield Path(tmp)
        target.upload_files(Path(tmp))


@dataclass(frozen=True)
class StoreFiles:
    """Files of a store folder named with their sha256s (a run's index, as its manifest or the
    flow that uploaded it lists them): what a task on another machine reads."""

    folder: StoreFolder
    files: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, folder: StoreFolder, files: Mapping[str, str]) -> StoreFiles:
        """The files `files` (name -> sha256) of `folder`."""
        return cls(folder, tuple(sorted(files.items())))

    @property
    def identity(self) -> str:
        """Names the same copy in any process: the store, the folder and every file's hash."""
        text = "\n".join([self.folder.store.url, self.folder.prefix, *map(" ".join, self.files)])
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def local_copy(self) -> Path:
        """A folder of this process holding the files, downloaded once (RunError when one is
        missing or does not match its sha256); the least recently used copies beyond the last
        two are deleted."""
        key = self.identity
        if key in _copies:
            _copies.move_to_end(key)
            return Path(_copies[key].name)
        folder = tempfile.TemporaryDirectory(prefix="vasrch-index-")
        try:
            for name, digest in self.files:
                target = Path(folder.name) / inside_folder(name)
                fetch_file(self.folder.store, self.folder.key(name), target, digest)
        except BaseException:
            folder.cleanup()
            raise
        _copies[key] = folder
        while len(_copies) > _KEPT_COPIES:
            _copies.popitem(last=False)[1].cleanup()
        return Path(folder.name)
