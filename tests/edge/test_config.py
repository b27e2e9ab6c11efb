from pathlib import Path

import pytest
import zmq

from edge.cli import main
from edge.config import ConfigError, load_config
from edge.sealing import encode_key, generate_spool_keypair

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "edge.example.toml"


def valid_toml(tmp_path: Path) -> str:
    hub_public, _ = zmq.curve_keypair()
    node_public, node_secret = zmq.curve_keypair()
    spool_public, _ = generate_spool_keypair()
    return f"""
[node]
id = "car-12"
data_dir = "data"

[hub]
endpoint = "tcp://127.0.0.1:5555"
public_key = "{hub_public.decode()}"
spool_public_key = "{encode_key(spool_public)}"

[keys]
node_public_key = "{node_public.decode()}"
node_secret_key = "{node_secret.decode()}"

[[cameras]]
id = "front"
uri = "dir:frames"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(text)
    return path


def test_a_valid_config_loads_with_defaults_and_resolved_paths(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, valid_toml(tmp_path)))
    assert config.node.data_dir == tmp_path / "data"
    assert config.tracker.reread_interval_s == 600
    assert config.cameras[0].target_fps == 10.0


def test_each_problem_is_reported_as_key_path_and_message(tmp_path: Path) -> None:
    text = valid_toml(tmp_path).replace('id = "front"', 'id = "front"\ntarget_fps = -1\nbogus = 1')
    text = text.replace('endpoint = "tcp://127.0.0.1:5555"', 'endpoint = "http://nope"')
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    problems = err.value.problems
    assert any(p.startswith("cameras.0.target_fps: ") for p in problems)
    assert any(p.startswith("cameras.0.bogus: ") for p in problems)
    assert any(p.startswith("hub.endpoint: ") for p in problems)


def test_the_annotated_example_is_refused_until_its_placeholders_are_replaced() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(EXAMPLE)
    assert any("placeholder" in p for p in err.value.problems)
    assert all(":" in p for p in err.value.problems)


def test_check_config_command_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, valid_toml(tmp_path))
    assert main(["check-config", "--config", str(good)]) == 0
    assert "ok" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("[[cameras]]\nid = 'x'\n")
    assert main(["check-config", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "hub: Field required" in err and "keys: Field required" in err


def test_secrets_are_not_echoed_in_problems(tmp_path: Path) -> None:
    text = valid_toml(tmp_path).replace('node_secret_key = "', 'node_secret_key = "short-secret-value')
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert "short-secret-value" not in str(err.value)


def test_keygen_writes_a_private_secret_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "node.key"
    assert main(["keygen", "--out", str(out)]) == 0
    assert out.stat().st_mode & 0o777 == 0o600
    assert len(out.read_text().strip()) == 40
    assert "node_public_key" in capsys.readouterr().out
    assert main(["keygen", "--out", str(out)]) == 2  # never overwrite a key silently
