"""kishu settings the driver depends on, pinned in every kernel it attaches to.

Sent to the kernel with each attach (`agent._pin_kishu_settings` makes kishu's
`Config.get` answer these, whatever config.ini says) and written into config.ini by
`config.prepare_kishu_home`.
"""

from __future__ import annotations

PINNED_SETTINGS: dict[tuple[str, str], bool | list[str]] = {
    # No front-end save/reload JavaScript and no waiting for a browser to save.
    ("JUPYTERINT", "test_mode"): True,
    ("JUPYTERINT", "enable_auto_branch"): False,
    ("JUPYTERINT", "enable_auto_commit_when_skip_notebook"): False,
    # Store every picklable variable. With this set, kishu also skips its per-variable
    # size profile: a full dill dump and load of each new value (which reopens pickled
    # file handles, truncating files opened for writing) at every commit.
    ("OPTIMIZER", "always_migrate"): True,
    ("OPTIMIZER", "always_recompute"): False,
    # kishu would append classes it failed to pickle to the shared config.ini.
    ("PROFILER", "auto_add_unpicklable_object"): False,
    ("PROFILER", "excluded_classes"): [],
    # The experimental tracker marks DataFrame columns read-only in the user's kernel.
    ("IDGRAPH", "experimental_tracker"): False,
}


def settings_json() -> list[tuple[str, str, bool | list[str]]]:
    """The settings as JSON-able triples for the kernel."""
    return [(category, entry, value) for (category, entry), value in PINNED_SETTINGS.items()]
