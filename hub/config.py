"""The hub's configuration: one TOML file validated by pydantic (``alpr-hub check-config``).

Relative paths are taken relative to the config file's folder. Keys live in files under
``keys_dir`` (created by ``alpr-hub init``), never inline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.config import ConfigError, read_toml_model


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HubSection(_Section):
    name: str = Field(default="hub", max_length=64, description="shown to nodes and in reports")
    data_dir: Path = Field(default=Path("var/hub"), description="database (SQLite), images, keys")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default SQLite at data_dir/hub.db; postgresql+psycopg://... to scale"
    )
    images: Literal["disk", "db"] = Field(default="disk", description="where plate crops and context images live")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_plates: bool = Field(default=False, description="full plates in DEBUG logs (debugging only)")

    def url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'hub.db'}"


class IngestSection(_Section):
    bind: str = Field(default="tcp://0.0.0.0:5555", pattern=r"^(tcp|ipc)://", description="ROUTER socket for nodes")
    public_endpoint: str = Field(
        default="tcp://127.0.0.1:5555", pattern=r"^(tcp|ipc)://", description="what enrolled nodes connect to"
    )


class DispatchSection(_Section):
    pub_bind: str = Field(default="tcp://127.0.0.1:5556", pattern=r"^(tcp|ipc)://", description="hits for CAD/console")
    webhooks: list[str] = Field(default_factory=list, description="URLs that get each hit as JSON (with retries)")
    bell_max_priority: int = Field(default=1, ge=0, le=9, description="the console rings for these priorities")


class RetentionSection(_Section):
    reads_days: int = Field(default=60, ge=1, le=3650, description="reads and images older than this are purged")
    hits_days: int = Field(default=365, ge=1, le=3650)
    hotlist_days: int | None = Field(
        default=365,
        ge=1,
        le=3650,
        description="hot-list entries are deleted this long after they were added or"
        " removed, unless their list sets its own period; None keeps them",
    )
    interval_s: float = Field(default=3600.0, gt=0, description="how often the retention job runs in `serve`")


class HubConfig(_Section):
    hub: HubSection = Field(default_factory=HubSection)
    ingest: IngestSection = Field(default_factory=IngestSection)
    dispatch: DispatchSection = Field(default_factory=DispatchSection)
    retention: RetentionSection = Field(default_factory=RetentionSection)

    @model_validator(mode="after")
    def _hits_outlive_reads(self) -> HubConfig:
        if self.retention.hits_days < self.retention.reads_days:
            raise ValueError("retention.hits_days must be >= retention.reads_days (a hit refers to its read)")
        return self

    @property
    def keys_dir(self) -> Path:
        return self.hub.data_dir / "keys"


HubConfigError = ConfigError
"""The edge's error: one ``key.path: message`` line per problem."""


def load_hub_config(path: Path | None) -> HubConfig:
    """The config at ``path`` (or all defaults when None), with relative paths resolved."""
    if path is None:
        return HubConfig()
    config = read_toml_model(path, HubConfig)
    data_dir = config.hub.data_dir if config.hub.data_dir.is_absolute() else path.parent / config.hub.data_dir
    return config.model_copy(update={"hub": config.hub.model_copy(update={"data_dir": data_dir})})
