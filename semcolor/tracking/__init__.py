"""MLflow: the model registry and its aliases, the pyfunc model and model references, the tracking server,
the tag names, and comparing logged runs."""
