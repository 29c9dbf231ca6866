"""The idle timer of a GPU pod (pure: every input carries its time, nothing reads a clock).

On a GPU pod, no GPU work for the idle timeout moves the notebook back to CPU. GPU work
is: a GPU cell running in some kernel, a GPU cell that finished (the timer restarts
then), or a GPU utilisation sample at or above the admin's threshold. A sample of None
(NVML unavailable) says nothing and is ignored.

Idle means idle: while any kernel of the pod is busy (a cell runs, GPU or not: a long
pandas cell too), the timer does not run, and when the last busy kernel goes idle it
starts over from then (`observe_kernels`). As Kubeflow's culler, the idle move never
kills a running cell. Reports expire: with `report_ttl`, a GPU cell or busy kernel that
no report has confirmed for that long no longer counts (a closed tab never said its cell
ended; a server that went away reports nothing), and the timer runs from the last
confirmation. The server extension confirms both every few seconds from the kernels'
own execution state, so only a silent notebook side lets them expire.

    active --(timeout - warning_seconds idle)--> idle-warning --(timeout idle)--> move

The warning shows for the last `warning_seconds` of the timeout, so the move happens
after exactly `timeout` idle seconds; `warning_until` is when. `stay()` (the user's
"stay on GPU") and any GPU work reset the timer. `tick()` hands out each transition once:
a `warn` when the warning starts and a `move` when it ran out; after a move the timer
stays in `move` (nothing more is emitted) until it is reset.

On a CPU pod the timer is inert. So it is on a GPU pod until the notebook side has
registered (`register_notebook_side`: gpushift's server extension spoke to the sidecar):
only the extension reports GPU cells, and NVML in the sidecar usually sees no GPU, so a
pod without it (a Jupyter image lacking the extension, a VSCode or RStudio server) would
look idle while it trains, and be moved off its GPU mid-run. It is left alone instead,
and says why. And it is inert for a server type the admin keeps the optimizer off for
(`set_server_type_off`). A notebook annotated `gpushift.io/notebook-pin-gpu:
"true"` (or `gpushift.io/pin-gpu: "true"`) is never moved on idle, if the admin allows
pinning (`idle.allow_pin`). The annotation `gpushift.io/notebook-idle-timeout` (or
`gpushift.io/idle-timeout`; the first wins when both are set) overrides the timeout:
seconds ("300") or a duration ("5m", "90s", "1h", "1h30m"), clamped into the admin's
[min_seconds, max_seconds].

Kubeflow's notebook-controller copies every Notebook annotation whose key contains
neither "notebook" nor "kubectl" into the pod template: `gpushift.io/idle-timeout` and
`gpushift.io/pin-gpu` work, but changing them on a running Notebook recreates its pod
(and kills its kernels). The `notebook-` keys stay on the Notebook and can change at any
time.

Times are epoch seconds, like the server extension's activity reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from gpushift_core.admin_settings import IdleSettings

# Defined in the core, where the webhook's report reads them too.
from gpushift_core.idle_timeout import (
    PIN_ANNOTATION,
    PIN_ANNOTATIONS,
    Timeout,
    pin_requested,
    resolve_timeout,
    timeout_annotation,
)

NOT_REGISTERED = ("notebook side not registered: gpushift's Jupyter server extension has "
                  "not reported from this pod, so GPU work cannot be seen and the idle "
                  "timer does not run")


class IdleState(StrEnum):
    INERT = "inert"
    """Not a GPU pod, or one gpushift cannot watch (`IdleTimer.hold_reason`)."""
    PINNED = "pinned"
    """Pinned to its GPU by annotation, and the admin allows it."""
    ACTIVE = "active"
    """GPU work, or idle for less than timeout - warning_seconds."""
    WARNING = "idle-warning"
    """Idle long enough that the move is near: the user may choose to stay."""
    MOVE = "move"
    """The timeout ran out: the notebook is to move to CPU."""


@dataclass(frozen=True)
class IdleTransition:
    action: Literal["warn", "move"]
    at: float
    """When it happened (the tick's time)."""
    idle_since: float
    """The last GPU work (or the timer's start, or the last reset)."""
    timeout: int
    warning_until: float
    """When the move is (or was) due: idle_since + timeout."""


class IdleTimer:
    """One notebook's idle timer. Feed it activity, utilisation samples and ticks."""

    def __init__(self, settings: IdleSettings, *, on_gpu: bool, now: float,
                 annotations: Mapping[str, str] | None = None,
                 registered: bool = True, report_ttl: float | None = None) -> None:
        """`registered` False: inert until `register_notebook_side` (the sidecar's
        loop starts so; True is for driving the timer alone). `report_ttl`: seconds a
        report of a running GPU cell or a busy kernel counts without being confirmed
        again (None: until a report says otherwise)."""
        self.settings = settings
        self.report_ttl = report_ttl
        self.on_gpu = on_gpu
        self.registered = registered
        """The notebook side (gpushift's server extension) has reported."""
        self.server_type_off: str | None = None
        """Why the optimizer is off for this notebook's server type (None: it is on)."""
        self._idle_since = now
        self._running: dict[str, float] = {}
        """Kernels with a GPU cell running now -> when a report last said so."""
        self._busy: frozenset[str] = frozenset()
        """Kernels busy (executing) at the last `observe_kernels`."""
        self._busy_at = now
        """When that was observed."""
        self._warned = False
        self._moved = False
        self._reason: str | None = None
        """Why the timer was last reset or changed state (for people)."""
        self.timeout = Timeout(settings.timeout_seconds, None, "default")
        self.pinned = False
        self._pin_key = PIN_ANNOTATION
        self._pin_reason: str | None = None
        self._annotations: Mapping[str, str] = {}
        self.user_seconds: int | None = None
        """The user's own timeout (JupyterLab's settings, `PUT /idle/timeout`)."""
        self.configure(annotations or {})

    # -- inputs ----------------------------------------------------------------------

    def configure(self, annotations: Mapping[str, str]) -> None:
        """Apply the notebook's annotations (timeout override, pin); may change any time."""
        self._annotations = dict(annotations)
        self._resolve_timeout()
        wants_pin = pin_requested(annotations)
        self.pinned = wants_pin and self.settings.allow_pin
        self._pin_key = _pin_key(annotations)
        self._pin_reason = None
        if wants_pin and not self.settings.allow_pin:
            self._pin_reason = (f"{self._pin_key} is ignored: the admin does not "
                                "allow pinning a notebook to its GPU")

    def set_user_timeout(self, seconds: int | None) -> None:
        """The user's timeout from the browser (None: back to the annotation or the
        admin's default). It wins over the annotation — it is the user's latest word —
        and, like it, is clamped into the admin's bounds."""
        self.user_seconds = seconds
        self._resolve_timeout()

    def _resolve_timeout(self) -> None:
        if self.user_seconds is not None:
            self.timeout = resolve_timeout(self.settings, str(self.user_seconds),
                                           "the user's setting", source="user")
            return
        override = timeout_annotation(self._annotations)
        self.timeout = (resolve_timeout(self.settings, None) if override is None else
                        resolve_timeout(self.settings, override[1], override[0]))

    def report_activity(self, kernel_id: str, *, gpu_cell_running: bool,
                        gpu_cell_finished_at: float | None, now: float) -> None:
        """A kernel's activity report (the server extension's `POST /activity`)."""
        if gpu_cell_running:
            self._running[kernel_id] = now
            self._activity(now, "a GPU cell is running")
        else:
            was_running = self._running.pop(kernel_id, None) is not None
            if was_running:
                self._activity(now, "a GPU cell finished")
        if gpu_cell_finished_at is not None:
            self._activity(min(gpu_cell_finished_at, now), "a GPU cell finished")

    def observe_kernels(self, *, busy: frozenset[str], gpu_cells_running: frozenset[str],
                        now: float) -> None:
        """The server extension's view of every kernel of the pod, from the kernels'
        own execution state: those busy now, and those running a GPU cell. It replaces
        what tabs reported (a tab that closed mid-cell never says the cell ended)."""
        for kernel_id in gpu_cells_running:
            self._running[kernel_id] = now
        ended = [k for k in self._running if k not in gpu_cells_running]
        for kernel_id in ended:
            del self._running[kernel_id]
        if gpu_cells_running:
            self._activity(now, "a GPU cell is running")
        elif ended:
            self._activity(now, "a GPU cell finished")
        was_busy = bool(self._busy_now(now))
        self._busy, self._busy_at = busy, now
        if busy:
            self._activity(now, f"a cell is running in {len(busy)} kernel(s)")
        elif was_busy:
            self._activity(now, "the last busy kernel went idle")

    def forget_kernel(self, kernel_id: str, now: float) -> None:
        """The kernel is gone: a GPU cell it was running no longer counts."""
        if self._running.pop(kernel_id, None) is not None:
            self._activity(now, "a kernel with a running GPU cell went away")

    def observe_utilization(self, percent: float | None, now: float) -> None:
        """A GPU utilisation sample (max over the pod's GPUs); None: NVML unavailable.
        0 % is always idle; at or above the threshold is GPU work."""
        if percent is None:
            return
        if percent > 0 and percent >= self.settings.utilization_threshold_percent:
            self._activity(now, f"GPU utilisation {percent:g}%")

    def register_notebook_side(self, now: float) -> bool:
        """The notebook side reported for the first time: the timer starts from now
        (idle time before it was not seen, so it does not count). True when it is new."""
        if self.registered:
            return False
        self.registered = True
        self._reset(now, "the notebook side registered: the idle timer starts")
        return True

    def set_server_type_off(self, reason: str | None, now: float) -> None:
        """The optimizer is off (reason) or on (None) for the notebook's server type."""
        if reason == self.server_type_off:
            return
        self.server_type_off = reason
        self._reset(now, reason or "the optimizer is on for this server type: the idle "
                                   "timer starts")

    def hold_reason(self) -> str | None:
        """Why the timer does not run (None: it runs)."""
        if not self.on_gpu:
            return "not a GPU pod"
        if self.server_type_off is not None:
            return self.server_type_off
        return None if self.registered else NOT_REGISTERED

    def stay(self, now: float) -> None:
        """The user chose to stay on the GPU: a fresh timeout from now."""
        self._reset(now, "the user chose to stay on the GPU")

    def reset(self, now: float, reason: str) -> None:
        """Start over (e.g. the move did not happen), as after GPU work."""
        self._reset(now, reason)

    # -- outputs ---------------------------------------------------------------------

    def work_seen(self, now: float) -> bool:
        """A GPU cell or a busy kernel by a report that has not expired, even one that
        came after the move was decided: the move's last look before it starts."""
        return bool(self._running_now(now) or self._busy_now(now))

    def gpu_cells_running(self, now: float) -> int:
        """Kernels running a GPU cell now, by reports that have not expired."""
        return len(self._running_now(now))

    def state(self, now: float) -> IdleState:
        if self.hold_reason() is not None:
            return IdleState.INERT
        if self.pinned:
            return IdleState.PINNED
        if self._moved:
            return IdleState.MOVE
        if self._running_now(now) or self._busy_now(now):
            return IdleState.ACTIVE
        idle_for = now - self._idle_since
        if idle_for >= self.timeout.seconds:
            return IdleState.MOVE
        if idle_for >= self.timeout.seconds - self.settings.warning_seconds:
            return IdleState.WARNING
        return IdleState.ACTIVE

    def tick(self, now: float) -> IdleTransition | None:
        """Advance to `now`; the warning and the move are each returned once."""
        state = self.state(now)
        due = self._idle_since + self.timeout.seconds
        if state is IdleState.ACTIVE:
            self._warned = False  # e.g. the timeout was raised during the warning
        if state is IdleState.MOVE and not self._moved:
            self._moved = True
            self._reason = f"no GPU work for {self.timeout.seconds}s"
            return IdleTransition("move", now, self._idle_since, self.timeout.seconds, due)
        if state is IdleState.WARNING and not self._warned:
            self._warned = True
            self._reason = (f"no GPU work for {now - self._idle_since:.0f}s; moving to CPU "
                            f"at {self.timeout.seconds}s")
            return IdleTransition("warn", now, self._idle_since, self.timeout.seconds, due)
        return None

    def next_deadline(self, now: float) -> float | None:
        """When `tick` next has something to say (None: nothing planned)."""
        state = self.state(now)
        if state in (IdleState.INERT, IdleState.PINNED) or self._moved:
            return None
        confirmed = [*self._running.values(), *([self._busy_at] if self._busy else [])]
        if self._running_now(now) or self._busy_now(now):
            # Nothing to say until a report comes, or the last one expires.
            return (None if self.report_ttl is None
                    else max(confirmed) + self.report_ttl)
        due = self._idle_since + self.timeout.seconds
        if state is IdleState.ACTIVE:
            return due - self.settings.warning_seconds
        if state is IdleState.WARNING and not self._warned:
            return now
        return due

    def snapshot(self, now: float) -> dict[str, Any]:
        """What the API shows (and the front end's countdown reads)."""
        state = self.state(now)
        live = state not in (IdleState.INERT, IdleState.PINNED)
        due = self._idle_since + self.timeout.seconds
        running, busy = self._running_now(now), self._busy_now(now)
        reasons = [r for r in (self._pin_reason, self.timeout.reason,
                               self._reason if live else None) if r]
        if state is IdleState.INERT:
            reasons.insert(0, self.hold_reason() or "")
        elif state is IdleState.PINNED:
            reasons.insert(0, f"pinned to its GPU ({self._pin_key})")
        elif busy and not running and not self._moved:
            reasons.insert(0, f"a cell is running in {len(busy)} kernel(s): no idle move "
                              "while a kernel is busy")
        return {
            "state": state.value,
            "idle_for": (max(0.0, now - self._idle_since)
                         if live and not running and not busy else 0.0),
            "idle_since": self._idle_since if live else None,
            "timeout": self.timeout.seconds,
            "timeout_source": self.timeout.source,
            "warning_seconds": self.settings.warning_seconds,
            "warning_until": due if state in (IdleState.WARNING, IdleState.MOVE) else None,
            "gpu_cells_running": len(running),
            "kernels_busy": len(busy),
            "pinned": self.pinned,
            "notebook_side_registered": self.registered,
            "reason": "; ".join(reasons) or None,
        }

    # -- inside ----------------------------------------------------------------------

    def _running_now(self, now: float) -> list[str]:
        """Kernels running a GPU cell by a report that has not expired."""
        ttl = self.report_ttl
        return [k for k, at in self._running.items() if ttl is None or now - at <= ttl]

    def _busy_now(self, now: float) -> frozenset[str]:
        """Busy kernels by the last view, unless it expired."""
        if self.report_ttl is not None and now - self._busy_at > self.report_ttl:
            return frozenset()
        return self._busy

    def _activity(self, at: float, why: str) -> None:
        if self._moved:
            return  # the decision is out; only reset() or stay() take it back
        if at >= self._idle_since:
            self._idle_since = at
            self._warned = False
            self._reason = why

    def _reset(self, now: float, why: str) -> None:
        self._idle_since = now
        self._warned = False
        self._moved = False
        self._reason = why


def _pin_key(annotations: Mapping[str, str]) -> str:
    return next((key for key in PIN_ANNOTATIONS
                 if annotations.get(key, "").strip().lower() == "true"), PIN_ANNOTATION)
