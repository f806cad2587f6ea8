"""Build codetape's wheel once and install it into a fresh virtualenv.

The venv gets only the wheel (``--no-deps --no-index``); its dependencies come
from the test environment's site-packages through a ``.pth`` line, whose own
``.pth`` files (the editable install of this checkout among them) are not
read, so the code that runs is the wheel's, not the checkout's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class WheelVenv:
    root: Path

    def bin(self, name: str) -> str:
        return str(self.root / "bin" / name)

    def env(self, *drop: str) -> dict[str, str]:
        """This process's environment without PYTHONPATH, CODETAPE_DB and ``drop``."""
        removed = {"PYTHONPATH", "CODETAPE_DB", *drop}
        return {k: v for k, v in os.environ.items() if k not in removed}


def install_wheel(workdir: Path) -> WheelVenv:
    dist = workdir / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("codetape-*.whl")
    venv = WheelVenv(workdir / "venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv.root)], check=True)
    subprocess.run(
        [venv.bin("python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
    )
    purelib = subprocess.run(
        [venv.bin("python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv
