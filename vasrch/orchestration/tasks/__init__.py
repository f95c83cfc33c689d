"""Prefect tasks: thin wrappers adding retries, logs and artifacts to the domain modules."""
