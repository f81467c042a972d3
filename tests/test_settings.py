"""Settings precedence, config-file validation and secret masking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from script_ec2.errors import ConfigError
from script_ec2.settings import SPECS, mask_url, resolve


def test_defaults_live_under_one_data_dir(tmp_path: Path) -> None:
    s = resolve(env={"SCRIPT_EC2_DATA_DIR": str(tmp_path)})
    assert s.database_url == f"sqlite:///{tmp_path / 'script-ec2.db'}"
    assert s.data_uri == str(tmp_path / "buckets" / "private")
    assert s.public_uri == str(tmp_path / "buckets" / "public")
    assert s.cache_dir == tmp_path / "cache"
    assert s.models_dir == str(tmp_path / "models")
    assert s.sources["data_dir"] == "env SCRIPT_EC2_DATA_DIR"
    assert s.sources["database_url"] == "default"


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('data_uri = "/from/file"\npublic_uri = "/pub/file"\ncache_dir = "/cache/file"\n')
    env = {"SCRIPT_EC2_DATA_URI": "/from/env", "SCRIPT_EC2_PUBLIC_URI": "/pub/env"}
    s = resolve(flags={"data_uri": "/from/flag"}, env=env, config_file=cfg)
    assert s.data_uri == "/from/flag"
    assert s.public_uri == "/pub/env"
    assert s.cache_dir == Path("/cache/file")
    assert s.sources["data_uri"] == "flag"
    assert s.sources["public_uri"] == "env SCRIPT_EC2_PUBLIC_URI"
    assert s.sources["cache_dir"] == f"config {cfg}"
    assert s.sources["log_format"] == "default"


def test_config_file_from_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("quiet = true\ns3_max_attempts = 3\n")
    s = resolve(env={"SCRIPT_EC2_CONFIG": str(cfg)})
    assert s.quiet is True and s.s3_max_attempts == 3
    assert s.config_file == cfg


def test_unknown_config_key_names_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('databse_url = "sqlite://"\n')
    with pytest.raises(ConfigError, match="unknown key 'databse_url'"):
        resolve(env={}, config_file=cfg)


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("quiet = 3", "'quiet' must be a boolean"),
        ('s3_max_attempts = "x"', "'s3_max_attempts' must be an integer"),
        ("s3_max_attempts = 0", "'s3_max_attempts' must be at least 1"),
        ('log_format = "xml"', "'log_format' must be one of text, json"),
        ("data_uri = 5", "'data_uri' must be a string"),
    ],
)
def test_wrong_type_in_config_names_the_key(tmp_path: Path, line: str, needle: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(line + "\n")
    with pytest.raises(ConfigError, match=needle):
        resolve(env={}, config_file=cfg)


def test_wrong_type_in_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="environment SCRIPT_EC2_QUIET"):
        resolve(env={"SCRIPT_EC2_QUIET": "perhaps"})


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("this is = = not toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        resolve(env={}, config_file=bad)
    with pytest.raises(ConfigError, match="does not exist"):
        resolve(env={}, config_file=tmp_path / "absent.toml")


def test_every_setting_has_env_and_help() -> None:
    for spec in SPECS:
        assert spec.env.startswith("SCRIPT_EC2_")
        assert spec.help


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://user:s3cret@db.example:5432/x", "postgresql://user:***@db.example:5432/x"),
        ("amqp://guest:guest@127.0.0.1:5672//", "amqp://guest:***@127.0.0.1:5672//"),
        ("postgresql+psycopg2://u@h/x", "postgresql+psycopg2://u@h/x"),
        ("sqlite:////tmp/a.db", "sqlite:////tmp/a.db"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@given(
    st.text(
        # Only ASCII whitespace ends a URL in free text; any other character is password.
        alphabet=st.characters(blacklist_characters="@/ \n\t\r\x0b\x0c"),
        min_size=1,
        max_size=30,
    )
)
@example(password="\u1680")  # Unicode whitespace that CI's run once found unmasked
@example(password="pass\u3000word\x85\xa0")
def test_mask_url_never_leaks_a_password(password: str) -> None:
    url = f"postgresql://admin:{password}@rds.internal:5432/script"
    assert mask_url(url) == "postgresql://admin:***@rds.internal:5432/script"


def test_config_show_masks_and_reports_sources(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = "postgresql://ops:hunter2pass@127.0.0.1:5432/script"
    r = cli("--database-url", url, "config", "show", "--format", "json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["database_url"] == {
        "value": "postgresql://ops:***@127.0.0.1:5432/script",
        "source": "flag",
    }
    assert "hunter2pass" not in r.stdout + r.stderr
    assert data["data_dir"]["source"] == "env SCRIPT_EC2_DATA_DIR"
    table = cli("--database-url", url, "config", "show")
    assert table.exit_code == 0 and "hunter2pass" not in table.stdout
    assert "database_url" in table.stdout


def test_config_show_unknown_key_exits_2(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "c.toml"
    cfg.write_text('bogus = "x"\n')
    r = cli("--config", str(cfg), "config", "show")
    assert r.exit_code == 2
    assert r.stderr.startswith("Error: ") and "unknown key 'bogus'" in r.stderr
    assert r.stderr.count("\n") == 1
    assert "Traceback" not in r.stderr


def test_config_show_hides_a_webhook_url_whole(cli, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    token_url = "https://hooks.example.org/services/T000/B000/s3cr3tT0ken"
    monkeypatch.setenv("SCRIPT_EC2_NOTIFY_WEBHOOK_URL", token_url)
    monkeypatch.setenv("SCRIPT_EC2_SMTP_URL", "smtps://ops:mailpass@mail.example.org:465")
    r = cli("config", "show", "--format", "json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["notify_webhook_url"]["value"] == "*** (set, hidden)"
    assert data["smtp_url"]["value"] == "smtps://ops:***@mail.example.org:465"
    assert "s3cr3tT0ken" not in r.stdout + r.stderr and "mailpass" not in r.stdout
