"""Prefect flows that chain the tasks as numbered steps, with no business logic."""
