"""Input and result of the node-load sampler workflow and its activity (plain frozen dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SampleNodeLoadInput:
    """The nodes to sample (their subtree in ``hierarchy``; None: every hierarchy they head)."""

    node_ids: tuple[str, ...]
    hierarchy: str | None = "electrical"


@dataclass(frozen=True)
class NodeLoadSampled:
    """Rows recorded, and the nodes skipped with why (no sites now, no site reporting)."""

    interval_end_ms: int
    recorded: int
    skipped: tuple[str, ...]
