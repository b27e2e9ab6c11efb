"""The policy file: validated by `alpr-hub check-config`, bounded where the template sets bounds, and the
source of the hub's retention periods."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.access.policy import PolicySettings, PurposeSection, load_policy
from hub.access.purpose import check_purpose
from hub.cli import main as hub_main
from hub.config import HubConfigError, load_hub_config

EXAMPLE = Path(__file__).resolve().parents[3] / "deploy" / "policy.example.toml"


def write_hub(tmp_path: Path, extra: str = "", policy: str | None = None) -> Path:
    if policy is not None:
        (tmp_path / "policy.toml").write_text(policy, encoding="utf-8")
        extra += '\n[compliance]\npolicy_file = "policy.toml"\n'
    config = tmp_path / "hub.toml"
    config.write_text(f'[hub]\ndata_dir = "data"\n\n[api]\nenabled = false\n{extra}', encoding="utf-8")
    return config


def test_the_example_policy_is_valid_and_documents_every_setting() -> None:
    policy = load_policy(EXAMPLE)
    assert policy.agency.administrator_title.startswith("Lieutenant")
    text = EXAMPLE.read_text(encoding="utf-8")
    for section in ("agency", "access", "purpose", "retention", "audit"):
        for name in getattr(PolicySettings.model_fields[section].annotation, "model_fields", {}):
            assert f"{name} =" in text, f"{section}.{name} is not in the example"


def test_check_config_validates_the_policy_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_hub(tmp_path, policy=EXAMPLE.read_text(encoding="utf-8"))
    assert hub_main(["--config", str(config), "init"]) == 0
    assert hub_main(["--config", str(config), "check-config"]) == 0
    out = capsys.readouterr().out
    assert "policy.toml" in out and "reads kept 60 days" in out and "Crime Analyst" in out


@pytest.mark.parametrize(
    ("policy", "problem"),
    [
        ("[retention]\nreads_days = 365\n", "policy.toml: retention.reads_days"),  # more than 6 months
        ("[retention]\naccess_log_days = 90\n", "policy.toml: retention.access_log_days"),
        ("[access]\napproval_review_days = 500\n", "policy.toml: access.approval_review_days"),
        ('[access]\ndevice_mode = "ip_allowlist"\n', "needs at least one ip_allowlist entry"),
        ("[purpose]\ncase_number_patterns = ['(']\n", "is not a regular expression"),
        ("[purpose]\ncase_number_patterns = ['\\d*']\n", "matches an empty string"),
        ("[access]\nauthorized_classifications = []\n", "policy.toml: access.authorized_classifications"),
        ('[agency]\nadministrator = "x"\n', "policy.toml: agency.administrator"),
        ('[agency]\npolicy_url = "http://police.example.gov/alpr"\n', "policy.toml: agency.policy_url"),  # not https
        ('[agency]\npolicy_url = "javascript:alert(1)"\n', "policy.toml: agency.policy_url"),  # linked from a page
    ],
)
def test_check_config_names_each_policy_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], policy: str, problem: str
) -> None:
    config = write_hub(tmp_path, policy=policy)
    assert hub_main(["--config", str(config), "check-config"]) == 2
    assert problem in capsys.readouterr().err


def test_the_policy_file_decides_retention(tmp_path: Path) -> None:
    config = load_hub_config(write_hub(tmp_path, policy="[retention]\nreads_days = 90\nhotlist_days = 30\n"))
    assert (config.retention.reads_days, config.retention.hotlist_days) == (90, 30)
    assert config.policy.retention.reads_days == 90
    with pytest.raises(HubConfigError, match="the policy file decides"):
        load_hub_config(write_hub(tmp_path, "[retention]\nreads_days = 30\n", policy="[retention]\nreads_days = 90\n"))


def test_without_a_policy_file_retention_still_keeps_within_the_policy_bounds(tmp_path: Path) -> None:
    assert load_hub_config(write_hub(tmp_path, "[retention]\nreads_days = 120\n")).policy.retention.reads_days == 120
    with pytest.raises(HubConfigError, match="retention.reads_days"):
        load_hub_config(write_hub(tmp_path, "[retention]\nreads_days = 400\nhits_days = 400\n"))


def test_case_number_patterns_are_the_agencys_own() -> None:
    rules = PurposeSection(case_number_patterns=(r"SD\d{2}-\d{6}",), allow_suspect_last_name=False)
    assert check_purpose("SD26-004512 burglary", rules).ok
    assert not check_purpose("26-004512", rules).ok  # another agency's format
    refused = check_purpose("suspect Okafor", rules)
    assert not refused.ok and "suspect" not in refused.reason  # the agency does not allow last names
    assert not check_purpose("XSD26-004512", rules).ok  # whole words only
