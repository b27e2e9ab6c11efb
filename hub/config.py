"""The hub's configuration: one TOML file validated by pydantic (``alpr-hub check-config``).

Relative paths are taken relative to the config file's folder. Keys live in files under
``keys_dir`` (created by ``alpr-hub init``), never inline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from edge.config import ConfigError, read_toml_model
from hub.access.policy import PolicySettings, load_policy
from hub.access.policy import RetentionSection as PolicyRetention


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
    bell_max_priority: int = Field(
        default=1,
        ge=0,
        le=9,
        description="the console and the web hit board ring for these priorities (the board even when muted)",
    )


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


class ApiSection(_Section):
    enabled: bool = Field(default=True, description="serve the HTTP API (search, users, audits) in `serve`")
    bind: str = Field(default="127.0.0.1:8443", pattern=r"^[^:]+:\d{1,5}$", description="host:port")
    tls_cert: Path | None = Field(default=None, description="PEM certificate; without one, serve plain HTTP behind TLS")
    tls_key: Path | None = Field(default=None, description="PEM private key for tls_cert")

    @model_validator(mode="after")
    def _pair(self) -> ApiSection:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        return self

    @property
    def host(self) -> str:
        return self.bind.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.bind.rsplit(":", 1)[1])


class ComplianceSection(_Section):
    policy_file: Path | None = Field(
        default=None,
        description="the agency's ALPR policy settings (deploy/policy.example.toml); its retention periods"
        " replace [retention]'s",
    )


class HubConfig(_Section):
    hub: HubSection = Field(default_factory=HubSection)
    ingest: IngestSection = Field(default_factory=IngestSection)
    dispatch: DispatchSection = Field(default_factory=DispatchSection)
    retention: RetentionSection = Field(default_factory=RetentionSection)
    api: ApiSection = Field(default_factory=ApiSection)
    compliance: ComplianceSection = Field(default_factory=ComplianceSection)
    _policy: PolicySettings | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _hits_outlive_reads(self) -> HubConfig:
        if self.retention.hits_days < self.retention.reads_days:
            raise ValueError("retention.hits_days must be >= retention.reads_days (a hit refers to its read)")
        return self

    @property
    def keys_dir(self) -> Path:
        return self.hub.data_dir / "keys"

    @property
    def policy(self) -> PolicySettings:
        """The policy in force: the policy file's, or one built from [retention] when there is none."""
        if self._policy is None:
            self._policy = _policy_from_retention(self.retention)
        return self._policy


HubConfigError = ConfigError
"""The edge's error: one ``key.path: message`` line per problem."""


def load_hub_config(path: Path | None) -> HubConfig:
    """The config at ``path`` (or all defaults when None), with relative paths resolved and the policy loaded."""
    if path is None:
        config = HubConfig()
        config._policy = _policy_from_retention(config.retention)
        return config
    config = read_toml_model(path, HubConfig)
    base = path.parent
    config = config.model_copy(update={
        "hub": config.hub.model_copy(update={"data_dir": _resolve(base, config.hub.data_dir)}),
        "api": config.api.model_copy(update={"tls_cert": _resolve(base, config.api.tls_cert),
                                             "tls_key": _resolve(base, config.api.tls_key)}),
    })  # fmt: skip
    policy_file = _resolve(base, config.compliance.policy_file)
    if policy_file is None:  # no policy file: [retention] must still keep within the policy's bounds
        config._policy = _policy_from_retention(config.retention)
        return config
    try:
        policy = load_policy(policy_file)
    except ConfigError as exc:
        raise ConfigError([f"{policy_file.name}: {problem}" for problem in exc.problems]) from None
    _check_no_conflict(config.retention, policy)
    retention = config.retention.model_copy(update={
        "reads_days": policy.retention.reads_days, "hits_days": policy.retention.hits_days,
        "hotlist_days": policy.retention.hotlist_days,
    })  # fmt: skip
    config = config.model_copy(update={"retention": retention,
                                       "compliance": ComplianceSection(policy_file=policy_file)})  # fmt: skip
    config._policy = policy
    return config


def _resolve(base: Path, path: Path | None) -> Path | None:
    if path is None or path.is_absolute():
        return path
    return base / path


def _check_no_conflict(retention: RetentionSection, policy: PolicySettings) -> None:
    problems = [
        f"retention.{name}: {getattr(retention, name)} here but {getattr(policy.retention, name)} in the policy file;"
        " the policy file decides, remove it here"
        for name in ("reads_days", "hits_days", "hotlist_days")
        if name in retention.model_fields_set and getattr(retention, name) != getattr(policy.retention, name)
    ]
    if problems:
        raise ConfigError(problems)


def _policy_from_retention(retention: RetentionSection) -> PolicySettings:
    try:
        days = {"reads_days": retention.reads_days, "hits_days": retention.hits_days}
        if retention.hotlist_days is not None:
            days["hotlist_days"] = retention.hotlist_days
        return PolicySettings(retention=PolicyRetention(**days))
    except ValidationError as exc:
        raise ConfigError([f"retention.{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (policy bounds, 429.9)"
                           for e in exc.errors()]) from None  # fmt: skip
