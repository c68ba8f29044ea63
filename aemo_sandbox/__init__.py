"""A local stand-in of AEMO's NEM Dispatch Bidding API (``submitBids``, ``getSubmission``) for tests and the
local stack (``vpp up --market aemo-sandbox``). It checks what AEMO checks — schema, authentication, units the
participant owns, gate closure, the 12:30 band-price rule — and answers in AEMO's format.

It imports nothing of the platform (import-linter contract "The AEMO stand-in is independent"): it must not
share code with the platform's validator, so that it is an independent check of what the platform sends.
"""
