"""The analyzer's settings: registry, parsers, and flag > env > YAML > default resolution."""

from __future__ import annotations

import dataclasses

import pytest
from watchman_collector.config import (
    CONFIG_ENV,
    SETTINGS,
    AnalyzerConfig,
    ConfigError,
    load_yaml,
    parse_address,
    parse_bytes,
    parse_duration,
    resolve,
)


def test_defaults_of_the_dataclass_match_the_registry():
    """Every registered setting is a field of AnalyzerConfig with the same default, and back."""
    fields = {f.name: f.default for f in dataclasses.fields(AnalyzerConfig) if f.name != "sources"}
    assert fields == {s.name: s.default for s in SETTINGS}


def test_resolve_without_input_gives_the_documented_defaults():
    """No flags, env or file: the stable interface's default addresses."""
    config = resolve({}, {})
    assert (config.otlp_grpc, config.otlp_http, config.api) == (
        "127.0.0.1:4317",
        "127.0.0.1:4318",
        "127.0.0.1:9464",
    )
    assert config.sources["api"] == "default"


def test_flag_beats_env_beats_file_beats_default(tmp_path):
    """Precedence is flag > WATCHMAN_* env > YAML file > default, per setting."""
    path = tmp_path / "watchman.yaml"
    path.write_text("pair_ttl: 30s\ntick_interval: 2\nmax_nodes: 7\n")
    config = resolve(
        {"pair_ttl": "1m"},
        {"WATCHMAN_PAIR_TTL": "45", "WATCHMAN_TICK_INTERVAL": "250ms"},
        path,
    )
    assert config.pair_ttl == 60.0
    assert config.tick_interval == 0.25
    assert config.max_nodes == 7
    assert config.max_edges == 50_000
    assert config.sources["max_nodes"].startswith("config file")


def test_config_file_is_found_through_the_environment(tmp_path):
    """WATCHMAN_CONFIG names the YAML file when no --config is given."""
    path = tmp_path / "c.yaml"
    path.write_text("api: 0.0.0.0:9999\n")
    assert resolve({}, {CONFIG_ENV: str(path)}).api == "0.0.0.0:9999"


def test_yaml_accepts_dashed_keys_and_refuses_unknown_ones(tmp_path):
    """A typo in a YAML key is an error naming the key, not a silent default."""
    good = tmp_path / "good.yaml"
    good.write_text("otlp-grpc: off\n")
    assert load_yaml(good) == {"otlp_grpc": False}  # YAML 1.1 reads a bare off as false
    assert resolve({}, {}, good).otlp_grpc == "off"
    bad = tmp_path / "bad.yaml"
    bad.write_text("pair_tll: 5s\n")
    with pytest.raises(ConfigError, match="unknown setting 'pair_tll'"):
        load_yaml(bad)


def test_quoted_off_disables_a_receiver(tmp_path):
    """`otlp_grpc: "off"` (quoted) and the flag value off both disable the gRPC receiver."""
    path = tmp_path / "c.yaml"
    path.write_text('otlp_grpc: "off"\n')
    assert resolve({}, {}, path).otlp_grpc == "off"
    assert resolve({"otlp_http": "OFF"}, {}).otlp_http == "off"


def test_invalid_value_names_setting_and_source():
    """A bad value raises ConfigError naming where it came from and what was expected."""
    with pytest.raises(ConfigError, match=r"environment variable WATCHMAN_QUEUE_SIZE: .*positive"):
        resolve({}, {"WATCHMAN_QUEUE_SIZE": "-3"})
    with pytest.raises(ConfigError, match=r"flag --api: expected HOST:PORT"):
        resolve({"api": "localhost"}, {})


def test_bad_yaml_and_missing_file_are_config_errors(tmp_path):
    """Unreadable or malformed config files raise ConfigError with the path."""
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load_yaml(tmp_path / "nope.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(path)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10", 10.0), ("250ms", 0.25), ("1.5s", 1.5), ("5m", 300.0), ("1h", 3600.0), (3, 3.0)],
)
def test_parse_duration(text, seconds):
    """Durations accept bare seconds and ms/s/m/h suffixes."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten", "-1", "5d", True])
def test_parse_duration_rejects_garbage(text):
    """Anything that is not a non-negative duration is a ValueError."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_parse_bytes_units():
    """Sizes accept binary and decimal units and refuse zero."""
    assert parse_bytes("4MiB") == 4 << 20
    assert parse_bytes("20MB") == 20_000_000
    assert parse_bytes(1024) == 1024
    with pytest.raises(ValueError, match="positive"):
        parse_bytes(0)


def test_parse_address_forms():
    """HOST:PORT, bracketed IPv6 and port 0 parse; unbracketed IPv6 and big ports do not."""
    assert parse_address("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_address("[::1]:4317") == ("::1", 4317)
    with pytest.raises(ValueError, match="brackets"):
        parse_address("::1:4317")
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        parse_address("127.0.0.1:70000")
