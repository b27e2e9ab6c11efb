"""The agency's ALPR policy settings: what the SB 34 policy template leaves to the agency, in one TOML file.

Each field names the template section it fills in (``429.x``). ``alpr-hub check-config`` validates the
file together with the hub's configuration; ``deploy/policy.example.toml`` is an annotated example.
Where the template gives a range or a recommendation, the bounds below enforce it.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge.config import read_toml_model

DEVICE_MODES = ("registered_device", "ip_allowlist")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgencySection(_Section):
    name: str = Field(default="Law Enforcement Agency", min_length=1, max_length=128)
    administrator_title: str = Field(
        default="ALPR Administrator",
        min_length=1,
        max_length=128,
        description="429.4: the administrator's classification",
    )
    training_provider: str = Field(default="the ALPR Administrator", max_length=128, description="429.5")
    authorized_purposes: str = Field(
        default="ALPR information assists the agency in its enforcement of federal and California laws: locating "
        "stolen and wanted vehicles, vehicles of missing and endangered persons, and vehicles connected with "
        "crimes under investigation.",
        min_length=1,
        max_length=4000,
        description="429.3: the agency's summary of the authorized purposes, shown on the public page",
    )
    policy_url: str | None = Field(
        default=None,
        max_length=400,
        pattern=r"^https://",
        description="1798.90.51(b): where the written usage and privacy policy is posted (linked from the public page)",
    )
    contact: str = Field(default="", max_length=400, description="who the public may ask about ALPR use")


class AccessSection(_Section):
    authorized_classifications: tuple[str, ...] = Field(
        default=("Police Officer", "Sergeant", "Detective", "Crime Analyst", "Dispatcher"),
        min_length=1,
        description="429.4: job classifications that may be approved for access to ALPR information",
    )
    training_valid_days: int = Field(default=365, ge=1, le=1095, description="429.5: training is repeated this often")
    approval_review_days: int = Field(default=365, ge=1, le=365, description="429.4/429.6: approval reviewed annually")
    inactivity_days: int = Field(default=365, ge=1, le=365, description="429.4: unused accounts are suspended")
    session_idle_minutes: int = Field(default=15, ge=1, le=240)
    session_max_hours: int = Field(default=8, ge=1, le=24)
    max_failed_logins: int = Field(default=5, ge=1, le=20, description="then the account is locked for a while")
    lockout_minutes: int = Field(default=15, ge=1, le=1440)
    device_mode: Literal["registered_device", "ip_allowlist"] = Field(
        default="registered_device",
        description="429.9: agency-issued devices only; a registered device key, or (weaker) an IP allowlist",
    )
    ip_allowlist: tuple[str, ...] = Field(default=(), description="CIDR blocks, for device_mode = ip_allowlist")

    @field_validator("authorized_classifications")
    @classmethod
    def _distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(item.strip() for item in value)
        if any(not item for item in cleaned) or len({c.casefold() for c in cleaned}) != len(cleaned):
            raise ValueError("classifications must be non-empty and distinct")
        return cleaned

    @model_validator(mode="after")
    def _allowlist_needed(self) -> AccessSection:
        if self.device_mode == "ip_allowlist" and not self.ip_allowlist:
            raise ValueError("device_mode = ip_allowlist needs at least one ip_allowlist entry")
        return self

    def is_authorized(self, classification: str) -> bool:
        return classification.strip().casefold() in {c.casefold() for c in self.authorized_classifications}


class PurposeSection(_Section):
    case_number_patterns: tuple[str, ...] = Field(
        default=(r"\d{2}-\d{4,8}", r"\d{4}-\d{4,8}"),
        min_length=1,
        description="429.4: a purpose names the investigation by case number (each regex matches a whole word)",
    )
    allow_suspect_last_name: bool = Field(default=True, description="429.4: or by the suspect's last name")

    @field_validator("case_number_patterns")
    @classmethod
    def _compiles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"case number pattern {pattern!r} is not a regular expression: {exc}") from exc
            if compiled.fullmatch(""):
                raise ValueError(f"case number pattern {pattern!r} matches an empty string")
        return value


class RetentionSection(_Section):
    reads_days: int = Field(default=60, ge=1, le=183, description="429.9: 60 days to 6 months suggested")
    hits_days: int = Field(default=365, ge=1, le=1095, description="hits keep their read's data; >= reads_days")
    hotlist_days: int = Field(default=365, ge=1, le=1095, description="429.9: hot lists deleted after this")
    downloads_destroy_days: int = Field(
        default=30, ge=1, le=1095, description="429.9: downloaded, printed or shared ALPR information destroyed within"
    )
    access_log_days: int = Field(default=1095, ge=365, le=3650, description="429.10: access records (3 years)")
    audit_documents_days: int = Field(default=1095, ge=365, le=3650, description="429.8: audit documents (3 years)")
    share_records_days: int = Field(default=1095, ge=365, le=3650, description="429.7: records of transfers")

    @model_validator(mode="after")
    def _hits_outlive_reads(self) -> RetentionSection:
        if self.hits_days < self.reads_days:
            raise ValueError("hits_days must be >= reads_days (a hit refers to its read)")
        return self


class AuditSection(_Section):
    period_days: int = Field(default=365, ge=1, le=365, description="429.8: audits at least annually")
    performed_by: str = Field(default="the agency's auditor", max_length=128, description="429.8: who audits")
    approved_by: str = Field(default="the ALPR Administrator", max_length=128, description="429.8: who approves")


class PolicySettings(_Section):
    agency: AgencySection = Field(default_factory=AgencySection)
    access: AccessSection = Field(default_factory=AccessSection)
    purpose: PurposeSection = Field(default_factory=PurposeSection)
    retention: RetentionSection = Field(default_factory=RetentionSection)
    audit: AuditSection = Field(default_factory=AuditSection)

    @property
    def training_valid(self) -> timedelta:
        return timedelta(days=self.access.training_valid_days)

    @property
    def approval_valid(self) -> timedelta:
        return timedelta(days=self.access.approval_review_days)


def load_policy(path: Path | None) -> PolicySettings:
    """The policy at ``path``, or the defaults when None; problems raise ``ConfigError`` (one line each)."""
    return PolicySettings() if path is None else read_toml_model(path, PolicySettings)
