"""A warm kernel process (see `warm_kernels`): `python -m gpushift_jupyter.warm_kernel_main
SECONDS`. Imports what every kernel of a move imports first (ipykernel; gpushift's
kernel-side modules, kishu with them), then waits on stdin for one line: the kernel's
`{"argv", "env", "cwd"}`. It takes that environment and folder and runs ipykernel as
`python -m ipykernel_launcher ARGV` would. End of input, or nothing within SECONDS:
it ends, and no kernel was ever there.
"""

from __future__ import annotations

import importlib.util
import json
import os
import select
import sys
from pathlib import Path


def _wait_for_order(seconds: float) -> dict[str, object] | None:
    ready, _, _ = select.select([sys.stdin.buffer], [], [], seconds)
    line = sys.stdin.buffer.readline() if ready else b""
    order = json.loads(line) if line.strip() else None
    return order if isinstance(order, dict) else None


def main(seconds: float) -> int:
    # As ipykernel_launcher: the folder the program started in is not on sys.path while
    # ipykernel loads (InteractiveShellApp.init_path adds the kernel's own back).
    if sys.path and (sys.path[0] == "" or Path(sys.path[0]) == Path.cwd()):
        del sys.path[0]
    before = dict(os.environ)
    from ipykernel import kernelapp  # noqa: PLC0415 - after the path is set

    from gpushift_jupyter.kernel_state.driver import (  # noqa: PLC0415
        KISHU_IMPORT_MODULE,
        install_expression,
    )

    try:
        eval(install_expression(), {})  # noqa: S307 - gpushift's own modules, as a kernel gets them
        # Imported off the path the user waits on: the restore does not count it.
        setattr(sys.modules[KISHU_IMPORT_MODULE], "seconds", 0.0)  # noqa: B010
    except Exception:  # the kernel's first operation says why, as without gpushift
        # Nothing half-installed stays: the kernel's first operation installs them anew.
        for name in [n for n in sys.modules if n.startswith("_gpushift_")]:
            del sys.modules[name]
    # What the imports set in the environment (as they would have in the kernel), kept.
    set_by_imports = {k: v for k, v in os.environ.items() if before.get(k) != v}
    order = _wait_for_order(seconds)
    if order is None:
        return 0
    env, cwd, argv = order["env"], order["cwd"], order["argv"]
    assert isinstance(env, dict) and isinstance(cwd, str) and isinstance(argv, list)
    os.environ.clear()
    os.environ.update(env)
    os.environ.update(set_by_imports)
    os.chdir(cwd)
    spec = importlib.util.find_spec("ipykernel_launcher")
    sys.argv = [spec.origin if spec and spec.origin else "ipykernel_launcher", *argv]
    kernelapp.launch_new_instance()
    return 0


if __name__ == "__main__":
    sys.exit(main(float(sys.argv[1]) if len(sys.argv) > 1 else 300.0))
