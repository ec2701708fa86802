"""Configuration: defaults, the documented example file, environment overrides and errors that name the key."""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from bot.config import SECRET_KEYS, Config, ConfigError, _Section, env_name, load_config, redacted

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.toml"
AES_KEY = "a" * 43


def sections() -> dict[str, type[_Section]]:
    """Every section of Config by name (top-level scalars such as timezone are not sections)."""
    out = {}
    for name, field in Config.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, _Section):
            out[name] = field.annotation
    return out


def top_level_keys() -> list[str]:
    return [name for name in Config.model_fields if name not in sections()]


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path | None = None, **env: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=env)
    message = str(info.value)
    assert "\n" not in message, message
    return message


# --- the example file -------------------------------------------------------------------------------------


def test_example_file_loads_and_equals_the_defaults():
    assert load_config(EXAMPLE, environ={}) == load_config(None, environ={}) == Config()


def _blocks(text: str) -> dict[str | None, list[str]]:
    """The example's lines by section ([section] headers); None for the lines before the first header."""
    blocks: dict[str | None, list[str]] = {None: []}
    current: str | None = None
    for line in text.splitlines():
        header = re.fullmatch(r"\[([A-Za-z0-9_]+)\]\s*", line)
        if header:
            current = header.group(1)
            assert current not in blocks, f"section [{current}] appears twice"
            blocks[current] = []
        else:
            blocks[current].append(line)
    return blocks


def _assert_documented_key(lines: list[str], key: str, where: str, commented: bool) -> None:
    pattern = re.compile(rf"^{'# ?' if commented else ''}{re.escape(key)}\s*=")
    found = [i for i, line in enumerate(lines) if pattern.match(line)]
    assert found, f"{where}: key {key!r} is not in config.example.toml"
    before = lines[found[0] - 1] if found[0] > 0 else ""
    assert before.startswith("#") and not re.match(r"^# ?\w+\s*=", before), (
        f"{where}: key {key!r} in config.example.toml has no comment right above it")


def test_example_file_documents_every_key():
    text = EXAMPLE.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    blocks = _blocks(text)
    for key in top_level_keys():
        assert key in data, f"top-level key {key!r} is not in config.example.toml"
        _assert_documented_key(blocks[None], key, key, commented=False)
    assert set(blocks) - {None} == set(sections()), "sections of config.example.toml differ from Config's"
    for section, model in sections().items():
        comments = "\n".join(line for line in blocks[section] if line.lstrip().startswith("#"))
        for key, field in model.model_fields.items():
            dotted = f"{section}.{key}"
            if (section, key) in SECRET_KEYS:
                # Secrets may not be keys in a file: the section's comments tell the user the variable instead.
                assert key not in data.get(section, {}), dotted
                assert env_name(section, key) in comments, f"{dotted}: {env_name(section, key)} not mentioned"
            elif field.default is None:
                # TOML has no null: a key without a default value is shown commented out.
                _assert_documented_key(blocks[section], key, dotted, commented=True)
            else:
                assert key in data.get(section, {}), f"{dotted} is not a key in config.example.toml"
                _assert_documented_key(blocks[section], key, dotted, commented=False)


def test_example_file_explains_how_it_is_used():
    text = EXAMPLE.read_text(encoding="utf-8")
    head = text.split("\n[", 1)[0]
    for needle in ("QUNBOT_<SECTION>_<KEY>", "QUNBOT_DATABASE_URL", "qunbot -c config.toml run", "QUNBOT_CONFIG"):
        assert needle in head, needle
    assert re.search(r"^# ?url = \"postgresql://user@host:5432/qunbot\"$", text, re.MULTILINE)


def test_commented_examples_in_the_example_file_are_valid(tmp_path):
    """Uncommenting the sample values (PostgreSQL URL, auto_migrate, agent_id) gives a valid config."""
    text = EXAMPLE.read_text(encoding="utf-8")
    uncommented = re.sub(r"^# ?(url|auto_migrate|agent_id) = ", r"\1 = ", text, flags=re.MULTILINE)
    uncommented = re.sub(r'^url = "sqlite.*$\n', "", uncommented, flags=re.MULTILINE)
    config = load_config(write(tmp_path, uncommented), environ={})
    assert config.database.url == "postgresql://user@host:5432/qunbot"
    assert config.database.auto_migrate is True
    assert isinstance(config.wecom.agent_id, int)


# --- defaults ---------------------------------------------------------------------------------------------


def test_no_file_gives_the_defaults():
    config = load_config(None, environ={})
    assert config.database.url == "sqlite:///./data/qunbot.db"
    assert config.auto_migrate is True  # the embedded SQLite migrates itself
    assert config.simulator.enabled is True
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    assert config.timezone == "Asia/Shanghai"
    assert config.wecom.enabled is False
    assert config.log.level == "INFO"


def test_an_empty_file_gives_the_defaults(tmp_path):
    assert load_config(write(tmp_path, ""), environ={}) == Config()


def test_config_file_from_qunbot_config(tmp_path):
    path = write(tmp_path, "[server]\nport = 9001\n")
    assert load_config(None, environ={"QUNBOT_CONFIG": str(path)}).server.port == 9001
    other = write(tmp_path, "[server]\nport = 9002\n", "other.toml")
    assert load_config(other, environ={"QUNBOT_CONFIG": str(path)}).server.port == 9002  # explicit path wins


# --- environment overrides --------------------------------------------------------------------------------


def test_env_overrides_a_string():
    config = load_config(None, environ={"QUNBOT_DATABASE_URL": "postgresql://user@host:5432/qunbot"})
    assert config.database.url == "postgresql://user@host:5432/qunbot"
    assert config.auto_migrate is False  # PostgreSQL is migrated with `qunbot db upgrade`


def test_env_overrides_an_int():
    config = load_config(None, environ={"QUNBOT_SERVER_PORT": "9000"})
    assert config.server.port == 9000 and isinstance(config.server.port, int)


def test_env_overrides_a_float():
    config = load_config(None, environ={"QUNBOT_INBOX_LEASE_SECONDS": "1.5", "QUNBOT_WELCOME_MERGE_WINDOW_SECONDS": "0"})
    assert config.inbox.lease_seconds == 1.5
    assert config.welcome.merge_window_seconds == 0.0


@pytest.mark.parametrize(("raw", "expected"), [
    ("true", True), ("false", False), ("1", True), ("0", False), ("yes", True), ("no", False),
    ("on", True), ("off", False), ("TRUE", True), (" No ", False),
])
def test_env_overrides_a_bool(raw, expected):
    assert load_config(None, environ={"QUNBOT_SIMULATOR_ENABLED": raw}).simulator.enabled is expected
    assert load_config(None, environ={"QUNBOT_DATABASE_ECHO": raw}).database.echo is expected


@pytest.mark.parametrize(("raw", "expected"), [("auto", None), ("", None), ("none", None),
                                               ("true", True), ("0", False)])
def test_env_overrides_an_optional_bool(raw, expected):
    config = load_config(None, environ={"QUNBOT_DATABASE_AUTO_MIGRATE": raw})
    assert config.database.auto_migrate is expected
    assert config.auto_migrate is (True if expected is None else expected)


def test_env_overrides_an_optional_int_and_a_choice():
    config = load_config(None, environ={"QUNBOT_WECOM_AGENT_ID": "1000002", "QUNBOT_LOG_LEVEL": "debug",
                                        "QUNBOT_LOG_FORMAT": "json"})
    assert config.wecom.agent_id == 1000002
    assert (config.log.level, config.log.format) == ("DEBUG", "json")
    assert load_config(None, environ={"QUNBOT_WECOM_AGENT_ID": ""}).wecom.agent_id is None


def test_env_overrides_a_top_level_key():
    assert load_config(None, environ={"QUNBOT_TIMEZONE": "Europe/Berlin"}).timezone == "Europe/Berlin"


def test_env_beats_file_key_by_key(tmp_path):
    path = write(tmp_path, 'timezone = "UTC"\n[server]\nhost = "0.0.0.0"\nport = 9000\n[log]\nlevel = "warning"\n')
    config = load_config(path, environ={"QUNBOT_SERVER_PORT": "9100", "QUNBOT_TIMEZONE": "Asia/Tokyo"})
    assert config.server.port == 9100
    assert config.timezone == "Asia/Tokyo"
    assert config.server.host == "0.0.0.0"  # from the file, untouched by the environment
    assert config.log.level == "WARNING"
    assert config.database.url == "sqlite:///./data/qunbot.db"  # neither: the default


def test_secrets_come_from_the_environment():
    config = load_config(None, environ={
        "QUNBOT_WECOM_ENABLED": "true", "QUNBOT_WECOM_CORP_ID": "ww123",
        "QUNBOT_WECOM_TOKEN": "tok", "QUNBOT_WECOM_ENCODING_AES_KEY": AES_KEY, "QUNBOT_WECOM_CORP_SECRET": "s3",
    })
    assert (config.wecom.token, config.wecom.encoding_aes_key, config.wecom.corp_secret) == ("tok", AES_KEY, "s3")
    assert "tok" not in repr(config.wecom) and AES_KEY not in repr(config)


def test_other_environment_variables_are_ignored():
    assert load_config(None, environ={"HOME": "/x", "PORT": "1", "QUNBOT": "x"}) == Config()


# --- errors name the key and where it came from -----------------------------------------------------------

FILE = "<file>"  # stands for the config file's path in the cases below

ERROR_CASES: list[tuple[str, str | None, dict[str, str], str, str]] = [
    # (case, file text, environment, dotted key, where)
    ("port out of range (env)", None, {"QUNBOT_SERVER_PORT": "0"}, "server.port", "QUNBOT_SERVER_PORT"),
    ("port out of range (file)", "[server]\nport = 70000\n", {}, "server.port", FILE),
    ("port not a number (env)", None, {"QUNBOT_SERVER_PORT": "http"}, "server.port", "QUNBOT_SERVER_PORT"),
    ("port not a number (file)", '[server]\nport = "http"\n', {}, "server.port", FILE),
    ("float not a number", None, {"QUNBOT_INBOX_LEASE_SECONDS": "soon"}, "inbox.lease_seconds",
     "QUNBOT_INBOX_LEASE_SECONDS"),
    ("float out of range", None, {"QUNBOT_WELCOME_MERGE_WINDOW_SECONDS": "61"}, "welcome.merge_window_seconds",
     "QUNBOT_WELCOME_MERGE_WINDOW_SECONDS"),
    ("unknown key in file", "[server]\nprot = 1\n", {}, "server.prot", FILE),
    ("unknown top-level key in file", "debug = true\n", {}, "debug", FILE),
    ("bad bool (env)", None, {"QUNBOT_SIMULATOR_ENABLED": "maybe"}, "simulator.enabled",
     "QUNBOT_SIMULATOR_ENABLED"),
    ("bad bool (file)", '[simulator]\nenabled = "maybe"\n', {}, "simulator.enabled", FILE),
    ("bad optional bool", None, {"QUNBOT_DATABASE_AUTO_MIGRATE": "sometimes"}, "database.auto_migrate",
     "QUNBOT_DATABASE_AUTO_MIGRATE"),
    ("bad timezone (env)", None, {"QUNBOT_TIMEZONE": "Mars/Olympus"}, "timezone", "QUNBOT_TIMEZONE"),
    ("bad timezone (file)", 'timezone = "Asia/Shanghaii"\n', {}, "timezone", FILE),
    ("bad log level", None, {"QUNBOT_LOG_LEVEL": "LOUD"}, "log.level", "QUNBOT_LOG_LEVEL"),
    ("bad log format", '[log]\nformat = "xml"\n', {}, "log.format", FILE),
    ("mysql database url", None, {"QUNBOT_DATABASE_URL": "mysql://u@h/db"}, "database.url", "QUNBOT_DATABASE_URL"),
    ("database url without scheme", '[database]\nurl = "./data/qunbot.db"\n', {}, "database.url", FILE),
    ("aes key of wrong length", None, {"QUNBOT_WECOM_ENCODING_AES_KEY": "a" * 42}, "wecom.encoding_aes_key",
     "QUNBOT_WECOM_ENCODING_AES_KEY"),
    ("token too long", None, {"QUNBOT_WECOM_TOKEN": "t" * 33}, "wecom.token", "QUNBOT_WECOM_TOKEN"),
    ("callback path without slash", '[wecom]\ncallback_path = "cb"\n', {}, "wecom.callback_path", FILE),
    ("templates file missing", None, {"QUNBOT_TEMPLATES_FILE": "no-such.toml"}, "templates.file",
     "QUNBOT_TEMPLATES_FILE"),
    ("section not a table", "server = 8080\n", {}, "server", FILE),
]


@pytest.mark.parametrize(("text", "env", "key", "where"), [case[1:] for case in ERROR_CASES],
                         ids=[case[0] for case in ERROR_CASES])
def test_error_names_the_key_and_its_origin(tmp_path, text, env, key, where):
    path = write(tmp_path, text) if text is not None else None
    message = error_of(path, **env)
    assert f" {key} (" in message, message
    assert (str(path) if where == FILE else where) in message, message


def test_unknown_section_names_the_file(tmp_path):
    path = write(tmp_path, "[serve]\nport = 1\n")
    message = error_of(path)
    assert "serve" in message and "unknown" in message
    assert str(path) in message, message


@pytest.mark.parametrize("url", ["sqlitefoo", "postgresqlfoo://u@h/db"])
def test_database_url_scheme_is_checked_exactly(url):
    assert "database.url" in error_of(QUNBOT_DATABASE_URL=url)


@pytest.mark.parametrize("url", ["sqlite:///./x.db", "sqlite:////abs/x.db", "sqlite+aiosqlite:///x.db",
                                 "postgresql://u@h:5432/db", "postgresql+asyncpg://u@h/db", "postgres://u@h/db"])
def test_database_urls_that_are_accepted(url):
    assert load_config(None, environ={"QUNBOT_DATABASE_URL": url}).database.url == url


def test_unknown_environment_variable_is_an_error():
    message = error_of(QUNBOT_SERVER_PROT="9000")
    assert "QUNBOT_SERVER_PROT" in message


def test_invalid_toml(tmp_path):
    path = write(tmp_path, "[server\nport = 1\n")
    message = error_of(path)
    assert str(path) in message and "TOML" in message


def test_missing_config_file(tmp_path):
    missing = tmp_path / "nope.toml"
    assert str(missing) in error_of(missing)
    assert str(missing) in error_of(None, QUNBOT_CONFIG=str(missing))


@pytest.mark.parametrize(("key", "value"), [("token", "file-token-value"), ("encoding_aes_key", "F" * 43),
                                            ("corp_secret", "s3cr3t")])
def test_a_secret_in_the_file_is_refused(tmp_path, key, value):
    path = write(tmp_path, f'[wecom]\n{key} = "{value}"\n')
    message = error_of(path)
    assert f"wecom.{key}" in message and str(path) in message
    assert env_name("wecom", key) in message and "environment" in message
    assert value not in message


def _wecom_env(**drop: str) -> dict[str, str]:
    env = {"QUNBOT_WECOM_ENABLED": "true", "QUNBOT_WECOM_CORP_ID": "ww123", "QUNBOT_WECOM_TOKEN": "tok",
           "QUNBOT_WECOM_ENCODING_AES_KEY": AES_KEY}
    return {k: v for k, v in env.items() if k not in drop}


def test_wecom_enabled_with_everything_is_valid():
    assert load_config(None, environ=_wecom_env()).wecom.enabled is True


@pytest.mark.parametrize(("missing", "key"), [("QUNBOT_WECOM_TOKEN", "wecom.token"),
                                              ("QUNBOT_WECOM_ENCODING_AES_KEY", "wecom.encoding_aes_key")])
def test_wecom_enabled_without_a_secret_names_the_variable(missing, key):
    message = error_of(**_wecom_env(**{missing: ""}))
    assert key in message and "wecom.enabled" in message
    assert missing in message


def test_wecom_enabled_without_corp_id_names_the_key(tmp_path):
    message = error_of(write(tmp_path, "[wecom]\nenabled = true\n"))
    assert "wecom.corp_id" in message and "wecom.enabled" in message


def test_wecom_enabled_without_corp_id_names_the_variable_and_origin(tmp_path):
    path = write(tmp_path, "[wecom]\nenabled = true\n")
    message = error_of(path, QUNBOT_WECOM_TOKEN="tok", QUNBOT_WECOM_ENCODING_AES_KEY=AES_KEY)
    assert "QUNBOT_WECOM_CORP_ID" in message
    assert str(path) in message


def test_error_messages_never_echo_a_secret():
    for env in ({"QUNBOT_WECOM_ENCODING_AES_KEY": "secret-aes-key-too-short"},
                {"QUNBOT_WECOM_TOKEN": "secret-token-" + "x" * 40}):
        message = error_of(**env)
        assert next(iter(env.values())) not in message


# --- secrets masked ---------------------------------------------------------------------------------------


def test_redacted_masks_set_secrets_and_keeps_the_rest():
    env = _wecom_env()
    env["QUNBOT_WECOM_CORP_SECRET"] = "corp-secret-value"
    dump = redacted(load_config(None, environ=env))
    assert dump["wecom"]["token"] == dump["wecom"]["encoding_aes_key"] == dump["wecom"]["corp_secret"] == "***"
    assert dump["wecom"]["corp_id"] == "ww123"
    text = json.dumps(dump)
    for secret in ("tok", AES_KEY, "corp-secret-value"):
        assert f'"{secret}"' not in text
    # Unset secrets stay visibly empty, and the dump covers every section.
    empty = redacted(Config())
    assert empty["wecom"]["token"] == ""
    assert set(empty) == set(Config.model_fields)


def test_config_check_never_prints_a_secret(monkeypatch, capsys):
    from bot import cli

    monkeypatch.setattr(cli, "setup_logging", lambda *a, **k: None)  # keep pytest's logging as it is
    for name in [n for n in os.environ if n.startswith("QUNBOT_")]:
        monkeypatch.delenv(name)
    secrets = {"QUNBOT_WECOM_TOKEN": "tok-0123456789", "QUNBOT_WECOM_ENCODING_AES_KEY": "K" * 43,
               "QUNBOT_WECOM_CORP_SECRET": "corp-secret-0123456789"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["config", "check"]) == 0
    out, err = capsys.readouterr()
    dump: dict[str, Any] = json.loads(out)
    assert dump["wecom"]["token"] == "***"
    for value in secrets.values():
        assert value not in out and value not in err
