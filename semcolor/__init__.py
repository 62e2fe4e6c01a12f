"""semcolor: semantic-guided image colorization (a pure library: no I/O at import)."""

__version__ = "0.1.0"
