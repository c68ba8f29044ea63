"""Errors pure functions raise for inputs they cannot use."""

from __future__ import annotations


class InvalidRequestError(ValueError):
    """A request that can never succeed as given (malformed, inconsistent, unknown algorithm).

    The worker runtime dead-letters such a request at once, with this message as the reason, instead
    of retrying it.
    """
