"""The modules behind dvc.yaml's stages (`python -m pipeline.stages.<name>`; train and evaluate each serve
several stages). Each parses its arguments, loads its typed config, calls semcolor and writes its outputs."""
