"""Granary's front doors: the CLI, the local stack, the DAG factory and the runtime wiring."""

__version__ = "0.1.0"
