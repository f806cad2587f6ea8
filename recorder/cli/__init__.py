"""The ``codetape`` command line: a thin layer over the library API.

Each module below registers its commands on :data:`main`; importing this
package registers them all.
"""

from recorder.cli import capture_cmds as _capture_cmds  # noqa: F401
from recorder.cli import insight_cmds as _insight_cmds  # noqa: F401
from recorder.cli import integrity_cmds as _integrity_cmds  # noqa: F401
from recorder.cli import log_cmds as _log_cmds
from recorder.cli import replay_cmds as _replay_cmds  # noqa: F401
from recorder.cli import report_cmds as _report_cmds  # noqa: F401
from recorder.cli.app import main

__all__ = ["main"]
_ = _log_cmds
