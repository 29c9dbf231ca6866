"""Supervised background loops (kopf-style daemons) for the webhook Deployment.

The Deployment runs loops besides admission: the migration guard, its Lease, the
self-managed certificates, the Notebooks' server types. A loop that dies quietly is
worse than one that crashes the process: `/readyz` stays green while the guard no
longer rolls anything back, or while the serving certificate runs towards its expiry
(then every notebook pod is admitted without gpushift, fail-open). So each loop runs
under `Supervisor.start`:

* an exception that escapes the loop (a bug, anything but cancellation) is logged as
  JSON with its traceback, counted in `gpushift_loop_restarts_total{loop}`, and the loop
  is started again after an exponential backoff (doubling from `backoff_initial_seconds`
  up to `backoff_max_seconds`; back to the start once a pass completes again);
* a loop says when it completed a pass (`LoopHealth.passed`): a pass that reached the
  API server and did its work. Failures the loop expects (`KubeError`: the apiserver is
  down) are the loop's to retry, but they complete no pass;
* a loop without a completed pass for `deadline_seconds` is stalled
  (`Supervisor.stalled`): the server's `/healthz` answers 503 naming it, so the kubelet
  restarts a replica whose loop is wedged.

The clock is injectable, so the decisions are tested without waiting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gpushift_webhook.metrics import WebhookMetrics

__all__ = ["LoopHealth", "LoopSettings", "Stall", "Supervisor"]

log = logging.getLogger("gpushift.loops")


@dataclass(frozen=True)
class LoopSettings:
    """How one loop is supervised."""

    name: str
    """The loop's name in logs, metrics (`loop` label) and `/healthz`."""
    deadline_seconds: float
    """Longest time without a completed pass before the loop counts as stalled and
    `/healthz` fails; counted from the start for the first pass. Make it several
    passes long: a short API server outage should not restart the replica."""
    backoff_initial_seconds: float = 1.0
    """Pause before the first restart after a crash; doubled after each crash."""
    backoff_max_seconds: float = 60.0
    """Longest pause between restarts."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a loop needs a name")
        if self.deadline_seconds <= 0:
            raise ValueError(f"loop {self.name}: deadline_seconds must be positive")
        if not 0 < self.backoff_initial_seconds <= self.backoff_max_seconds:
            raise ValueError(f"loop {self.name}: need 0 < backoff_initial_seconds <= "
                             "backoff_max_seconds")


@dataclass(frozen=True)
class Stall:
    """A loop that has not completed a pass within its deadline."""

    loop: str
    seconds_since_pass: float
    """Seconds since its last completed pass (or since it started, when none)."""
    deadline_seconds: float
    restarts: int
    """Times it crashed and was started again."""
    last_error: str
    """The last crash, as "Type: message" ("" when none)."""


class LoopHealth:
    """What the supervisor knows about one loop; the loop calls `passed()`."""

    def __init__(self, settings: LoopSettings, clock: Callable[[], float],
                 metrics: WebhookMetrics | None) -> None:
        self.settings = settings
        self._clock = clock
        self._metrics = metrics
        self.last_pass = clock()
        """Clock time of the last completed pass (at first: when supervision began)."""
        self.passes = 0
        """Completed passes."""
        self.restarts = 0
        self.last_error = ""

    def passed(self) -> None:
        """Record a completed pass (called by the loop)."""
        self.last_pass = self._clock()
        self.passes += 1
        if self._metrics is not None:
            self._metrics.loop_last_pass.labels(self.settings.name).set(time.time())

    def stall(self) -> Stall | None:
        """A Stall when the deadline has passed since the last completed pass."""
        since = self._clock() - self.last_pass
        if since <= self.settings.deadline_seconds:
            return None
        return Stall(self.settings.name, round(since, 1), self.settings.deadline_seconds,
                     self.restarts, self.last_error)


Body = Callable[[LoopHealth], Awaitable[None]]


class Supervisor:
    """Starts loops, restarts them when they crash, and tells which are stalled."""

    def __init__(self, metrics: WebhookMetrics | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.metrics = metrics
        self.loops: dict[str, LoopHealth] = {}
        self._clock = clock
        self._sleep = sleep

    def start(self, settings: LoopSettings, body: Body) -> asyncio.Task[None]:
        """Run `body(health)` under supervision in a task (cancel the task to stop)."""
        if settings.name in self.loops:
            raise ValueError(f"loop {settings.name} is supervised already")
        health = LoopHealth(settings, self._clock, self.metrics)
        self.loops[settings.name] = health
        if self.metrics is not None:
            # Present from the start, so a rate() over it has a beginning.
            self.metrics.loop_restarts.labels(settings.name)
            self.metrics.loop_deadline.labels(settings.name).set(settings.deadline_seconds)
        return asyncio.create_task(self.supervise(health, body),
                                   name=f"gpushift-loop-{settings.name}")

    async def supervise(self, health: LoopHealth, body: Body) -> None:
        """Run the loop until cancelled, starting it again after each crash."""
        s = health.settings
        delay = s.backoff_initial_seconds
        while True:
            passes_before = health.passes
            try:
                await body(health)
                # A loop is meant to run until cancelled: returning is a fault too.
                raise RuntimeError("the loop returned")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if health.passes > passes_before:
                    delay = s.backoff_initial_seconds  # it worked for a while
                health.restarts += 1
                health.last_error = f"{type(exc).__name__}: {exc}"
                if self.metrics is not None:
                    self.metrics.loop_restarts.labels(s.name).inc()
                log.error("loop %s crashed; restarting in %.1f s", s.name, delay,
                          exc_info=True, extra={
                              "loop": s.name, "restarts": health.restarts,
                              "backoff_seconds": delay, "error": health.last_error})
            await self._sleep(delay)
            delay = min(delay * 2, s.backoff_max_seconds)

    def now(self) -> float:
        """The supervisor's clock (what `LoopHealth.last_pass` is measured on)."""
        return self._clock()

    def stalled(self) -> list[Stall]:
        """The loops past their deadline, by name."""
        return [stall for _, h in sorted(self.loops.items())
                if (stall := h.stall()) is not None]
