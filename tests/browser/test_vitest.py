"""The dashboard's Vitest unit tests (data shaping: series, rates, status), run by pytest
so that the one test command covers them."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from dashkit import DASHBOARD


def test_dashboard_unit_tests_pass(node_modules: Path) -> None:
    """`npm --prefix dashboard test` (vitest run) exits 0 with every test passed."""
    result = subprocess.run(
        ["npm", "--prefix", str(DASHBOARD), "test"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    summary = re.search(r"Tests\s+(\d+) passed \((\d+)\)", output)
    assert summary, output
    assert summary.group(1) == summary.group(2) and int(summary.group(1)) >= 20, output
