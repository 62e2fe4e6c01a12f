"""What users run: the ``semcolor`` CLI, inference on photos, photo I/O, the class colours, and the
semantic editor."""
