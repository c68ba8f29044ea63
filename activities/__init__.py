"""Temporal activities: thin I/O adapters (gRPC, SQS, archive, PostgreSQL) around pure functions."""
