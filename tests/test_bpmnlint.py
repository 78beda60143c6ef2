"""The process diagrams pass bpmnlint's recommended rules (the modeler-side check process owners run)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from conftest import ROOT

BPMNLINT = ROOT / "node_modules" / ".bin" / "bpmnlint"


def test_every_process_diagram_passes_bpmnlint_recommended():
    if not BPMNLINT.exists():
        if os.environ.get("CI"):
            pytest.fail("bpmnlint is not installed: .ci/run must run 'npm install' first")
        pytest.skip("bpmnlint not installed: run 'npm install' (needs Node.js) to enable this check")
    files = sorted(str(p) for p in (ROOT / "processes").glob("*.bpmn"))
    assert len(files) == 5
    node = shutil.which("node")
    assert node, "Node.js is needed to run bpmnlint"
    result = subprocess.run([str(BPMNLINT), *files], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0 and "warning" not in result.stdout, result.stdout + result.stderr
