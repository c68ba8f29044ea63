"""Temporal workflows: deterministic, import-light orchestration of stages. No business logic here."""
