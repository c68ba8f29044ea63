"""SQS worker pools: the runtime that serves pure functions (``Request -> Result``) from an SQS queue,
queue set-up, and the result relay that archives results and completes the waiting Temporal activities.

Not to be confused with :mod:`workers`, the Temporal worker processes that run workflows and activities.
"""
