"""fedcore.config: typed configuration from YAML with FEDSUITE_* environment overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from fedcore.config import ConfigError, TlsConfig, env_overrides, load_config
from fedcore.data import DatasetConfig

from fedsuite.coordinator.config import CoordinatorConfig
from fedsuite.party.config import PartyConfig


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int = 80


@dataclass(frozen=True)
class Source:
    path: str
    weight: float = 1.0
    enabled: bool = True
    note: str | None = None


@dataclass(frozen=True)
class App:
    name: str
    endpoint: Endpoint
    sources: dict[str, Source] = field(default_factory=dict)
    retries: int = 3
    ratio: float = 0.5
    debug: bool = False
    comment: str | None = None
    backup: Endpoint | None = None


APP_YAML = """
name: demo
endpoint:
  host: example.org
sources:
  a:
    path: /data/a.csv
    weight: 2.5
"""


def _yaml(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _load(tmp_path: Path, text: str, **env: str) -> App:
    return load_config(App, _yaml(tmp_path, text), environ=env)


def test_yaml_values_and_defaults(tmp_path: Path) -> None:
    app = _load(tmp_path, APP_YAML)
    assert app == App(
        name="demo",
        endpoint=Endpoint("example.org", 80),
        sources={"a": Source("/data/a.csv", weight=2.5)},
    )


def test_every_field_from_yaml(tmp_path: Path) -> None:
    app = _load(tmp_path, APP_YAML + "retries: 0\nratio: 1\ndebug: yes\ncomment: hi\nbackup: {host: b, port: 81}\n")
    assert (app.retries, app.ratio, app.debug, app.comment, app.backup) == (0, 1.0, True, "hi", Endpoint("b", 81))
    assert type(app.ratio) is float  # an int is accepted for a float and becomes one


def test_environment_overrides_yaml(tmp_path: Path) -> None:
    app = _load(
        tmp_path, APP_YAML,
        FEDSUITE_NAME="from-env",
        FEDSUITE_RETRIES="7",
        FEDSUITE_RATIO="2",
        FEDSUITE_DEBUG="true",
        FEDSUITE_ENDPOINT__PORT="8443",  # merged into the YAML mapping: host stays
        FEDSUITE_SOURCES__A__WEIGHT="4",  # one key of an existing dict entry
        FEDSUITE_SOURCES__B__PATH="/data/b.csv",  # a new dict entry
        FEDSUITE_SOURCES__B__ENABLED="false",
        FEDSUITE_CONFIG="/ignored.yaml",  # names the file; not a key
        OTHER_RETRIES="99",  # not ours
    )
    assert app.name == "from-env"
    assert app.retries == 7
    assert app.ratio == 2.0 and type(app.ratio) is float
    assert app.debug is True
    assert app.endpoint == Endpoint("example.org", 8443)
    assert app.sources == {
        "a": Source("/data/a.csv", weight=4.0),
        "b": Source("/data/b.csv", enabled=False),
    }


def test_environment_only_without_a_file() -> None:
    app = load_config(App, None, environ={"FEDSUITE_NAME": "x", "FEDSUITE_ENDPOINT__HOST": "h",
                                          "FEDSUITE_BACKUP__HOST": "b"})
    assert app == App(name="x", endpoint=Endpoint("h"), backup=Endpoint("b"))


def test_empty_environment_value_is_null(tmp_path: Path) -> None:
    app = _load(tmp_path, APP_YAML + "comment: set in yaml\n", FEDSUITE_COMMENT="")
    assert app.comment is None
    with pytest.raises(ConfigError, match="name: expected a string, got None"):
        _load(tmp_path, APP_YAML, FEDSUITE_NAME="")


def test_env_overrides_keep_raw_strings_until_a_type_asks() -> None:
    overrides = env_overrides({
        "FEDSUITE_PORT": "8080",
        "FEDSUITE_ADDRESS": "[::]:50051",
        "FEDSUITE_TLS__CA": "/certs/ca.pem",
        "FEDSUITE_DATASETS__BREAST__PATH": "/data/b.csv",
        "FEDSUITE_CONFIG": "cfg.yaml",
        "FEDSUITE_CLI_CERTS": "certs",
        "FEDSUITEX": "1",
        "PATH": "/usr/bin",
    })
    assert overrides == {
        "port": "8080",
        "address": "[::]:50051",
        "tls": {"ca": "/certs/ca.pem"},
        "datasets": {"breast": {"path": "/data/b.csv"}},
    }
    assert env_overrides({"APP_PORT": "1"}, prefix="APP_") == {"port": "1"}


@dataclass(frozen=True)
class Scalars:
    port: int = 0
    rate: float = 0.0
    on: bool = False
    off: bool = True
    text: str = ""
    maybe: str | None = "set"
    items: list[int] = field(default_factory=list)


def test_env_values_are_parsed_as_yaml_scalars_where_the_field_is_not_a_string() -> None:
    scalars = load_config(Scalars, None, environ={
        "FEDSUITE_PORT": "8080", "FEDSUITE_RATE": "0.25", "FEDSUITE_ON": "true", "FEDSUITE_OFF": "False",
        "FEDSUITE_TEXT": "0123", "FEDSUITE_MAYBE": "", "FEDSUITE_ITEMS": "[1, 2]",
    })
    assert scalars == Scalars(port=8080, rate=0.25, on=True, off=False, text="0123", maybe=None, items=[1, 2])


def test_env_overrides_refuses_a_value_under_a_value() -> None:
    with pytest.raises(ConfigError, match=r"FEDSUITE_TLS__CA: tls\.ca mixes a value and a mapping"):
        env_overrides({"FEDSUITE_TLS": "x", "FEDSUITE_TLS__CA": "/ca.pem"})


TOP_KEYS = "the top level takes backup, comment, debug, endpoint, name, ratio, retries, sources"


def test_unknown_keys_refused_with_their_dotted_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"^unknown key\(s\): colour, size; {TOP_KEYS}$"):
        _load(tmp_path, APP_YAML + "size: 1\ncolour: red\n")
    with pytest.raises(ConfigError, match=r"^unknown key\(s\): endpoint\.hots; endpoint takes host, port$"):
        _load(tmp_path, APP_YAML.replace("host:", "hots:"))
    with pytest.raises(ConfigError, match=r"^unknown key\(s\): sources\.a\.pth; sources\.a takes enabled, note, path, weight$"):
        _load(tmp_path, APP_YAML, FEDSUITE_SOURCES__A__PTH="/x")
    with pytest.raises(ConfigError, match=rf"^unknown key\(s\): retry; {TOP_KEYS}$"):
        _load(tmp_path, APP_YAML, FEDSUITE_RETRY="1")


def test_every_unknown_key_is_named_at_once_at_every_depth(tmp_path: Path) -> None:
    text = "name: demo\nendpoint: {hots: h}\ncolour: red\nsources: {a: {path: /x, wieght: 2}, b: {pth: /y}}\n"
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text, FEDSUITE_RETRY="1")
    assert str(caught.value) == (
        "unknown key(s): colour, retry, endpoint.hots, sources.a.wieght, sources.b.pth; "
        f"{TOP_KEYS}; endpoint takes host, port; sources.a takes enabled, note, path, weight; "
        "sources.b takes enabled, note, path, weight")


def test_missing_required_keys_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing required key: name$"):
        _load(tmp_path, "endpoint: {host: h}\n")
    with pytest.raises(ConfigError, match=r"missing required key: endpoint\.host$"):
        _load(tmp_path, "name: n\nendpoint: {port: 1}\n")
    with pytest.raises(ConfigError, match=r"missing required key: sources\.b\.path$"):
        _load(tmp_path, APP_YAML, FEDSUITE_SOURCES__B__WEIGHT="1")
    with pytest.raises(ConfigError, match="missing required key: name$"):
        _load(tmp_path, "")  # an empty file is an empty mapping


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("retries: 1.5", r"retries: expected an integer, got 1\.5$"),
        ("retries: true", "retries: expected an integer, got True$"),  # a bool is not an int
        ("retries: '3'", "retries: expected an integer, got '3'$"),
        ("ratio: fast", "ratio: expected a number, got 'fast'$"),
        ("ratio: false", "ratio: expected a number, got False$"),
        ("debug: 1", "debug: expected true or false, got 1$"),
        ("name: [a]", r"name: expected a string, got \['a'\]$"),
        ("endpoint: here", "endpoint: expected a mapping, got str$"),
        ("sources: [a]", "sources: expected a mapping$"),
        ("sources: {a: /x.csv}", "sources.a: expected a mapping, got str$"),
        ("sources: {a: {path: /x, weight: heavy}}", "sources.a.weight: expected a number, got 'heavy'$"),
        ("backup: {host: h, port: '81'}", "backup.port: expected an integer, got '81'$"),
    ],
)
def test_wrong_types_named(tmp_path: Path, extra: str, message: str) -> None:
    values = {"name": "demo", "endpoint": {"host": "h"}, **yaml.safe_load(extra)}
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, yaml.safe_dump(values))


def test_wrong_type_from_the_environment_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="endpoint.port: expected an integer, got 'https'$"):
        _load(tmp_path, APP_YAML, FEDSUITE_ENDPOINT__PORT="https")


def test_numbers_are_accepted_for_strings(tmp_path: Path) -> None:
    assert _load(tmp_path, "name: 42\nendpoint: {host: 10.5}\n").endpoint.host == "10.5"
    assert _load(tmp_path, APP_YAML, FEDSUITE_NAME="42").name == "42"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found: .*nowhere.yaml"):
        load_config(App, tmp_path / "nowhere.yaml", environ={})


def test_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(App, _yaml(tmp_path, "name: [unclosed\n", "bad.yaml"), environ={})


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="the top level must be a mapping"):
        load_config(App, _yaml(tmp_path, text), environ={})


def test_environ_defaults_to_the_process_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDSUITE_RETRIES", "11")
    assert load_config(App, _yaml(tmp_path, APP_YAML)).retries == 11


# -- the services' own configurations --------------------------------------------------------


def test_coordinator_config(tmp_path: Path) -> None:
    path = _yaml(tmp_path, """
listen: 0.0.0.0:50051
state_dir: /var/lib/fedsuite
heartbeat_interval_s: 1
tls: {ca: certs/ca.pem, cert: certs/coordinator.pem, key: certs/coordinator.key}
metrics_listen: 0.0.0.0:9100
""")
    config = load_config(CoordinatorConfig, path, environ={"FEDSUITE_PARTY_TIMEOUT_S": "9.5",
                                                           "FEDSUITE_LOG_LEVEL": "debug"})
    assert config == CoordinatorConfig(
        node_id="coordinator",
        listen="0.0.0.0:50051",
        tls=TlsConfig("certs/ca.pem", "certs/coordinator.pem", "certs/coordinator.key"),
        metrics_listen="0.0.0.0:9100",
        log_level="debug",
        state_dir="/var/lib/fedsuite",
        heartbeat_interval_s=1.0,
        party_timeout_s=9.5,
    )
    files = config.tls.files(tmp_path) if config.tls else None
    assert files is not None and files.cert == tmp_path / "certs" / "coordinator.pem"
    with pytest.raises(ConfigError, match=r"^unknown key\(s\): datasets; the top level takes "):
        load_config(CoordinatorConfig, path, environ={"FEDSUITE_DATASETS__X__PATH": "x.csv"})
    with pytest.raises(ConfigError, match=r"missing required key: tls\.key$"):
        load_config(CoordinatorConfig, None, environ={"FEDSUITE_TLS__CA": "ca.pem", "FEDSUITE_TLS__CERT": "c.pem"})


def test_party_config_with_datasets(tmp_path: Path) -> None:
    path = _yaml(tmp_path, """
node_id: party-a
listen: 127.0.0.1:0
coordinator: coordinator.example:50051
organisation: Hospital A
datasets:
  breast:
    path: data/breast-train.csv
    eval_path: data/breast-eval.csv
    label: target
  features:
    path: data/features.csv
    id_column: id
    eval_fraction: 0
""")
    config = load_config(PartyConfig, path, environ={"FEDSUITE_DATASETS__BREAST__SEED": "7"})
    assert config.node_id == "party-a"
    assert config.coordinator == "coordinator.example:50051"
    assert config.organisation == "Hospital A"
    assert config.role == "guest" and config.advertise is None and config.tls is None
    assert config.datasets == {
        "breast": DatasetConfig(path="data/breast-train.csv", label="target", eval_path="data/breast-eval.csv", seed=7),
        "features": DatasetConfig(path="data/features.csv", id_column="id", eval_fraction=0.0),
    }
    with pytest.raises(ConfigError, match=r"^unknown key\(s\): datasets\.breast\.labels; datasets\.breast takes eval_fraction, "):
        load_config(PartyConfig, path, environ={"FEDSUITE_DATASETS__BREAST__LABELS": "y"})
    with pytest.raises(ConfigError, match="missing required key: node_id$"):
        load_config(PartyConfig, _yaml(tmp_path, "datasets: {}\n", "empty.yaml"), environ={})
