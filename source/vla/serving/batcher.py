"""Micro-batching for the policy server: requests that arrive together go to the model in one call.

Connection handlers ``submit`` validated samples and await their result without blocking the event
loop; one batching task collects everything queued (up to ``max_batch``, waiting ``max_wait_s`` after the
first request, longer while a client announces that more of its requests follow) and runs
``fn(samples) -> per-sample results`` in a single worker thread, so one model call runs at a time (a GPU
serves one batch at a time anyway) while the loop keeps reading, answering pings and health checks.
Requests that arrive during a model call form the next batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

MAX_BURST_WAIT_S = 0.05  # the longest a batch waits for the rest of a burst its client announced


@dataclass
class BatchTiming:
    queue_ms: float  # from submit to the start of the model call
    infer_ms: float  # the model call (whole batch)
    batch_size: int


class Batcher:
    def __init__(self, fn: Callable[[list[Any]], Sequence[Any]], *, max_batch: int = 16, max_wait_s: float = 0.001):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.fn, self.max_batch, self.max_wait_s = fn, max_batch, max_wait_s
        self.num_calls = 0
        self.batch_sizes: list[int] = []
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="vla-infer")

    def start(self) -> None:
        """Start the batching task on the running event loop."""
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="vla-batcher")

    def submit(self, item: Any, more: int = 0) -> asyncio.Future:
        """Queue ``item`` (``more``: requests its client sends right after it, to batch with it); the future
        resolves to ``(result, BatchTiming)`` or to the model call's exception."""
        if self._queue is None:
            raise RuntimeError("Batcher.start() must run on the event loop first")
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, fut, time.perf_counter(), more))
        return fut

    async def _collect(self) -> list:
        """Wait for a first request, then gather more: for ``max_wait_s``, and for as long as the latest one
        says more follow (a client's pipelined burst, up to ``MAX_BURST_WAIT_S``)."""
        batch = [await self._queue.get()]
        start = time.perf_counter()
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            wait = MAX_BURST_WAIT_S if batch[-1][3] > 0 else self.max_wait_s
            remaining = start + wait - time.perf_counter()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return [b for b in batch if not b[1].done()]  # a closed connection cancels its futures

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            if not batch:
                continue
            t0 = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self.fn, [b[0] for b in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"model returned {len(results)} results for a batch of {len(batch)}")
            except asyncio.CancelledError:  # shutting down mid-call
                for _, fut, *_ in batch:
                    fut.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - every waiting request gets the error, the server goes on
                for _, fut, *_ in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            infer_ms = (time.perf_counter() - t0) * 1e3
            self.num_calls += 1
            self.batch_sizes.append(len(batch))
            for (_, fut, t_submit, _), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result((result, BatchTiming((t0 - t_submit) * 1e3, infer_ms, len(batch))))

    async def close(self) -> None:
        """Stop collecting; a model call in progress finishes in its thread."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._queue is not None:
            while not self._queue.empty():
                _, fut, *_ = self._queue.get_nowait()
                if not fut.done():
                    fut.cancel()
        self._executor.shutdown(wait=True, cancel_futures=True)
