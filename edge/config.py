"""The edge node's configuration: one TOML file, validated by pydantic at start-up.

Every field has a default and a description; ``alpr-edge check-config`` prints each problem as
``key.path: message``. An annotated example lives in ``deploy/edge.example.toml``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge.sealing import decode_key
from edge.uplink import BATCHES_IN_FLIGHT

Z85_KEY_LENGTH = 40
PLACEHOLDER_MARKERS = ("CHANGE", "REPLACE", "XXXX", "TODO")

ModelT = TypeVar("ModelT", bound=BaseModel)

Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_z85(value: str, what: str) -> str:
    if any(marker in value.upper() for marker in PLACEHOLDER_MARKERS):
        raise ValueError(f"{what} is a placeholder: generate one with `alpr-edge keygen` or `alpr-hub nodes enroll`")
    if len(value) != Z85_KEY_LENGTH:
        raise ValueError(f"{what} must be a {Z85_KEY_LENGTH}-character Z85 CurveZMQ key")
    return value


class NodeSection(_Section):
    id: Identifier = Field(default="edge-1", description="this node's name, as enrolled on the hub")
    data_dir: Path = Field(default=Path("var/edge"), description="spool, hot-list cache and status file")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_plates: bool = Field(default=False, description="full plates in DEBUG logs (debugging only)")
    status_interval_s: float = Field(default=2.0, gt=0, description="how often status.json is rewritten")


class HubSection(_Section):
    endpoint: str = Field(default="tcp://127.0.0.1:5555", pattern=r"^(tcp|ipc)://", description="hub ingest socket")
    public_key: str = Field(description="the hub's CurveZMQ public key (Z85); required")
    spool_public_key: str = Field(description="the hub's sealing key for spooled reads (base64); required")

    @field_validator("public_key")
    @classmethod
    def _z85(cls, value: str) -> str:
        return _check_z85(value, "hub.public_key")

    @field_validator("spool_public_key")
    @classmethod
    def _sealing_key(cls, value: str) -> str:
        decode_key(value)
        return value


class KeysSection(_Section):
    node_public_key: str = Field(description="this node's CurveZMQ public key (Z85); required")
    node_secret_key: str | None = Field(default=None, description="this node's CurveZMQ secret key (Z85), or ...")
    node_secret_key_file: Path | None = Field(default=None, description="... a file holding it (mode 0600)")

    @field_validator("node_public_key", "node_secret_key")
    @classmethod
    def _z85(cls, value: str | None) -> str | None:
        return None if value is None else _check_z85(value, "key")

    @model_validator(mode="after")
    def _one_secret(self) -> KeysSection:
        if (self.node_secret_key is None) == (self.node_secret_key_file is None):
            raise ValueError("give exactly one of node_secret_key and node_secret_key_file")
        return self

    def secret_key(self) -> str:
        if self.node_secret_key is not None:
            return self.node_secret_key
        assert self.node_secret_key_file is not None
        return _check_z85(self.node_secret_key_file.read_text(encoding="ascii").strip(), "node secret key file")


class RecognitionSection(_Section):
    backend: Literal["onnxruntime", "opencv"] = "onnxruntime"
    threads: int = Field(default=1, ge=0, le=64, description="inference threads (0 = all cores)")
    detector_long_side: int = Field(default=512, ge=128, le=2048, multiple_of=32)
    detector_threshold: float = Field(default=0.3, gt=0, lt=1)
    min_confidence: float = Field(default=0.2, ge=0, le=1, description="per-frame readings below are ignored")
    region_hint: str | None = Field(default=None, max_length=16, description="e.g. us-ca")


class CameraSection(_Section):
    id: Identifier
    uri: str = Field(min_length=1, description="device index or path, RTSP/HTTP URL, file, GStreamer pipeline, dir:")
    api: Literal["auto", "gstreamer", "v4l2", "ffmpeg"] = "auto"
    target_fps: float = Field(default=10.0, ge=0, description="0 = as fast as the source gives")
    roi: list[tuple[float, float]] | None = Field(default=None, description="polygon [[x, y], ...] in pixels")
    motion_gating: bool = False
    motion_threshold: float = Field(default=0.002, ge=0, lt=1)
    loop: bool = Field(default=False, description="restart a video file or folder at its end")
    realtime: bool = Field(default=True, description="play a video file at its own frame rate, as a camera would")
    heading_deg: float | None = Field(default=None, ge=0, lt=360, description="fixed cameras: direction they face")


class TrackerSection(_Section):
    lost_after_s: float = Field(default=1.0, gt=0)
    max_track_s: float = Field(default=10.0, gt=0)
    reread_interval_s: float = Field(default=600.0, ge=0, description="a parked car is read once per interval")
    min_observations: int = Field(default=2, ge=1)


class ImagesSection(_Section):
    crop_jpeg_quality: int = Field(default=90, ge=10, le=100)
    context: bool = Field(default=True, description="send a context image of the whole frame with each read")
    context_max_width: int = Field(default=1280, ge=160, le=4096)
    context_jpeg_quality: int = Field(default=70, ge=10, le=100)


class GpsSection(_Section):
    mode: Literal["gpsd", "fixed", "none"] = "gpsd"
    host: str = "127.0.0.1"
    port: int = Field(default=2947, ge=1, le=65535)
    stale_after_s: float = Field(default=5.0, gt=0)
    latitude: float | None = Field(default=None, ge=-90, le=90, description="fixed installations")
    longitude: float | None = Field(default=None, ge=-180, le=180)
    heading_deg: float | None = Field(default=None, ge=0, lt=360)
    altitude_m: float | None = None

    @model_validator(mode="after")
    def _fixed_needs_position(self) -> GpsSection:
        if self.mode == "fixed" and (self.latitude is None or self.longitude is None):
            raise ValueError("mode 'fixed' needs latitude and longitude")
        return self


class SpoolSection(_Section):
    max_mb: int = Field(default=2048, ge=1, description="oldest reads are evicted (and reported) beyond this")
    max_age_days: float = Field(default=30.0, gt=0)


class UplinkSection(_Section):
    batch_size: int = Field(default=64, ge=1, le=256)
    batches_in_flight: int = Field(default=BATCHES_IN_FLIGHT, ge=1, le=16, description="batches sent ahead of acks")
    ack_timeout_s: float = Field(default=5.0, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    heartbeat_interval_s: float = Field(default=10.0, gt=0)
    hotlist_poll_s: float = Field(default=300.0, gt=0)


class AlertsSection(_Section):
    enabled: bool = Field(default=True, description="match reads against the cached hot lists")
    bell: bool = True
    bell_max_priority: int = Field(default=1, ge=0, le=9)
    pub_endpoint: str | None = Field(
        default=None, description="ZeroMQ PUB for an in-car display, e.g. tcp://127.0.0.1:5601"
    )
    command: list[str] | None = Field(default=None, description="run with the alert JSON on stdin")
    webhook_url: str | None = Field(default=None, pattern=r"^https?://")
    cache_key_file: Path | None = Field(default=None, description="hot-list cache key; default data_dir/hotlist.key")


class EdgeConfig(_Section):
    node: NodeSection = Field(default_factory=NodeSection)
    hub: HubSection
    keys: KeysSection
    recognition: RecognitionSection = Field(default_factory=RecognitionSection)
    cameras: list[CameraSection] = Field(min_length=1, max_length=16)
    tracker: TrackerSection = Field(default_factory=TrackerSection)
    images: ImagesSection = Field(default_factory=ImagesSection)
    gps: GpsSection = Field(default_factory=GpsSection)
    spool: SpoolSection = Field(default_factory=SpoolSection)
    uplink: UplinkSection = Field(default_factory=UplinkSection)
    alerts: AlertsSection = Field(default_factory=AlertsSection)

    @model_validator(mode="after")
    def _unique_cameras(self) -> EdgeConfig:
        ids = [c.id for c in self.cameras]
        if len(set(ids)) != len(ids):
            raise ValueError("camera ids must be unique")
        return self


class ConfigError(ValueError):
    """The configuration cannot be used; ``problems`` holds one ``key.path: message`` line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def read_toml_model(path: Path, model: type[ModelT]) -> ModelT:
    """A TOML file validated as ``model``; every problem becomes one line of a :class:`ConfigError`."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc)) from None


def load_config(path: Path) -> EdgeConfig:
    """Read and validate a TOML file; relative paths in it are taken relative to the file's folder."""
    return _resolve_paths(read_toml_model(path, EdgeConfig), path.parent)


def validation_problems(exc: ValidationError) -> list[str]:
    """One ``key.path: message`` line per problem (input values are not echoed: they may be secrets)."""
    problems = []
    for err in exc.errors():
        location = ".".join(str(part) for part in err["loc"]) or "<root>"
        problems.append(f"{location}: {str(err['msg']).removeprefix('Value error, ')}")
    return problems


def _resolve_paths(config: EdgeConfig, base: Path) -> EdgeConfig:
    def resolve(p: Path | None) -> Path | None:
        return None if p is None or p.is_absolute() else base / p

    node = config.node.model_copy(update={"data_dir": resolve(config.node.data_dir) or config.node.data_dir})
    keys = config.keys.model_copy(
        update={"node_secret_key_file": resolve(config.keys.node_secret_key_file) or config.keys.node_secret_key_file}
    )
    alerts = config.alerts.model_copy(
        update={"cache_key_file": resolve(config.alerts.cache_key_file) or config.alerts.cache_key_file}
    )
    return config.model_copy(update={"node": node, "keys": keys, "alerts": alerts})


def write_secret(path: Path, text: str) -> None:
    """Create a file only its owner can read, for a secret key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(text + "\n")
