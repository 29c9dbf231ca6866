"""How every Kubernetes API call is made: off the event loop, with timeouts and backoff.

The connection (`connection.Connection`) is synchronous; each call runs in a worker thread
(asyncio.to_thread) so the caller's event loop keeps answering. Every call has a connect
and a read timeout. While the API cannot be reached (no connection, a timeout, 429 or
503) the call is tried again with exponential backoff until `Retry.deadline_seconds`;
then `Unreachable`, a `KubeError` like every other failure here, so one `except
KubeError` covers an apiserver outage too. A request that may have reached the server
(the connection broke after sending it, or 500/502/504) is repeated only when
repeating is harmless: reads and Events. A write raises `MaybeSent` instead, and the
caller checks whether it landed. A body read separately (`_preload_content=False`) is
read in the worker thread too, so a body cut or stalled midway is a transport error of
the call, under its read timeout (urllib3's `ProtocolError`, `ReadTimeoutError` and
refused connections alike: `tests/unit/test_kube_transport_sockets.py`). The connection
makes no retries of its own (`retries=False`: urllib3 raises the failure itself, not a
`MaxRetryError`); the backoff here is the only one.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import random
import socket
import threading
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import urllib3

from gpushift_core.kube.connection import ApiError
from gpushift_core.kube.errors import KubeError, MaybeSent, Unreachable

__all__ = ["Retry", "call", "stream"]

log = logging.getLogger("gpushift.kube")

# Retried for any call: the API refused to take the request (a failure to reach it is a
# transport error, below).
_RETRY_STATUSES = frozenset({429, 503})
# Also retried for reads and Events; for a write the outcome is unknown.
_UNSURE_STATUSES = frozenset({500, 502, 504})


@dataclass(frozen=True)
class Retry:
    """Timeouts of each try, and the backoff while the API server cannot be reached."""

    deadline_seconds: float = 60.0
    """Give up (Unreachable) when the next try would start later than this; 0 tries once."""
    initial_seconds: float = 0.2
    """First pause between tries; doubled after each."""
    max_seconds: float = 5.0
    """Longest pause between tries."""
    connect_timeout_seconds: float = 5.0
    """How long one try waits for a connection."""
    read_timeout_seconds: float = 30.0
    """How long one try waits for the answer."""


async def call(retry: Retry, fn: Any, *args: Any, write: bool = False, **kwargs: Any) -> Any:
    """Run one API call in a thread, retrying while the API cannot be reached.

    `write=True`: a request that may have reached the server is not repeated
    (`MaybeSent` instead), nor is one the server may have carried out (500/502/504)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + retry.deadline_seconds
    delay = retry.initial_seconds
    kwargs.setdefault("_request_timeout",
                      (retry.connect_timeout_seconds, retry.read_timeout_seconds))
    while True:
        try:
            return await asyncio.to_thread(_invoke, fn, args, kwargs)
        except ApiError as exc:
            error = KubeError.from_api(exc)
            if error.status in _UNSURE_STATUSES and write:
                raise MaybeSent(f"{error.status} {error.reason}") from None
            if error.status not in _RETRY_STATUSES | _UNSURE_STATUSES:
                raise error from None
            failure: KubeError = error
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
            if write and not _not_sent(exc):
                raise MaybeSent(f"{type(exc).__name__}: {exc}") from exc
            failure = Unreachable(f"{type(exc).__name__}: {exc}")
        if loop.time() + delay > deadline:
            raise failure
        log.warning("Kubernetes API: %s; retrying in %.1fs", failure, delay)
        await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311
        delay = min(delay * 2, retry.max_seconds)


async def stream(retry: Retry, fn: Any, *args: Any, timeout_seconds: float,
                 **kwargs: Any) -> AsyncGenerator[dict[str, Any], None]:
    """One watch request (`fn(..., watch=True)`): its events as JSON objects, until the
    API server ends it after `timeout_seconds`. Tried once: a failure is a `KubeError`
    (the Status of a refusal, `Unreachable` for the transport), and the caller decides
    whether to watch again or list.

    The response is read in a thread of its own (a daemon: a watch that waits for its
    next event must not hold up the process's exit, as a worker of asyncio's default
    executor would), under a read timeout a little longer than `timeout_seconds`, so a
    connection that went silent ends too. Leaving the iteration ends the read at once
    and closes the connection."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    kwargs.update(watch=True, timeout_seconds=max(1, round(timeout_seconds)),
                  _preload_content=False,
                  _request_timeout=(retry.connect_timeout_seconds,
                                    timeout_seconds + retry.read_timeout_seconds))
    response: list[Any] = []
    stopped = threading.Event()

    def put(kind: str, item: Any) -> None:
        if not stopped.is_set():
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, item))
            except RuntimeError:  # the loop is closed: nobody listens any more
                stopped.set()

    def read() -> None:
        try:
            response.append(fn(*args, **kwargs))
            if stopped.is_set():
                return
            pending = b""
            # read1: what has arrived (an event), not a full buffer's worth.
            while chunk := response[0].read1(64 * 1024):
                if stopped.is_set():
                    return
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        put("event", json.loads(line))
            if pending.strip():
                raise urllib3.exceptions.ProtocolError("the watch ended within an event")
            put("end", None)
        except Exception as exc:
            put("error", exc)  # raised on the event loop, as a KubeError
        finally:
            if response:
                response[0].close()  # its connection too: not back into the pool

    threading.Thread(target=read, name="gpushift-kube-watch", daemon=True).start()
    try:
        while True:
            kind, item = await queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise as_kube_error(item) from item
            yield item
    finally:
        stopped.set()
        # Wake the reading thread, blocked on its socket: a shutdown ends the read at
        # once (closing the response here would wait for the reader's lock instead).
        sock = getattr(response[0].connection, "sock", None) if response else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def as_kube_error(exc: BaseException) -> KubeError:
    """A failure of the client or the transport as a `KubeError`."""
    if isinstance(exc, KubeError):
        return exc
    if isinstance(exc, ApiError):
        return KubeError.from_api(exc)
    return Unreachable(f"{type(exc).__name__}: {exc}")


def _invoke(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The call, in the worker thread. With `_preload_content=False` the client hands
    back the response before its body is read; the body is read here, so that reading
    it is bounded by the read timeout, off the event loop, and a connection that breaks
    mid-body is handled like any other transport error."""
    result = fn(*args, **kwargs)
    if kwargs.get("_preload_content") is False and isinstance(
            result, urllib3.response.BaseHTTPResponse):
        _ = result.data  # cached on the response for the caller
    return result


def _not_sent(exc: BaseException) -> bool:
    """Whether the request surely did not reach the server (no connection was made)."""
    return isinstance(exc, (urllib3.exceptions.NewConnectionError,
                            urllib3.exceptions.ConnectTimeoutError,
                            urllib3.exceptions.SSLError,
                            ConnectionRefusedError))
