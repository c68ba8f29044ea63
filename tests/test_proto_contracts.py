"""The vpp.v1 contracts: generated code never drifts from proto/, and buf lint passes."""

from __future__ import annotations

import filecmp
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _generate_module() -> object:
    spec = importlib.util.spec_from_file_location("proto_generate", REPO / "proto" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_matches_the_proto_files(tmp_path: Path) -> None:
    generate = _generate_module()
    written = generate.generate(tmp_path)  # type: ignore[attr-defined]
    fresh = {p.relative_to(tmp_path) for p in written}
    committed = {p.relative_to(REPO) for p in (REPO / "vpp").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert fresh == committed, "generated files differ from vpp/: run `python proto/generate.py`"
    drifted = [str(rel) for rel in sorted(fresh) if not filecmp.cmp(tmp_path / rel, REPO / rel, shallow=False)]
    assert drifted == [], f"vpp/ is out of date with proto/ ({drifted}): run `python proto/generate.py`"


def _buf() -> str | None:
    for candidate in (Path(sys.executable).parent.parent / "buf" / "node_modules" / ".bin" / "buf",):
        if candidate.exists():
            return str(candidate)
    return shutil.which("buf")


def test_buf_lint_passes() -> None:
    buf = _buf()
    if buf is None:
        pytest.skip("buf is not installed (./dev test installs it from npm when npm is available)")
    result = subprocess.run([buf, "lint"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
