"""The platform image (Dockerfile) matches what the deployment contract and the Terraform task
definitions expect: a Python 3.11 image with every package, the MMS data and the state folder where the
contract puts them, running as the task's user on a read-only root file system."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from stack.deployment import CONTAINER_DATA_DIR, CONTAINER_STATE_DIR

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()
SERVICE_VARIABLES = (REPO_ROOT / "infra/terraform/modules/service/variables.tf").read_text()


def _instructions(name: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.startswith(f"{name} ")]


def test_the_base_is_the_python_the_project_needs() -> None:
    [base] = _instructions("FROM")
    assert re.match(r"python:3\.11(-|$)", base), base
    requires = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert "3.11" in requires


def test_every_package_of_the_distribution_is_copied_and_installed() -> None:
    packages = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    copied = {source.split()[0] for source in _instructions("COPY")}
    for pattern in packages["include"]:
        assert pattern.rstrip("*") in copied, f"package {pattern} is not copied into the image"
    assert any("pip install ." in run for run in _instructions("RUN"))


def test_data_and_state_are_where_the_contract_puts_them() -> None:
    assert any(source.split() == ["data/nem", CONTAINER_DATA_DIR] for source in _instructions("COPY"))
    setup = " ".join(_instructions("RUN"))
    assert f"mkdir -p {CONTAINER_STATE_DIR}" in setup and f"chown 1000:1000 {CONTAINER_STATE_DIR}" in setup
    env = " ".join(_instructions("ENV"))
    assert f"VPP_STATE_DIR={CONTAINER_STATE_DIR}" in env and f"VPP_DATA_DIR={CONTAINER_DATA_DIR}" in env


def test_it_runs_as_the_task_user_on_a_read_only_root() -> None:
    default_user = re.search(r'variable "container_user".*?default\s*=\s*"([^"]+)"', SERVICE_VARIABLES, re.DOTALL)
    assert default_user is not None
    assert _instructions("USER") == [default_user.group(1)]
    # readonlyRootFilesystem: Python must not try to write bytecode next to the code.
    assert "PYTHONDONTWRITEBYTECODE=1" in " ".join(_instructions("ENV"))


def test_nothing_local_or_secret_goes_into_the_build_context() -> None:
    ignored = set((REPO_ROOT / ".dockerignore").read_text().split())
    assert {".vpp", ".venv*", ".git", "tests"} <= ignored
    # No credential is baked in: no variable named like one is set in the image.
    assert not re.search(r"(TOKEN|SECRET|PASSWORD|_KEY|DATABASE_URL)\w*=", " ".join(_instructions("ENV")))
