"""The policy server: openpi's websocket protocol, safe by default.

Protocol (what openpi's ``WebsocketClientPolicy`` speaks): on connect the server sends its metadata
(``PolicySpec.metadata``, msgpack); then every binary message is one observation (``vla.serving.observation``)
and gets one reply ``{"actions": (chunk, action_dim) float32, "server_timing": {...}}``, in order (a client
may pipeline several). A bad message gets a text frame ``"error: <what is wrong>"`` and the connection
keeps serving (openpi's client raises it as a RuntimeError).

Safety: binds 127.0.0.1 unless told otherwise; with an API key every websocket handshake must carry
``Authorization: Api-Key <key>`` (compared in constant time) or gets HTTP 401; messages over
``max_message_bytes`` close that connection (code 1009); at most ``max_connections`` at once (HTTP 503
beyond); nothing is unpickled (``vla.serving.codec``); ``GET /healthz`` answers 200 without a key and
without revealing anything. Inference runs in a worker thread (``vla.serving.batcher``), so the event
loop keeps serving every client while the model works.
"""

from __future__ import annotations

import asyncio
import hmac
import http
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from vla.serving.batcher import Batcher
from vla.serving.codec import CodecError, packb, unpackb
from vla.serving.observation import ObservationError, parse_observation

log = logging.getLogger("vla.serving")

HEALTH_PATH = "/healthz"
AUTH_SCHEME = "Api-Key"
DEFAULT_MAX_MESSAGE_BYTES = 8 << 20  # two 1280x720 RGB views are 5.5 MB; a 224x224 observation ~0.3 MB
MAX_PIPELINE = 64  # replies in flight per connection before the server stops reading from it


class PolicyServer:
    """Serve ``runner`` (samples -> actions) to websocket clients; ``await run(stop)`` until ``stop`` is set.

    Args:
        runner: callable ``list[Sample] -> list[(chunk, action_dim) array]`` with a ``spec`` (``ModelRunner``).
        api_key: required from every client when given (see module docstring); None: no authentication.
        max_batch / max_wait_s: micro-batching of requests that arrive together (``Batcher``).
    """

    def __init__(self, runner, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, max_connections: int = 64,
                 max_batch: int = 16, max_wait_s: float = 0.001, metadata_extra: dict | None = None):
        if api_key is not None and not api_key.strip():
            raise ValueError("API key is empty; put a non-empty key in the --api_key_file")
        self.runner, self.spec = runner, runner.spec
        self.host, self.port = host, port
        self._api_key = api_key.strip().encode() if api_key else None
        self.max_message_bytes, self.max_connections = max_message_bytes, max_connections
        self.metadata = self.spec.metadata(max_message_bytes=max_message_bytes, auth=AUTH_SCHEME if api_key else None,
                                           **(metadata_extra or {}))
        self.batcher = Batcher(runner, max_batch=max_batch, max_wait_s=max_wait_s)
        self.num_connections = 0
        self.num_requests = 0
        self.num_errors = 0

    # ------------------------------------------------------------------ handshake: health, auth, capacity
    def _process_request(self, connection: ServerConnection, request):
        if request.path.split("?", 1)[0] == HEALTH_PATH:
            return connection.respond(http.HTTPStatus.OK, "ok\n")
        if self._api_key is not None:
            scheme, _, key = (request.headers.get("Authorization") or "").strip().partition(" ")
            if scheme != AUTH_SCHEME or not hmac.compare_digest(key.strip().encode(), self._api_key):
                log.warning("refused %s: missing or wrong API key", _peer(connection))
                return connection.respond(http.HTTPStatus.UNAUTHORIZED,
                                          f"missing or wrong API key: send 'Authorization: {AUTH_SCHEME} <key>'\n")
        if self.num_connections >= self.max_connections:
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE,
                                      f"server busy: {self.max_connections} connections open\n")
        return None

    # ------------------------------------------------------------------ one connection
    async def _handler(self, ws: ServerConnection) -> None:
        self.num_connections += 1
        peer = _peer(ws)
        log.info("client %s connected", peer)
        replies: asyncio.Queue = asyncio.Queue(maxsize=MAX_PIPELINE)
        sender = asyncio.create_task(self._send_replies(ws, replies))
        try:
            await ws.send(packb(self.metadata))
            async for message in ws:
                t0 = time.perf_counter()
                try:
                    if isinstance(message, str):
                        raise ObservationError("expected a binary msgpack observation, got a text message")
                    sample = parse_observation(unpackb(message), self.spec)
                except (CodecError, ObservationError) as exc:
                    self.num_errors += 1
                    await replies.put(("error", str(exc), t0))
                    continue
                self.num_requests += 1
                await replies.put(("ok", self.batcher.submit(sample, more=sample.more), t0))
        except ConnectionClosed as exc:
            log.info("client %s: connection closed (%s)", peer, exc)
        finally:  # the connection is closed: nothing more can be sent on it
            sender.cancel()
            try:
                await sender
            except (asyncio.CancelledError, ConnectionClosed):
                pass
            self.num_connections -= 1
            log.info("client %s disconnected", peer)

    async def _send_replies(self, ws: ServerConnection, replies: asyncio.Queue) -> None:
        try:
            while True:
                kind, payload, t0 = await replies.get()
                if kind == "error":
                    await ws.send(f"error: {payload}")
                    continue
                try:
                    actions, timing = await payload
                except Exception as exc:  # noqa: BLE001 - the model failed on this batch; tell the client, go on
                    self.num_errors += 1
                    log.exception("inference failed")
                    await ws.send(f"error: inference failed on the server ({type(exc).__name__}: {exc})")
                    continue
                await ws.send(packb({"actions": actions, "server_timing": {
                    "infer_ms": timing.infer_ms, "queue_ms": timing.queue_ms, "batch_size": timing.batch_size,
                    "total_ms": (time.perf_counter() - t0) * 1e3}}))
        except ConnectionClosed:
            pass
        finally:  # connection gone: drop what is still queued for it
            while not replies.empty():
                kind, payload, _ = replies.get_nowait()
                if kind == "ok":
                    payload.cancel()

    # ------------------------------------------------------------------ lifecycle
    async def run(self, stop: asyncio.Event | asyncio.Future, on_ready: Callable[[PolicyServer], Any] | None = None):
        """Serve until ``stop`` is set/done; then close every connection (code 1001) and the worker."""
        self.batcher.start()
        try:
            async with serve(self._handler, self.host, self.port, process_request=self._process_request,
                             max_size=self.max_message_bytes, compression=None) as server:
                self.port = server.sockets[0].getsockname()[1]
                log.debug("serving on ws://%s:%d", self.host, self.port)
                if on_ready is not None:
                    on_ready(self)
                await (stop.wait() if isinstance(stop, asyncio.Event) else stop)
        finally:
            await self.batcher.close()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}"


class ServerThread:
    """Run a ``PolicyServer`` on its own event loop in a background thread (tests, notebooks, benchmarks).

    ``with ServerThread(server) as url:`` starts it (port 0 picks a free port) and stops it on exit.
    """

    def __init__(self, server: PolicyServer, start_timeout_s: float = 30.0):
        self.server, self.start_timeout_s = server, start_timeout_s
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="vla-policy-server", daemon=True)

    def _main(self) -> None:
        async def main():
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            await self.server.run(self._stop, on_ready=lambda _: self._ready.set())

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            self._error = exc
        finally:
            self._ready.set()

    def start(self) -> str:
        self._thread.start()
        if not self._ready.wait(self.start_timeout_s):
            raise TimeoutError(f"policy server did not start within {self.start_timeout_s} s")
        if self._error is not None:
            raise self._error
        return self.server.url

    def stop(self, timeout_s: float = 30.0) -> None:
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise RuntimeError(f"policy server thread did not stop within {timeout_s} s")

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _peer(connection) -> str:
    addr = getattr(connection, "remote_address", None)
    return f"{addr[0]}:{addr[1]}" if addr else "?"
