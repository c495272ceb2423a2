"""Write one benchmark's section into docs/benchmarks.md (between marker comments), atomically."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "source"))
from vla.utils.io import atomic_write_text  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nFigures written by `make bench` (each section by its `bench/*.py`). Machine: see each section.\n"


def machine() -> str:
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_section(name: str, markdown: str, first: bool = False) -> None:
    """Replace the section ``name`` (or add it: at the end, or right after the title with ``first``)."""
    text = DOC.read_text() if DOC.exists() else HEADER
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    if start in text and end in text:
        pre, rest = text.split(start, 1)
        _, post = rest.split(end, 1)
        text = pre + block + post
    elif first:
        head, _, rest = text.partition("\n\n")
        text = head + "\n\n" + block + "\n\n" + rest
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    atomic_write_text(DOC, text)
