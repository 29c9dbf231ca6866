"""jupyter_client's local provisioner, starting a kernel in a warm process when one waits
for exactly that kernel (`warm_kernels`). The process it gets is the kernel's as one it
started itself would be: its own session and process group (interrupts signal the
group), its pid for `poll`, `kill` and shutdown; everything after the launch is
`LocalProvisioner`'s.

The server extension makes it the default provisioner only while this server started
warm processes and the admin named no other (`use_when_warm`); a kernelspec that names
its own provisioner keeps it.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.factory import KernelProvisionerFactory
from jupyter_client.provisioning.local_provisioner import LocalProvisioner

from gpushift_jupyter import warm_kernels

NAME = "gpushift-warm-provisioner"
"""Its entry point (`jupyter_client.kernel_provisioners`, see pyproject.toml)."""
LOCAL = "local-provisioner"


class WarmKernelProvisioner(LocalProvisioner):
    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        process, why_not = warm_kernels.claim(cmd, kwargs)
        if process is None:
            if warm_kernels.started_count:
                self.log.info("gpushift: kernel started without a warm process: %s", why_not)
            info: KernelConnectionInfo = await super().launch_kernel(cmd, **kwargs)
            return info
        self.log.info("gpushift: kernel started in a warm process (pid %s)", process.pid)
        self.process = process
        self.pid = process.pid
        try:
            self.pgid = os.getpgid(process.pid)
        except OSError:
            self.pgid = None
        self.cwd = kwargs.get("cwd", pathlib.Path.cwd())
        return self.connection_info


def use_when_warm(parent: Any) -> bool:
    """Make this the default provisioner of `parent`'s kernels (the server's kernel
    manager) when this server started warm processes and the configured default is
    jupyter_client's own; whether it is."""
    if not warm_kernels.started_count:
        return False
    factory = KernelProvisionerFactory.instance(parent=parent)
    if factory.default_provisioner_name != LOCAL:
        return False
    factory.default_provisioner_name = NAME
    return True
