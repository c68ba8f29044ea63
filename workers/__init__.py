"""The SQS worker runtime: serves pure functions ``Request -> Result`` on a queue."""
