"""The layer contract (``[tool.importlinter]`` in pyproject.toml) holds, and fails on a deliberate violation;
workflows stay import-light (the forbidden contract, and what a fresh interpreter really loads).

``./dev test`` runs ``lint-imports`` on the project itself; these tests run it on a copy of the project's
packages so that a violation can be planted without touching the working tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _root_packages() -> list[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages: list[str] = config["tool"]["importlinter"]["root_packages"]
    return packages


def _copy_project(target: Path) -> None:
    """The project's packages (Python files only) and its pyproject.toml, under ``target``."""
    for package in _root_packages():
        for source in (REPO / package).rglob("*.py"):
            destination = target / source.relative_to(REPO)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, destination)
    shutil.copyfile(REPO / "pyproject.toml", target / "pyproject.toml")


def _lint_imports(project: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(project)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=project, env=environment, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not LINT_IMPORTS.exists():
        pytest.skip(f"lint-imports is not installed next to {sys.executable}")
    target = tmp_path_factory.mktemp("layers")
    _copy_project(target)
    return target


def test_the_project_keeps_its_layer_contract(project_copy: Path) -> None:
    result = _lint_imports(project_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


@pytest.mark.parametrize(("module", "planted", "expected"), [
    # Pure domain code reaching up into a gRPC service.
    ("algorithms/market/forecast.py", "import services.market_data",
     "algorithms.market.forecast -> services.market_data"),
    # An activity importing the workflow that calls it.
    ("activities/cycle.py", "import workflows.autobidder", "activities.cycle -> workflows.autobidder"),
    # The market domain importing the VPP domain built on it.
    ("algorithms/market/clearing.py", "import algorithms.fleet.fleet_bid",
     "algorithms.market.clearing -> algorithms.fleet.fleet_bid"),
    # A workflow doing maths itself.
    ("workflows/dispatch.py", "import numpy", "workflows.dispatch -> numpy"),
    # A workflow reaching a database client through the facts it imports (an indirect import counts).
    ("activities/peak_shaving_facts.py", "import psycopg", "activities.peak_shaving_facts -> psycopg"),
    # ... or the numeric stack through the pure types it imports.
    ("algorithms/fleet/peak_shaving_types.py", "import algorithms.fleet.peak_shaving",
     "algorithms.fleet.peak_shaving -> numpy"),
    # The AEMO stand-in sharing the platform's validator (it must stay an independent check).
    ("aemo_sandbox/rules.py", "import algorithms.market.bid_validation",
     "aemo_sandbox.rules -> algorithms.market.bid_validation"),
    # Deployed code importing the stand-in.
    ("services/aemo_bidding.py", "import aemo_sandbox.server", "services.aemo_bidding -> aemo_sandbox.server"),
])
def test_a_planted_upward_import_breaks_the_contract(tmp_path: Path, project_copy: Path, module: str, planted: str,
                                                     expected: str) -> None:
    violated = tmp_path / "violated"
    shutil.copytree(project_copy, violated)
    target = violated / module
    target.write_text(target.read_text() + f"\n{planted}  # planted by the test\n")
    result = _lint_imports(violated)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    assert expected in result.stdout


def _forbidden_for_workflows() -> list[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    [contract] = [c for c in config["tool"]["importlinter"]["contracts"] if c.get("source_modules") == ["workflows"]]
    forbidden: list[str] = contract["forbidden_modules"]
    return forbidden


def _loaded_top_level(modules: list[str], candidates: list[str]) -> set[str]:
    """Which of ``candidates`` (top-level packages) a fresh interpreter has loaded after importing ``modules``."""
    code = (f"import importlib, sys\nfor name in {modules!r}: importlib.import_module(name)\n"
            f"print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}} & {set(candidates)!r})))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                            check=True)
    return set(result.stdout.split())


def test_importing_the_workflows_loads_none_of_the_forbidden_libraries() -> None:
    """What the contract means at run time, through external packages too: importing every workflow module
    loads no forbidden library beyond what the Temporal SDK itself loads (it imports grpc)."""
    forbidden = _forbidden_for_workflows()
    workflow_modules = sorted(f"workflows.{path.stem}" for path in (REPO / "workflows").glob("*.py"))
    assert "workflows.peak_shaving" in workflow_modules
    by_the_sdk = _loaded_top_level(["temporalio.workflow", "temporalio.client", "temporalio.worker"], forbidden)
    assert "numpy" not in by_the_sdk
    assert _loaded_top_level(workflow_modules, forbidden) - by_the_sdk == set()
