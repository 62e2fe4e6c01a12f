"""Orchestration: DVC stage entry points (stages/), Prefect flows (flows/) and MLflow tracking glue.

semcolor is the library they call; nothing in semcolor imports pipeline."""
