"""How the kishu driver runs code in a notebook kernel."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class KernelStateError(Exception):
    """A checkpoint or restore did not happen; the message says why, for people
    (database missing or corrupt, commit unknown, kernel dead or busy past the timeout).
    Nothing on disk was deleted or overwritten."""


@dataclass(frozen=True)
class RunResult:
    status: str
    """The kernel's reply status: `ok`, `error` or `aborted`."""
    error: str = ""
    """`ename: evalue` when status is `error`."""
    expressions: Mapping[str, str] = field(default_factory=dict)
    """The `text/plain` value of each user expression asked for."""


class KernelCode(Protocol):
    """Runs code in one kernel."""

    async def run(self, code: str, *, timeout: float, record: bool,
                  expressions: Mapping[str, str] | None = None) -> RunResult:
        """Execute `code`. record=True: an ordinary execution (store_history=True,
        silent=False: it takes an execution count, enters the history, and IPython's
        pre/post_run_cell hooks run); record=False: silent helper code, invisible to
        the user. `expressions` are evaluated after the code and its hooks, when it
        succeeded. Raises
        KernelStateError when the kernel does not answer within `timeout` seconds."""
        ...


class ClientKernel:
    """`KernelCode` over a started `jupyter_client.AsyncKernelClient` (for example
    `serverapp.kernel_manager.get_kernel(kernel_id).client()` after
    `start_channels()`). The caller owns the client and its channels."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def run(self, code: str, *, timeout: float, record: bool,
                  expressions: Mapping[str, str] | None = None) -> RunResult:
        if not await _is_alive(self.client):
            raise KernelStateError("the kernel is not running (it died or was shut down)")
        try:
            reply = await self.client.execute_interactive(
                code, silent=not record, store_history=record,
                user_expressions=dict(expressions or {}), allow_stdin=False,
                stop_on_error=False, timeout=timeout, output_hook=_ignore_output)
        except TimeoutError:
            alive = await _is_alive(self.client)
            raise KernelStateError(
                f"the kernel did not answer within {timeout:.0f} s"
                + ("" if alive else " (it is not running)")
                + ("; it may still be busy with a long cell" if alive else "")) from None
        except RuntimeError as exc:  # e.g. channels not started, kernel gone
            raise KernelStateError(f"cannot talk to the kernel: {exc}") from None
        content = reply["content"]
        status = str(content.get("status", "error"))
        error = (f"{content.get('ename', '')}: {content.get('evalue', '')}"
                 if status == "error" else "")
        values: dict[str, str] = {}
        for name, value in (content.get("user_expressions") or {}).items():
            if value.get("status") == "ok":
                values[name] = str(value.get("data", {}).get("text/plain", ""))
            else:
                values[name] = ""
                error = error or f"{value.get('ename', '')}: {value.get('evalue', '')}"
        return RunResult(status=status, error=error, expressions=values)


def _ignore_output(msg: dict[str, Any]) -> None:
    """The driver's code prints nothing worth showing; without a hook,
    execute_interactive would echo the kernel's output in the server's own stdout."""


async def _is_alive(client: Any) -> bool:
    try:
        return bool(await client.is_alive())
    except Exception:
        return False
