"""The telemetry: and audit: sections, and the configuration version."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from authz.config.loader import config_version, parse_config
from authz.errors import ConfigError
from authz.observability.observe import Observability

BASE = """\
issuers:
  - issuer: https://idp.example
    audiences: [api]
    algorithms: [RS256]
    keys:
      - jwks: {keys: []}
"""


def test_defaults_are_off_except_the_audit_trail_on_stdout() -> None:
    config = parse_config(BASE)
    assert config.telemetry.tracing.endpoint is None
    assert config.telemetry.metrics.listen is None
    assert config.telemetry.metrics.otlp_endpoint is None
    assert config.audit.stdout is True
    assert config.audit.file is None
    assert config.audit.queue_size == 10_000


def test_the_documented_example_parses() -> None:
    config = parse_config(
        BASE
        + """\
telemetry:
  service_name: authz-edge
  tracing:
    endpoint: http://otel-collector.observability:4317
    root_sample_ratio: 0.1
  metrics:
    listen: 0.0.0.0:9464
    otlp_endpoint: https://otel-collector.observability:4317
    otlp_interval_seconds: 30
audit:
  stdout: false
  file: /var/log/authz/audit.jsonl
  queue_size: 50000
  shutdown_timeout_seconds: 10
"""
    )
    assert config.telemetry.tracing.root_sample_ratio == 0.1
    assert config.telemetry.metrics.listen == "0.0.0.0:9464"
    assert config.audit.file == Path("/var/log/authz/audit.jsonl")


@pytest.mark.parametrize(
    ("section", "line", "message"),
    [
        ("telemetry:\n  tracing:\n    endpoint: collector:4317\n", 9, "tracing.endpoint"),
        ("telemetry:\n  tracing:\n    root_sample_ratio: 2\n", 9, "root_sample_ratio"),
        ("telemetry:\n  metrics:\n    listen: ':9464'\n", 9, "metrics.listen"),
        ("telemetry:\n  metrics:\n    otlp_endpoint: grpc://c\n", 9, "otlp_endpoint"),
        ("telemetry:\n  traces: {}\n", 8, "telemetry.traces: unknown key"),
        ("audit:\n  stdout: false\n", 7, "audit needs a sink"),
        ("audit:\n  queue_size: 0\n", 8, "audit.queue_size"),
    ],
)
def test_mistakes_name_the_line_and_key(section: str, line: int, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(BASE + section, source="authz.yaml")
    text = str(raised.value)
    assert f"authz.yaml:{line}: " in text, text
    assert message in text, text


def test_the_version_is_a_hash_of_the_file_text() -> None:
    first = parse_config(BASE)
    assert first.version == config_version(BASE)
    assert len(first.version) == 12
    assert parse_config(BASE).version == first.version
    assert parse_config(BASE + "realm: other\n").version != first.version


@pytest.mark.parametrize("key", ["version", "_version"])
def test_no_yaml_key_can_set_the_version(key: str) -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config(BASE + f"{key}: forged\n")


def test_a_relative_audit_file_is_beside_the_configuration(tmp_path: Path) -> None:
    config = parse_config(
        BASE + "audit: {stdout: false, file: trail/audit.jsonl}\n", base_dir=tmp_path
    )
    observability = Observability.from_config(config, environ={})
    observability.start()
    asyncio.run(observability.stop())
    assert (tmp_path / "trail" / "audit.jsonl").exists()


def test_an_unwritable_audit_file_stops_start_up(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("")
    config = parse_config(BASE + "audit: {file: not-a-dir/audit.jsonl}\n", base_dir=tmp_path)
    observability = Observability.from_config(config, environ={})
    with pytest.raises(ConfigError, match="audit: cannot open"):
        observability.start()
