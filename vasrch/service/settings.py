"""The query service's settings: one checked record, which workers receive as JSON."""

from __future__ import annotations

import dataclasses
import json
import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vasrch.addresses import is_loopback
from vasrch.config import SearchConfig
from vasrch.workspace.store import WorkspaceStore

MAX_TOP_N = 1000
MAX_PROBES = 1_000_000
TOKEN_ENV = "VASRCH_TOKEN"


@dataclass(frozen=True)
class ServiceSettings:
    """Everything `vasrch query-server` is told: where the runs are, how to listen, the request
    defaults and limits, and who may ask. top_n/probes of None mean: the config's `search`
    section, then the run's calibration (vasrch.search.parameters). `instance` names this service
    (all its workers) in the workspace's service record."""

    workspace: Path
    run: str | None = None
    # A workspace in object storage: `workspace` is then its local cache, which follows the
    # store's LATEST (vasrch.workspace.remote_runs.follow_latest)
    workspace_url: str | None = None
    workspace_storage_options: dict[str, Any] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 8765
    top_n: int | None = None
    probes: int | None = None
    search: SearchConfig | None = None
    max_upload_bytes: int = 10_000_000
    max_query_pixels: int = 40_000_000
    decode_slots: int = 2
    decode_wait_s: float = 10.0
    reload_interval_s: float = 1.0
    token: str | None = None
    cors_origins: tuple[str, ...] = ()
    access_log: bool = True
    workers: int = 1
    allow_public: bool = False
    show_paths: bool = False  # answers carry each photo's file path
    model_threads: int = 1  # TensorFlow threads per inference (0: its default, every core)
    port_option: str = "--port"  # the option that sets `port`, named when the port is taken
    instance: str = field(default_factory=lambda: uuid.uuid4().hex)
    # Without a token: the key this service proves its identity with (see vasrch.service.record)
    secret: str = field(default_factory=lambda: secrets.token_hex(32), repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "workspace", Path(self.workspace))
        object.__setattr__(self, "cors_origins", tuple(self.cors_origins))
        object.__setattr__(self, "token", self.token or None)

    def check(self) -> None:
        """Raise ValueError naming the setting to fix when a value cannot work."""
        for name in ("max_upload_bytes", "max_query_pixels", "decode_slots", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.model_threads < 0:
            raise ValueError(f"model_threads must be 0 or more, got {self.model_threads}")
        for name in ("top_n", "probes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.top_n is not None and self.top_n > MAX_TOP_N:
            raise ValueError(f"top_n must be at most {MAX_TOP_N}, got {self.top_n}")
        if self.reload_interval_s <= 0:
            raise ValueError(f"reload_interval_s must be positive, got {self.reload_interval_s}")
        if self.decode_wait_s < 0:
            raise ValueError(f"decode_wait_s must not be negative, got {self.decode_wait_s}")
        if self.public_without_token and not self.allow_public:
            raise ValueError(
                f"--host {self.host} listens beyond this machine, and no token is set: set "
                f"{TOKEN_ENV} (or --token) so that requests need it, or pass --allow-public "
                "to serve without one (e.g. behind a proxy that authenticates)"
            )

    @property
    def store(self) -> WorkspaceStore | None:
        """The object store the workspace lives in, None for a local one."""
        if self.workspace_url is None:
            return None
        return WorkspaceStore(self.workspace_url, self.workspace_storage_options)

    @property
    def proof_key(self) -> str:
        """The key of this service's identity proofs: its token, else its secret."""
        return self.token or self.secret

    @property
    def public_without_token(self) -> bool:
        """True when the service listens beyond loopback and asks no one for a token."""
        return self.token is None and not is_loopback(self.host)

    def to_json(self) -> str:
        """These settings as JSON (for worker processes; see `from_json`)."""
        data = dataclasses.asdict(self)
        data["workspace"] = str(self.workspace)
        data["search"] = None if self.search is None else self.search.model_dump(mode="json")
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> ServiceSettings:
        """Settings written by `to_json`."""
        data = json.loads(text)
        if data["search"] is not None:
            data["search"] = SearchConfig.model_validate(data["search"])
        return cls(**data)
