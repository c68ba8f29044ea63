"""Recorded workflow histories replay on the workflows as they are now: a change that running workflows
could not replay (a new, removed or reordered step) fails here, before it reaches a deployment.

The histories in tests/histories/ are real runs on the real local stack, written by
``python -m tests.record_histories`` (README, "Replayable workflows"). Replaying needs no server: the
:class:`temporalio.worker.Replayer` runs each workflow's code against its recorded events and fails on any
command the history does not hold. The variants below change a workflow on purpose and show that the
replay catches it (and that a change guarded by ``workflow.patched`` replays).
"""

from __future__ import annotations

import importlib
import inspect
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from activities.cycle_facts import CycleInput, CycleResult
from activities.dispatch_facts import DispatchEventInput, EventSummary
from activities.distribution_facts import DistributionInput, DistributionResult
from activities.node_load_facts import NodeLoadSampled, SampleNodeLoadInput
from activities.operator_facts import OperatorInput
from activities.peak_shaving_facts import FleetCapacityInput, PeakShavingInput, PeakShavingPlan
from activities.sweep_facts import SweepInput, SweepResult
from workflows.autobidder import AutobidderCycle
from workflows.backtest_sweep import BacktestSweep
from workflows.dispatch import VppDispatchEvent
from workflows.distribution import PriceForecastDistribution
from workflows.node_load_sampler import NodeLoadSampler
from workflows.operator import UnitOperator
from workflows.peak_shaving import PeakShaving

REPO = Path(__file__).resolve().parents[1]
HISTORIES = Path(__file__).resolve().parent / "histories"
WORKFLOWS: list[type] = [AutobidderCycle, UnitOperator, PriceForecastDistribution, VppDispatchEvent, PeakShaving,
                         NodeLoadSampler, BacktestSweep]
HISTORY_FILES = sorted(HISTORIES.glob("*.json"))


def _history(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


def _workflow_type(history: WorkflowHistory) -> str:
    return history.events[0].workflow_execution_started_event_attributes.workflow_type.name


def _definition_name(cls: type) -> str:
    """The workflow type name of a ``@workflow.defn`` class."""
    name: str = cls.__temporal_workflow_definition.name  # type: ignore[attr-defined]
    return name


def _defined_workflow_types() -> set[str]:
    """Every workflow type the workflows package defines (its ``@workflow.defn`` classes)."""
    names: set[str] = set()
    for path in (REPO / "workflows").glob("*.py"):
        module = importlib.import_module(f"workflows.{path.stem}")
        names |= {_definition_name(cls) for _, cls in inspect.getmembers(module, inspect.isclass)
                  if cls.__module__ == module.__name__ and hasattr(cls, "__temporal_workflow_definition")}
    return names


def test_every_workflow_type_has_a_recorded_history() -> None:
    defined = _defined_workflow_types()
    assert {_definition_name(cls) for cls in WORKFLOWS} == defined, "a workflow type is missing from WORKFLOWS"
    recorded = {_workflow_type(_history(path)) for path in HISTORY_FILES}
    assert recorded == defined, f"record a history of {sorted(defined - recorded)} (python -m tests.record_histories)"
    for path in HISTORY_FILES:  # named <WorkflowType>-<case>.json
        assert path.stem.split("-", 1)[0] == _workflow_type(_history(path)), path.name


@pytest.mark.parametrize("path", HISTORY_FILES, ids=[path.stem for path in HISTORY_FILES])
async def test_a_recorded_history_replays_on_the_current_workflows(path: Path) -> None:
    history = _history(path)
    assert len(history.events) > 3
    result = await Replayer(workflows=WORKFLOWS).replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, (
        f"{path.name} no longer replays: {result.replay_failure!r}. If the change is meant to be incompatible, "
        "guard it with workflow.patched or re-record the histories (README, 'Replayable workflows')")


# -- deliberate changes ---------------------------------------------------------------------------------


async def _a_timer_first() -> None:
    await workflow.sleep(timedelta(seconds=1))


# Each workflow with a one-second timer before its run (same type name, same handlers).


@workflow.defn(name="AutobidderCycle", sandboxed=False)
class AutobidderCycleSleepFirst(AutobidderCycle):
    @workflow.run
    async def run(self, cycle: CycleInput) -> CycleResult:
        await _a_timer_first()
        return await super().run(cycle)


@workflow.defn(name="UnitOperator", sandboxed=False)
class UnitOperatorSleepFirst(UnitOperator):
    @workflow.run
    async def run(self, request: OperatorInput) -> None:
        await _a_timer_first()
        return await super().run(request)


@workflow.defn(name="PriceForecastDistribution", sandboxed=False)
class PriceForecastDistributionSleepFirst(PriceForecastDistribution):
    @workflow.run
    async def run(self, request: DistributionInput) -> DistributionResult:
        await _a_timer_first()
        return await super().run(request)


@workflow.defn(name="VppDispatchEvent", sandboxed=False)
class VppDispatchEventSleepFirst(VppDispatchEvent):
    @workflow.run
    async def run(self, event: DispatchEventInput) -> EventSummary:
        await _a_timer_first()
        return await super().run(event)


@workflow.defn(name="PeakShaving", sandboxed=False)
class PeakShavingSleepFirst(PeakShaving):
    @workflow.run
    async def run(self, request: PeakShavingInput) -> PeakShavingPlan:
        await _a_timer_first()
        return await super().run(request)


@workflow.defn(name="NodeLoadSampler", sandboxed=False)
class NodeLoadSamplerSleepFirst(NodeLoadSampler):
    @workflow.run
    async def run(self, request: SampleNodeLoadInput) -> NodeLoadSampled:
        await _a_timer_first()
        return await super().run(request)


@workflow.defn(name="NodeLoadSampler", sandboxed=False)
class NodeLoadSamplerPatchedSleepFirst(NodeLoadSampler):
    """The same change, versioned: runs that started before it (no ``sleep-first`` marker) skip the timer."""

    @workflow.run
    async def run(self, request: SampleNodeLoadInput) -> NodeLoadSampled:
        if workflow.patched("sleep-first"):
            await _a_timer_first()
        return await super().run(request)


@workflow.defn(name="BacktestSweep", sandboxed=False)
class BacktestSweepSleepFirst(BacktestSweep):
    @workflow.run
    async def run(self, sweep: SweepInput) -> SweepResult:
        await _a_timer_first()
        return await super().run(sweep)


SLEEP_FIRST: dict[str, type] = {_definition_name(cls): cls for cls in (
    AutobidderCycleSleepFirst, UnitOperatorSleepFirst, PriceForecastDistributionSleepFirst,
    VppDispatchEventSleepFirst, PeakShavingSleepFirst, NodeLoadSamplerSleepFirst, BacktestSweepSleepFirst)}


@workflow.defn(name="PeakShaving", sandboxed=False)
class PeakShavingCapacityFirst(PeakShaving):
    """Reads the fleet's capacity before the forecast and capacity are read together (activity order)."""

    @workflow.run
    async def run(self, request: PeakShavingInput) -> PeakShavingPlan:
        await workflow.execute_activity(
            "node_fleet_capacity", FleetCapacityInput(node_id=request.node_id, hierarchy=request.hierarchy,
                                                      as_of_ms=request.origin_ms or 0),
            start_to_close_timeout=timedelta(seconds=60))
        return await super().run(request)


async def _replay_failure(path: Path, variant: type) -> BaseException | None:
    result = await Replayer(workflows=[variant]).replay_workflow(_history(path), raise_on_replay_failure=False)
    return result.replay_failure


@pytest.mark.parametrize("path", HISTORY_FILES, ids=[path.stem for path in HISTORY_FILES])
async def test_an_extra_timer_makes_every_recorded_history_fail_to_replay(path: Path) -> None:
    failure = await _replay_failure(path, SLEEP_FIRST[_workflow_type(_history(path))])
    assert isinstance(failure, workflow.NondeterminismError), failure
    # The timer stands where the recorded run's first command was: Temporal names the timer, or — when that
    # first command was a workflow.patched marker (a cycle since cycle-upserts-together) — the marker the
    # timer took the place of.
    assert ("Timer" in str(failure) or "timer" in str(failure)
            or "patch marker encountered for change cycle-upserts-together" in str(failure)), failure


async def test_reordered_activities_fail_to_replay() -> None:
    failure = await _replay_failure(HISTORIES / "PeakShaving-plan.json", PeakShavingCapacityFirst)
    assert isinstance(failure, workflow.NondeterminismError), failure
    assert "node_fleet_capacity" in str(failure) or "forecast_node_load" in str(failure), failure


async def test_a_change_guarded_by_workflow_patched_replays() -> None:
    """The way to change a workflow that has runs in flight: old histories take the old path."""
    path = HISTORIES / "NodeLoadSampler-sample.json"
    assert await _replay_failure(path, NodeLoadSamplerPatchedSleepFirst) is None
    assert await _replay_failure(path, NodeLoadSamplerSleepFirst) is not None
