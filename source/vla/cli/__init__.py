"""Command-line entry points of the core (no Isaac Lab needed): ``vla-train`` and ``vla-serve``."""
