"""Prefect flows: dataset download and shard conversion, scheduled retraining."""
