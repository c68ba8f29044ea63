"""Content hashes of protobuf messages: the identity of every archived request and result."""

from __future__ import annotations

import hashlib
from typing import TypeVar

from google.protobuf.message import Message

M = TypeVar("M", bound=Message)


def message_bytes(message: Message) -> bytes:
    """Deterministic serialisation of ``message`` (stable map ordering)."""
    return message.SerializeToString(deterministic=True)


def sha256_hex(payload: bytes) -> str:
    """Lower-case hex sha256 of ``payload``."""
    return hashlib.sha256(payload).hexdigest()


def inputs_hash(request: Message) -> str:
    """Hash of a worker request's inputs: the message with ``request_id`` and ``inputs_hash`` cleared.

    Two requests with the same inputs have the same hash whatever their ids, so a result can be
    matched to the inputs it was computed from.
    """
    copy = type(request)()
    copy.CopyFrom(request)
    for name in ("request_id", "inputs_hash"):
        if name in copy.DESCRIPTOR.fields_by_name:
            copy.ClearField(name)  # type: ignore[arg-type]
    return sha256_hex(message_bytes(copy))


def stamp_inputs_hash(request: M) -> M:
    """``request`` itself (changed in place and returned) with its ``inputs_hash`` field set to
    :func:`inputs_hash` of it, for a request its caller has just built and owns: the same message
    :func:`with_inputs_hash` returns, without copying it (the request's id is cleared while the hash is taken,
    then put back)."""
    fields = request.DESCRIPTOR.fields_by_name
    request_id = getattr(request, "request_id") if "request_id" in fields else None  # noqa: B009
    for name in ("request_id", "inputs_hash"):
        if name in fields:
            request.ClearField(name)  # type: ignore[arg-type]
    digest = sha256_hex(message_bytes(request))
    if request_id:
        setattr(request, "request_id", request_id)  # noqa: B010
    setattr(request, "inputs_hash", digest)  # noqa: B010
    return request


def with_inputs_hash(request: M) -> M:
    """A copy of ``request`` with its ``inputs_hash`` field set (:func:`stamp_inputs_hash` on a copy)."""
    copy = type(request)()
    copy.CopyFrom(request)
    return stamp_inputs_hash(copy)
