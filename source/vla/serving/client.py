"""A synchronous client for the policy server (openpi's websocket protocol), with one-line errors.

Unlike openpi's ``WebsocketClientPolicy`` it fails fast with a message naming the fix when the server is
unreachable or refuses the API key, and ``infer_many`` pipelines several observations (one per env) so
the server can batch them into one model call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import connect

from vla.serving.codec import CodecError, packb, unpackb
from vla.serving.spec import BURST_KEY, POLICY_KIND

API_KEY_ENV = "VLA_POLICY_API_KEY"
MAX_REPLY_BYTES = 16 << 20  # replies are a (chunk, action_dim) array and timings: a few kB
START_HINT = "start one with: python scripts/serve_policy.py --checkpoint CKPT --port PORT"


class PolicyServerError(RuntimeError):
    """Talking to a policy server failed (unreachable, refused, protocol or request error)."""


class ServerUnreachableError(PolicyServerError):
    pass


class ServerAuthError(PolicyServerError):
    pass


class ServerRequestError(PolicyServerError):
    """The server answered a request with an error message (bad observation, inference failure)."""


def read_api_key(path: str | Path | None = None) -> str | None:
    """The API key from ``path`` (its whole content, stripped), else from $VLA_POLICY_API_KEY, else None."""
    if path is not None:
        try:
            key = Path(path).read_text().strip()
        except OSError as exc:
            raise ValueError(f"cannot read API key file {path}: {exc.strerror}; pass an existing file") from None
        if not key:
            raise ValueError(f"API key file {path} is empty; write the key into it")
        return key
    return os.environ.get(API_KEY_ENV) or None


class PolicyClient:
    """Connect to ``url`` (``ws://HOST:PORT``), read the metadata, then ``infer``/``infer_many``."""

    def __init__(self, url: str, *, api_key: str | None = None, open_timeout_s: float = 10.0,
                 reply_timeout_s: float = 300.0):
        self.url, self.reply_timeout_s = url, reply_timeout_s
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"policy server address must look like ws://HOST:PORT, got {url!r}")
        headers = {"Authorization": f"Api-Key {api_key}"} if api_key else None
        try:
            self._ws = connect(url, additional_headers=headers, compression=None, max_size=MAX_REPLY_BYTES,
                               open_timeout=open_timeout_s)
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status == 401:
                raise ServerAuthError(
                    f"policy server {url} refused the API key (HTTP 401): "
                    + ("pass the server's key with --api_key_file or $" + API_KEY_ENV if not api_key
                       else "the key differs from the server's --api_key_file")) from None
            raise ServerUnreachableError(f"policy server {url} refused the connection (HTTP {status}: "
                                         f"{exc.response.body.decode(errors='replace').strip()})") from None
        except InvalidURI:
            raise ValueError(f"policy server address must look like ws://HOST:PORT, got {url!r}") from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise ServerUnreachableError(f"cannot reach policy server {url} ({_reason(exc)}); {START_HINT}, "
                                         "or fix the host/port") from None
        try:
            self.metadata = self._recv()
        except PolicyServerError:
            self._ws.close()
            raise
        if not isinstance(self.metadata, Mapping):
            self._ws.close()
            raise PolicyServerError(f"policy server {url} sent {type(self.metadata).__name__} metadata, not a map; "
                                    "is it an openpi-protocol server?")

    def _recv(self) -> Any:
        try:
            message = self._ws.recv(timeout=self.reply_timeout_s)
        except TimeoutError:
            raise PolicyServerError(f"policy server {self.url} did not answer within {self.reply_timeout_s:.0f} s"
                                    ) from None
        except ConnectionClosed as exc:
            raise PolicyServerError(self._closed(exc)) from None
        if isinstance(message, str):
            raise ServerRequestError(f"policy server {self.url}: {message.removeprefix('error: ')}")
        try:
            return unpackb(message)
        except CodecError as exc:
            raise PolicyServerError(f"policy server {self.url} sent an undecodable reply: {exc}") from None

    def _closed(self, exc: ConnectionClosed) -> str:
        rcvd = exc.rcvd
        if rcvd is not None and rcvd.code == 1009:
            return (f"policy server {self.url} closed the connection: a message exceeded its size limit "
                    f"({rcvd.reason or 'message too big'}); send smaller images")
        reason = f"code {rcvd.code} {rcvd.reason}".strip() if rcvd is not None else "no close frame"
        return f"policy server {self.url} closed the connection ({reason}); is it still running?"

    def infer_many(self, observations: Sequence[Mapping]) -> list[dict]:
        """Send every observation, then read the replies in order; a vla-isaac server batches them into one
        model call (each says how many follow it)."""
        burst = self.metadata.get("policy") == POLICY_KIND and len(observations) > 1
        try:
            for i, obs in enumerate(observations):
                msg = dict(obs)
                if burst:
                    msg[BURST_KEY] = len(observations) - 1 - i
                self._ws.send(packb(msg))
        except ConnectionClosed as exc:
            raise PolicyServerError(self._closed(exc)) from None
        replies, first_error = [], None
        for _ in observations:  # read every reply, even after an error, so the stream stays in step
            try:
                replies.append(self._recv())
            except ServerRequestError as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return replies

    def infer(self, observation: Mapping) -> dict:
        return self.infer_many([observation])[0]

    def close(self) -> None:
        self._ws.close()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
