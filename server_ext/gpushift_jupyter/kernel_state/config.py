"""kishu's config.ini for kernels with no browser attached to kishu (headless).

kishu reads `$KISHU_PATH_ROOT/.kishu/config.ini` (default root: the home directory), and
edits it on its own (it appends classes to `excluded_classes`), which then changes how
every later notebook is saved. The driver pins the settings it depends on inside each
kernel (`agent.PINNED_SETTINGS`), whatever this file says; the file is written as well
so that kishu's own command line (`kishu log`, ...) behaves the same way.
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path

from gpushift_jupyter.kernel_state.agent_settings import PINNED_SETTINGS

ENV_KISHU_PATH_ROOT = "KISHU_PATH_ROOT"


def prepare_kishu_home(root: Path) -> Path:
    """Write `<root>/.kishu/config.ini` with the pinned settings (other entries already
    in the file are kept) and return its path. Kernels must be started with
    `KISHU_PATH_ROOT=<root>` (see `kishu_environment`)."""
    folder = root / ".kishu"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.ini"
    parser = configparser.ConfigParser()
    if path.exists():
        parser.read(path)
    for (category, entry), value in PINNED_SETTINGS.items():
        if not parser.has_section(category):
            parser.add_section(category)
        parser.set(category, entry, str(value))
    text = _render(parser)
    if not path.exists() or path.read_text() != text:
        partial = path.with_name(f".config.ini.{os.getpid()}")
        partial.write_text(text)
        partial.replace(path)  # readers never see half a file
    return path


def kishu_environment(root: Path) -> dict[str, str]:
    """Environment entries a kernel needs so that kishu uses `root`'s config."""
    return {ENV_KISHU_PATH_ROOT: str(root)}


def _render(parser: configparser.ConfigParser) -> str:
    lines: list[str] = []
    for section in parser.sections():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {value}" for key, value in parser.items(section, raw=True))
        lines.append("")
    return "\n".join(lines)
