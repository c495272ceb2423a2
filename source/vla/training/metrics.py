"""The trainer's metrics sink: ``metrics.jsonl`` (one JSON object per line, trimmed back to the resumed
step) and TensorBoard through accelerate's tracker, written by the main process only."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..utils.io import atomic_write_text

METRICS_FILE = "metrics.jsonl"


class Metrics:
    """metrics.jsonl (one JSON object per line) + TensorBoard through accelerate's tracker, main process only."""

    def __init__(self, acc, out: Path, start_step: int):
        self.acc, self.enabled = acc, acc.is_main_process
        self.path = out / METRICS_FILE
        self.tb = bool(acc.log_with)
        if self.tb:  # every process calls init_trackers; accelerate creates the writer on the main one
            kw = {"purge_step": start_step + 1} if start_step > 0 else {}
            acc.init_trackers("tb", init_kwargs={"tensorboard": kw})
        if not self.enabled:
            return
        if start_step > 0 and self.path.is_file():  # drop what a killed run logged after its last state
            keep = [
                ln
                for ln in self.path.read_text().splitlines()
                if ln.strip() and json.loads(ln).get("step", 0) <= start_step
            ]
            atomic_write_text(self.path, "".join(ln + "\n" for ln in keep))
        self.file = open(self.path, "a")

    def log(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps({"step": step, **values}) + "\n")
        self.file.flush()
        if self.tb:
            scalars = {
                k if "/" in k else f"train/{k}": v
                for k, v in values.items()
                if isinstance(v, (int, float)) and math.isfinite(v)
            }
            self.acc.log(scalars, step=step)

    def close(self) -> None:
        if self.tb:
            self.acc.end_training()
        if self.enabled:
            self.file.close()
