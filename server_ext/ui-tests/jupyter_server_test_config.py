"""Jupyter server configuration for the browser tests (Galata): no token, no XSRF check,
Galata's in-page helpers; the port and root folder come from `pod_server.py`."""

import os

from jupyterlab.galata import configure_jupyter_server

c = get_config()  # noqa: F821 - jupyter's config loader defines it
configure_jupyter_server(c)

c.ServerApp.ip = "127.0.0.1"
c.ServerApp.port = int(os.environ.get("GPUSHIFT_UI_PORT", "8888"))
c.ServerApp.allow_root = True
c.ServerApp.root_dir = os.environ["JUPYTERLAB_GALATA_ROOT_DIR"]
c.LabApp.user_settings_dir = os.path.join(os.environ["GPUSHIFT_UI_RUN_DIR"], "user-settings")

if os.environ.get("GPUSHIFT_UI_HUB"):
    # As JupyterHub's single-user server: JupyterLab then puts the hub's prefix into the
    # page, and its hub plugins (and gpushift's connection-lost handler) act as under a hub.
    c.ServerApp.tornado_settings = {"hub_prefix": "/hub/", "hub_host": "", "user": "ui"}

if os.environ.get("GPUSHIFT_UI_BACKGROUND"):
    # The CPU pod: background checkpoints 0.5 s after a cell, at most every 2 s (the
    # admin's side, with the state bound, is in pod_server.py; the longer interval wins).
    c.GpushiftExtension.background_interval = 2.0
    c.GpushiftExtension.background_quiet = 0.5
