"""A workflow's memo and search-attribute changes held back and sent together.

Temporal merges a memo upsert into the memo key by key (a key set to ``None`` is removed) and applies a
search-attribute upsert attribute by attribute, so a run of upserts ends in the same memo and search attributes
as one upsert of each key's last value. :class:`PendingUpserts` keeps those last values; the workflow sends them
as (at most) one memo upsert and one search-attribute upsert when it flushes. Pure data: no Temporal calls.
"""

from __future__ import annotations

from typing import Any

from temporalio.common import SearchAttributeUpdate


class PendingUpserts:
    """The memo keys and search attributes changed since the last flush, each with its last value."""

    def __init__(self) -> None:
        self._memo: dict[str, Any] = {}
        self._search_attributes: dict[str, SearchAttributeUpdate[Any]] = {}

    def memo(self, values: dict[str, Any]) -> None:
        """Hold memo values (plain JSON values; ``None`` removes the key), later values replacing earlier ones."""
        self._memo.update(values)

    def search_attributes(self, updates: list[SearchAttributeUpdate[Any]]) -> None:
        """Hold search-attribute updates, the last update of each attribute replacing earlier ones."""
        for update in updates:
            self._search_attributes[update.key.name] = update

    def take_memo(self) -> dict[str, Any]:
        """The held memo values (empty when none), no longer held."""
        memo, self._memo = self._memo, {}
        return memo

    def take_search_attributes(self) -> list[SearchAttributeUpdate[Any]]:
        """The held search-attribute updates in the order each attribute was first changed (empty when none),
        no longer held."""
        updates, self._search_attributes = list(self._search_attributes.values()), {}
        return updates
