"""The JSON log lines, and `info_batched`: the same line as `logger.info`, written at the
end of the event loop's pass, in call order with every other line."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gpushift_core import jsonlog

FIELDS = {"uid": "u-1", "namespace": "team-a", "pod": "nb-0", "outcome": "injected",
          "warnings": 0, "duration_ms": 0.123}


@pytest.fixture
def logs() -> Iterator[Callable[[], io.StringIO]]:
    """Makes the root logger what `jsonlog.setup` leaves, writing to a StringIO, when
    called: in the test itself, since pytest adds its capture handler to the root logger
    after the fixtures are set up. Everything is put back after the test."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level

    def as_set_up() -> io.StringIO:
        out = io.StringIO()
        handler = jsonlog.JsonLineHandler(out)
        handler.setFormatter(jsonlog.JsonFormatter())
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
        return out

    try:
        yield as_set_up
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


async def test_a_batched_line_is_the_line_logger_info_writes(
        logs: Callable[[], io.StringIO]) -> None:
    stream = logs()
    log = logging.getLogger("gpushift.test")
    log.info("admission", extra=FIELDS)
    jsonlog.info_batched(log, "admission", FIELDS)
    await asyncio.sleep(0)
    plain, batched = lines(stream)
    assert plain.pop("ts")[:10] == batched.pop("ts")[:10]
    assert plain == batched == {"level": "info", "logger": "gpushift.test", "msg": "admission",
                                **FIELDS}
    assert list(batched) == ["level", "logger", "msg", *FIELDS]


async def test_batched_lines_wait_for_the_end_of_the_loops_pass(
        logs: Callable[[], io.StringIO]) -> None:
    stream = logs()
    log = logging.getLogger("gpushift.test")
    for uid in ("a", "b", "c"):
        jsonlog.info_batched(log, "admission", {"uid": uid})
    assert stream.getvalue() == ""
    await asyncio.sleep(0)
    assert [line["uid"] for line in lines(stream)] == ["a", "b", "c"]


async def test_any_other_line_comes_after_the_batched_ones(
        logs: Callable[[], io.StringIO]) -> None:
    stream = logs()
    log = logging.getLogger("gpushift.test")
    jsonlog.info_batched(log, "admission", {"uid": "first"})
    log.warning("second")
    assert [line["msg"] for line in lines(stream)] == ["admission", "second"]
    jsonlog.info_batched(log, "admission", {"uid": "third"})
    logging.getLogger().handlers[0].flush()  # as logging.shutdown() does at exit
    assert [line.get("uid") for line in lines(stream)] == ["first", None, "third"]
    await asyncio.sleep(0)  # the scheduled flush finds nothing left to write
    assert len(lines(stream)) == 3


def test_outside_an_event_loop_the_line_is_written_at_once(
        logs: Callable[[], io.StringIO]) -> None:
    stream = logs()
    jsonlog.info_batched(logging.getLogger("gpushift.test"), "admission", FIELDS)
    [line] = lines(stream)
    assert line["uid"] == "u-1" and line["level"] == "info"


async def test_below_the_level_nothing_is_written(logs: Callable[[], io.StringIO]) -> None:
    stream = logs()
    logging.getLogger().setLevel(logging.WARNING)
    jsonlog.info_batched(logging.getLogger("gpushift.test"), "admission", FIELDS)
    await asyncio.sleep(0)
    assert stream.getvalue() == ""


async def test_another_handler_or_a_filter_gets_a_real_record(
        logs: Callable[[], io.StringIO], caplog: pytest.LogCaptureFixture) -> None:
    stream = logs()
    log = logging.getLogger("gpushift.test")
    # caplog's handler on the root logger beside ours: a record, seen by both at once.
    logging.getLogger().addHandler(caplog.handler)
    try:
        jsonlog.info_batched(log, "admission", FIELDS)
    finally:
        logging.getLogger().removeHandler(caplog.handler)
    [record] = [r for r in caplog.records if r.getMessage() == "admission"]
    assert record.__dict__["uid"] == "u-1"
    assert lines(stream)[0]["uid"] == "u-1"
    # A filter on the way may drop or change a record: it gets one.
    seen: list[logging.LogRecord] = []

    def keep_none(record: logging.LogRecord) -> bool:
        seen.append(record)
        return False

    log.addFilter(keep_none)
    try:
        jsonlog.info_batched(log, "admission", FIELDS)
    finally:
        log.removeFilter(keep_none)
    await asyncio.sleep(0)
    assert len(seen) == 1 and len(lines(stream)) == 1



def test_a_record_with_an_int_beyond_64_bits_is_written(
        logs: Callable[[], io.StringIO]) -> None:
    """orjson refuses such an int (its `default` is not asked for ints): the line was
    lost, with a logging error on stderr, before json's same text stood in for it."""
    stream = logs()
    log = logging.getLogger("gpushift.test")
    log.info("quantity", extra={"bytes": 2**70, "path": io.StringIO})
    # The batched line too, made without a record (here outside a loop: at once).
    jsonlog.info_batched(log, "admission", {"bytes": -(2**70)})
    first, second = lines(stream)
    assert first["bytes"] == 2**70 and first["path"] == str(io.StringIO)
    assert second["bytes"] == -(2**70) and second["msg"] == "admission"
