"""One module per DVC stage of dvc.yaml (`python -m pipeline.stages.<name>`).

Each parses its arguments, loads its typed config, calls semcolor and writes its outputs."""
