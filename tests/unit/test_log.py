"""Logging set-up: JSON lines or console output, ISO UTC timestamps, level filtering;
the client's logger loads structlog only for a line that is written."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import structlog
from structlog.testing import capture_logs

from common.log import LEVELS, configure_logging, get_logger


class TerminalStream(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_has_event_level_fields_and_utc_timestamp() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    before = datetime.now(UTC)
    structlog.get_logger().info("upload finished", chunks=3, client_id="c1")
    after = datetime.now(UTC)
    [line] = json_lines(stream)
    assert line["event"] == "upload finished"
    assert line["level"] == "info"
    assert (line["chunks"], line["client_id"]) == (3, "c1")
    stamp = str(line["timestamp"])
    assert stamp.endswith("Z")
    when = datetime.fromisoformat(stamp)
    assert when.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= when <= after + timedelta(seconds=1)


def test_auto_on_a_non_terminal_gives_json() -> None:
    stream = io.StringIO()
    configure_logging(stream=stream)
    structlog.get_logger().warning("disk low", free=10)
    [line] = json_lines(stream)
    assert (line["event"], line["level"], line["free"]) == ("disk low", "warning", 10)


def test_auto_on_a_terminal_gives_console_lines() -> None:
    stream = TerminalStream()
    configure_logging("info", "auto", stream)
    structlog.get_logger().info("broker ready", port=5555)
    text = stream.getvalue()
    assert "broker ready" in text and "port" in text and "5555" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


def test_console_format_on_a_non_terminal_has_no_colour_codes() -> None:
    stream = io.StringIO()
    configure_logging("info", "console", stream)
    structlog.get_logger().info("broker ready")
    assert "broker ready" in stream.getvalue()
    assert "\x1b[" not in stream.getvalue()


@pytest.mark.parametrize("level", LEVELS)
def test_level_filters_lower_levels(level: str) -> None:
    stream = io.StringIO()
    configure_logging(level, "json", stream)
    log = structlog.get_logger()
    for name in LEVELS:
        getattr(log, name)("event at " + name)
    written = [line["level"] for line in json_lines(stream)]
    assert written == list(LEVELS[LEVELS.index(level) :])


def test_level_name_is_case_insensitive() -> None:
    stream = io.StringIO()
    configure_logging("WARNING", "json", stream)
    structlog.get_logger().info("hidden")
    structlog.get_logger().error("shown")
    assert [line["event"] for line in json_lines(stream)] == ["shown"]


def test_context_variables_are_merged() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    structlog.contextvars.bind_contextvars(request_id="r-7", service="cipherdrop.file")
    structlog.get_logger().info("request done")
    [line] = json_lines(stream)
    assert (line["request_id"], line["service"]) == ("r-7", "cipherdrop.file")


def test_exceptions_are_rendered_into_the_json_line() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    try:
        raise ValueError("boom")
    except ValueError:
        structlog.get_logger().exception("handler failed")
    [line] = json_lines(stream)
    assert line["event"] == "handler failed"
    assert "ValueError: boom" in str(line["exception"])


def test_default_stream_is_standard_error(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    structlog.get_logger().info("to stderr")
    out, err = capsys.readouterr()
    assert out == ""
    assert json.loads(err.splitlines()[0])["event"] == "to stderr"


def test_capture_logs_sees_events_and_respects_the_level() -> None:
    configure_logging("warning", "json", io.StringIO())
    with capture_logs() as captured:
        structlog.get_logger().info("too quiet")
        structlog.get_logger().error("stored failed", client_id="c9")
    assert captured == [{"event": "stored failed", "client_id": "c9", "log_level": "error"}]


def test_get_logger_writes_like_structlog_with_bound_context() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    logger = get_logger(service="file").bind(request_id="r-1")
    logger.debug("hidden")
    logger.warning("slow disk", free=3)
    try:
        raise OSError("gone")
    except OSError:
        logger.exception("write failed")
    first, second = json_lines(stream)
    assert (first["event"], first["level"], first["free"]) == ("slow disk", "warning", 3)
    assert (first["service"], first["request_id"]) == ("file", "r-1")
    assert (second["event"], second["level"]) == ("write failed", "error")
    assert "OSError: gone" in str(second["exception"])


def test_get_logger_follows_capture_logs() -> None:
    logger = get_logger()
    logger.info("before")
    with capture_logs() as captured:
        logger.info("inside", n=1)
    assert captured == [{"event": "inside", "n": 1, "log_level": "info"}]


def _run_fresh(code: str) -> str:
    """Run ``code`` in a new interpreter (nothing loaded yet) and return its output."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout + done.stderr


def test_a_command_path_that_writes_no_line_never_loads_structlog() -> None:
    out = _run_fresh(
        "import sys, io\n"
        "import client.cli, client.commands, client.upload, client.download\n"
        "from common.log import configure_logging, get_logger\n"
        "configure_logging('warning', 'json', io.StringIO())\n"
        "get_logger().info('quiet')\n"
        "print(sorted(m for m in ('structlog', 'asyncio') if m in sys.modules))\n"
    )
    assert out.strip() == "[]"


def test_the_last_deferred_configuration_applies_on_the_first_written_line() -> None:
    out = _run_fresh(
        "import sys\n"
        "from common.log import configure_logging, get_logger\n"
        "configure_logging('critical', 'json', sys.stdout)\n"
        "configure_logging('warning', 'json', sys.stdout)\n"
        "assert 'structlog' not in sys.modules\n"
        "get_logger(side='client').info('dropped')\n"
        "get_logger(side='client').error('written', code=7)\n"
    )
    [line] = [json.loads(text) for text in out.splitlines()]
    assert (line["event"], line["level"], line["code"], line["side"]) == (
        "written",
        "error",
        7,
        "client",
    )
