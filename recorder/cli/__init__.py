"""The ``codetape`` command line: a thin layer over the library API.

Each module below registers its commands on :data:`main`; importing this
package registers them all. The modules import the library when a command
runs, not when the command line starts.
"""

from recorder.cli import (  # noqa: F401
    audit_cmd,
    capture_cmds,
    container_cmds,
    cost_cmd,
    db_cmds,
    demo_cmd,
    insight_cmds,
    integrity_cmds,
    log_cmds,
    projection_cmds,
    replay_cmds,
    stream_cmds,
    transfer_cmds,
    verify_cmd,
)
from recorder.cli.app import main

__all__ = ["main"]
