"""The ``codetape`` command line: a thin layer over the library API.

Each module below registers its commands on :data:`main` when imported; the
group imports a command's module only when that command runs (see
:mod:`recorder.cli.commands`), and the modules import the library when a
command runs, so ``codetape --help`` imports neither. :func:`load_all`
imports every command module (for tools that walk ``main.commands``).
"""

from __future__ import annotations

import importlib

from recorder.cli.app import main

__all__ = ["load_all", "main"]


def load_all() -> None:
    """Import every command module, so ``main.commands`` holds every command."""
    from recorder.cli.commands import COMMANDS

    for module, _help in COMMANDS.values():
        importlib.import_module(f"recorder.cli.{module}")
