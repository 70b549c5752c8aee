"""``cdcsync serve`` as a child process of a test, its JSON logs in a file.

Shared by the fault tests (tests/faults/faultkit.py) and the browser tests
(tests/browser/dashkit.py), which add their own ways of waiting for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

__all__ = ["REPO", "CdcProcess"]

REPO = Path(__file__).resolve().parents[1]


@dataclass
class CdcProcess:
    """``cdcsync serve CONFIG --log-format json`` as a child process, logs to a file."""

    config: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    _log: Any = field(default=None, repr=False)

    def start(self) -> Self:
        self._log = open(self.log_path, "ab")  # closed once the process has exited
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cdcsync", "serve", str(self.config), "--log-format", "json"],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.started_at = time.monotonic()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def kill9(self) -> None:
        """SIGKILL: no drain, no goodbye; the next instance must recover from PostgreSQL."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        self.wait(10)

    def sigterm(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is not None and self._log is not None:
                self._log.close()
                self._log = None

    def stop(self, grace: float = 10.0) -> None:
        """Teardown: SIGTERM, then SIGKILL if it has not exited after ``grace`` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            if self._log is not None:
                self._log.close()
                self._log = None
            return
        self.sigterm()
        try:
            self.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill9()

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if isinstance(obj, dict):
                    out.append(obj)
        return out

    def logged(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.logs() if e.get("event") == event]

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return f"--- {self.log_path} ---\n" + "\n".join(text.splitlines()[-lines:])
