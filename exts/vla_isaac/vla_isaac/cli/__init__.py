"""Command-line entry points that run Isaac Lab envs: ``vla-record``, ``vla-eval`` and ``vla-play``.

Each module's ``main(argv)`` parses Isaac Lab's launcher flags (``--device``, ``--viz``, ...) like the
scripts in ``scripts/``, which call the same functions.
"""
