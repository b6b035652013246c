"""An OpenAI-compatible chat server on 127.0.0.1 that fails on purpose.

Tests and benchmarks point a provider at it to see how the provider and the
orchestrator behave when a backend throttles, errors, hangs, drops connections or
sends broken JSON. It only ever binds the loopback interface, needs nothing outside
the standard library, and keeps HTTP/1.1 connections alive, so a benchmark at high
concurrency measures muse-eval rather than connection setup.

Routes:
    POST /v1/chat/completions   a chat completion with ``n`` choices, usage and,
                                when asked, first-token log-probabilities
    GET  /v1/models             the one model it pretends to serve
    GET  /stats                 the request counters as JSON

Each chat request draws, from a seeded random generator, whether it fails
(``fault_rate``) and how (``fault_mix``). Draws happen in arrival order, so a fixed
seed gives a fixed sequence of outcomes; which client gets which outcome still
depends on timing when requests run concurrently.

In-process use, from pytest::

    with FaultServer(fault_rate=0.3, seed=7) as server:
        provider = SomeProvider(api_base=server.base_url)
        ...
        assert server.stats()["outcomes"]["rate_limit"] == 2

As a subprocess, it prints its base URL as the first line of stdout and serves
until it is killed::

    python tests/fault_server.py --port 0 --fault-rate 0.3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import signal
import socket
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, Self, get_args

__all__ = [
    "DEFAULT_FAULT_MIX",
    "FAULT_KINDS",
    "LOOPBACK",
    "FaultKind",
    "FaultServer",
    "serve_fault_server",
]

#: The only address the server binds; it must never be reachable from elsewhere.
LOOPBACK = "127.0.0.1"

FaultKind = Literal[
    "rate_limit",
    "server_error",
    "drop",
    "slow",
    "malformed_json",
    "truncated_json",
    "partial_body",
    "bad_request",
    "context_too_long",
]
"""How a request fails.

``rate_limit`` answers 429 with ``Retry-After``; ``server_error`` answers 500;
``drop`` closes the connection without answering; ``slow`` answers correctly after
``slow_seconds``; ``malformed_json`` sends a complete 200 whose body is not JSON;
``truncated_json`` sends a complete 200 whose JSON stops half-way; ``partial_body``
promises a full body in ``Content-Length`` and closes after half of it;
``bad_request`` and ``context_too_long`` answer 400 the way OpenAI does.
"""

FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)

#: The faults drawn by default: everything a retry should recover from.
DEFAULT_FAULT_MIX: Mapping[FaultKind, float] = {
    "rate_limit": 1.0,
    "server_error": 1.0,
    "drop": 1.0,
    "slow": 1.0,
    "malformed_json": 1.0,
    "truncated_json": 1.0,
}

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
}

_MAX_BODY_BYTES = 8 * 1024 * 1024
_ALTERNATIVE_TOKENS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class _HttpRequest:
    """One parsed HTTP/1.1 request."""

    __slots__ = ("body", "headers", "keep_alive", "method", "path")

    def __init__(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        keep_alive: bool,
    ) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive


class _MalformedRequest(Exception):
    """The client sent something that is not HTTP/1.1 this server understands."""


class FaultServer:
    """A loopback OpenAI-compatible server with configurable failures.

    The server runs its own event loop in a background thread between `start` and
    `stop` (or inside a ``with`` block), so it can serve a client that runs in the
    caller's event loop or in another process.

    Args:
        port: TCP port to bind on 127.0.0.1; 0 picks a free one.
        reply_text: Content of every choice in a successful reply.
        model: Model name reported by the replies and by ``/v1/models``.
        fault_rate: Probability, from 0 to 1, that a chat request fails.
        fault_mix: Relative weights of the fault kinds drawn when a request fails.
        retry_after: Seconds sent in the ``Retry-After`` header of a 429.
        slow_seconds: How long a ``slow`` reply waits before answering.
        always_401: Answer every chat and models request with 401, echoing the
            presented key in the error message the way some backends do, so that
            a test can check that a provider scrubs it.
        expected_api_key: When set, a request whose bearer token differs gets 401.
        seed: Seed of the generator that decides which requests fail.
        latency: Seconds every chat reply waits before it is sent, so that a
            client's run takes long enough to be interrupted mid-way.
        letters: When set, each choice's content is one of these letters, picked
            from the request's ``seed``, ``user`` and the choice index, so replies
            vary between requests but are the same whenever a request is repeated.
        omit_logprobs: Never return log-probabilities, even when asked, like a
            backend that accepts the parameter and ignores it.
        record_bodies: Keep the JSON body of every chat request (`chat_bodies`).
    """

    def __init__(
        self,
        *,
        port: int = 0,
        reply_text: str = "B",
        model: str = "test-model",
        fault_rate: float = 0.0,
        fault_mix: Mapping[FaultKind, float] | None = None,
        retry_after: float = 0.05,
        slow_seconds: float = 5.0,
        always_401: bool = False,
        expected_api_key: str | None = None,
        seed: int = 0,
        latency: float = 0.0,
        letters: str | None = None,
        omit_logprobs: bool = False,
        record_bodies: bool = False,
    ) -> None:
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError(f"fault_rate must lie in [0, 1], not {fault_rate}")
        mix = dict(DEFAULT_FAULT_MIX if fault_mix is None else fault_mix)
        unknown = set(mix) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}")
        if fault_rate > 0 and not any(weight > 0 for weight in mix.values()):
            raise ValueError("fault_mix needs a positive weight when fault_rate > 0")

        self.port = port
        self.reply_text = reply_text
        self.model = model
        self.fault_rate = fault_rate
        self.fault_mix: dict[FaultKind, float] = {
            kind: weight for kind, weight in mix.items() if weight > 0
        }
        self.retry_after = retry_after
        self.slow_seconds = slow_seconds
        self.always_401 = always_401
        self.expected_api_key = expected_api_key
        self.seed = seed
        self.latency = latency
        self.letters = letters
        self.omit_logprobs = omit_logprobs
        self.record_bodies = record_bodies
        self._chat_bodies: list[dict[str, Any]] = []

        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._outcomes: Counter[str] = Counter()
        self._last_chat_body: dict[str, Any] | None = None
        self._open_connections = 0
        self._connections_accepted = 0

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    # -- lifecycle -----------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, ``http://127.0.0.1:PORT/v1``."""
        if self._server is None:
            raise RuntimeError("the fault server is not running")
        return f"http://{LOOPBACK}:{self.port}/v1"

    def start(self) -> Self:
        """Start serving in a background thread and return once the port is bound."""
        if self._thread is not None:
            raise RuntimeError("the fault server is already running")
        self._ready.clear()
        self._thread = threading.Thread(
            target=self._run_loop, name="fault-server", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            self._thread.join()
            self._thread = None
            raise self._startup_error
        return self

    def stop(self) -> None:
        """Close every connection, stop the loop and join the thread."""
        if self._thread is None or self._loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        future.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run_loop(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._bind())
        except BaseException as exc:  # handed to the thread that called start()
            self._startup_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _bind(self) -> None:
        self._server = await asyncio.start_server(
            self._on_connection, host=LOOPBACK, port=self.port, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def serve_until_cancelled(
        self, on_ready: Callable[[str], None] | None = None
    ) -> None:
        """Serve in the current event loop until the surrounding task is cancelled.

        This is the subprocess mode: no background thread, the caller's loop.

        Args:
            on_ready: Called with the base URL once the port is bound.
        """
        self._loop = asyncio.get_running_loop()
        await self._bind()
        if on_ready is not None:
            on_ready(self.base_url)
        try:
            await asyncio.Event().wait()
        finally:
            await self._shutdown()

    # -- counters ------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Return a snapshot of the request counters.

        Returns:
            ``requests`` (every request received, the ``/stats`` route excepted),
            ``routes`` (requests per route), ``outcomes`` (chat and models
            requests per outcome: ``ok`` or a fault kind, ``unauthorized``,
            ``invalid``, ``not_found``), ``open_connections`` and
            ``connections_accepted`` (which shows whether clients reuse them).
        """
        with self._lock:
            return {
                "requests": sum(self._counts.values()),
                "routes": dict(self._counts),
                "outcomes": dict(self._outcomes),
                "open_connections": self._open_connections,
                "connections_accepted": self._connections_accepted,
            }

    @property
    def last_chat_body(self) -> dict[str, Any] | None:
        """The JSON body of the most recent chat request, to check what was sent."""
        with self._lock:
            return self._last_chat_body

    @property
    def chat_bodies(self) -> list[dict[str, Any]]:
        """Every chat request's JSON body, in arrival order (``record_bodies``)."""
        with self._lock:
            return list(self._chat_bodies)

    def reset_stats(self) -> None:
        """Zero the counters; the fault generator keeps its position."""
        with self._lock:
            self._counts.clear()
            self._outcomes.clear()
            self._last_chat_body = None
            self._connections_accepted = 0

    def _count(self, route: str, outcome: str | None) -> None:
        with self._lock:
            self._counts[route] += 1
            if outcome is not None:
                self._outcomes[outcome] += 1

    # -- connection handling -------------------------------------------------

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        # Small replies must leave at once, not wait to be coalesced.
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._open_connections += 1
            self._connections_accepted += 1
        try:
            await self._serve_connection(reader, writer)
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            with self._lock:
                self._open_connections -= 1
            self._handlers.discard(task)
            writer.close()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            try:
                request = await _read_request(reader)
            except _MalformedRequest as exc:
                self._count("invalid", "invalid")
                _write_response(writer, 400, _error_body(str(exc)), keep_alive=False)
                await writer.drain()
                return
            if request is None:
                return

            keep_alive = await self._dispatch(request, writer)
            await writer.drain()
            if not keep_alive:
                return

    async def _dispatch(
        self, request: _HttpRequest, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; return whether the connection stays open."""
        path = request.path.split("?", 1)[0].rstrip("/")
        keep = request.keep_alive

        if path == "/stats" and request.method == "GET":
            _write_response(writer, 200, json.dumps(self.stats()).encode(), keep)
            return keep

        if path == "/v1/models" and request.method == "GET":
            if self._reject_unauthorized(request, writer, "models"):
                return keep
            self._count("models", "ok")
            _write_response(writer, 200, self._models_body(), keep)
            return keep

        if path == "/v1/chat/completions" and request.method == "POST":
            return await self._answer_chat(request, writer)

        self._count("unknown", "not_found")
        status = 405 if path in ("/v1/chat/completions", "/v1/models") else 404
        message = f"no route for {request.method} {path}"
        _write_response(writer, status, _error_body(message), keep)
        return keep

    def _reject_unauthorized(
        self, request: _HttpRequest, writer: asyncio.StreamWriter, route: str
    ) -> bool:
        token = _bearer_token(request.headers)
        expected = self.expected_api_key
        if not self.always_401 and (expected is None or token == expected):
            return False

        self._count(route, "unauthorized")
        # Echoing the key, as some real backends do, is what lets a test prove
        # that the client scrubs it from everything it raises or logs.
        message = f"Incorrect API key provided: {token or '(none)'}."
        body = _error_body(
            message, kind="invalid_request_error", code="invalid_api_key"
        )
        _write_response(writer, 401, body, request.keep_alive)
        return True

    async def _answer_chat(
        self, request: _HttpRequest, writer: asyncio.StreamWriter
    ) -> bool:
        keep = request.keep_alive
        if self._reject_unauthorized(request, writer, "chat_completions"):
            return keep

        try:
            payload = json.loads(request.body)
        except ValueError as exc:
            payload = f"invalid JSON body: {exc}"
        if not isinstance(payload, dict):
            self._count("chat_completions", "invalid")
            detail = (
                payload if isinstance(payload, str) else "the body is not an object"
            )
            _write_response(writer, 400, _error_body(detail), keep)
            return keep

        fault = self._draw_fault()
        with self._lock:
            self._last_chat_body = payload
            if self.record_bodies:
                self._chat_bodies.append(payload)
        self._count("chat_completions", fault or "ok")
        if self.latency > 0:
            await asyncio.sleep(self.latency)

        if fault is None:
            _write_response(writer, 200, self._completion_body(payload), keep)
            return keep
        return await self._inject_fault(fault, payload, writer, keep)

    def _draw_fault(self) -> FaultKind | None:
        with self._lock:
            if self.fault_rate <= 0 or self._rng.random() >= self.fault_rate:
                return None
            kinds = list(self.fault_mix)
            weights = [self.fault_mix[kind] for kind in kinds]
            return self._rng.choices(kinds, weights=weights, k=1)[0]

    async def _inject_fault(
        self,
        fault: FaultKind,
        payload: dict[str, Any],
        writer: asyncio.StreamWriter,
        keep: bool,
    ) -> bool:
        if fault == "rate_limit":
            body = _error_body(
                "Rate limit reached for requests.", kind="requests", code="rate_limit"
            )
            headers = {"Retry-After": f"{self.retry_after:g}"}
            _write_response(writer, 429, body, keep, headers)
            return keep

        if fault == "server_error":
            body = _error_body(
                "The fault server failed on purpose.", kind="server_error"
            )
            _write_response(writer, 500, body, keep)
            return keep

        if fault == "drop":
            # abort() resets the connection at once, with nothing sent back.
            writer.transport.abort()
            return False

        if fault == "slow":
            await asyncio.sleep(self.slow_seconds)
            _write_response(writer, 200, self._completion_body(payload), keep)
            return keep

        if fault == "malformed_json":
            body = b'{"id": "chatcmpl-fault", "object": chat.completion, choices: ['
            _write_response(writer, 200, body, keep)
            return keep

        full = self._completion_body(payload)
        half = full[: len(full) // 2]
        if fault == "truncated_json":
            _write_response(writer, 200, half, keep)
            return keep

        if fault == "partial_body":
            writer.write(_response_head(200, len(full), keep_alive=True) + half)
            await writer.drain()
            writer.transport.abort()
            return False

        if fault == "bad_request":
            message = "Invalid value for 'temperature': the fault server refuses it."
            body = _error_body(
                message, kind="invalid_request_error", param="temperature"
            )
            _write_response(writer, 400, body, keep)
            return keep

        message = (
            "This model's maximum context length is 8192 tokens. However, your "
            "messages resulted in 9000 tokens. Please reduce the length of the "
            "messages."
        )
        body = _error_body(
            message,
            kind="invalid_request_error",
            param="messages",
            code="context_length_exceeded",
        )
        _write_response(writer, 400, body, keep)
        return keep

    # -- bodies --------------------------------------------------------------

    def _models_body(self) -> bytes:
        model = {"id": self.model, "object": "model", "created": 0, "owned_by": "muse"}
        return json.dumps({"object": "list", "data": [model]}).encode()

    def _completion_body(self, payload: dict[str, Any]) -> bytes:
        n = _positive_int(payload.get("n"), default=1)
        top = _positive_int(payload.get("top_logprobs"), default=0)
        want_logprobs = bool(payload.get("logprobs")) and not self.omit_logprobs

        choices = []
        for index in range(n):
            text = self._reply_for(payload, index)
            choices.append(
                {
                    "index": index,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": (
                        self._first_token_logprobs(text, top) if want_logprobs else None
                    ),
                    "finish_reason": "stop",
                }
            )
        prompt_tokens = _count_prompt_words(payload.get("messages"))
        completion_tokens = sum(
            max(1, len(choice["message"]["content"].split())) for choice in choices
        )
        body = {
            "id": "chatcmpl-fault-server",
            "object": "chat.completion",
            "created": 0,
            "model": str(payload.get("model") or self.model),
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return json.dumps(body).encode()

    def _reply_for(self, payload: dict[str, Any], index: int) -> str:
        """The content of one choice: fixed, or a letter drawn from the request."""
        if not self.letters:
            return self.reply_text
        key = f"{payload.get('seed')}:{payload.get('user')}:{index}"
        draw = random.Random(key).random()
        # Skewed towards the first letter, so that items have a modal answer and
        # both certain and uncertain items occur.
        position = min(len(self.letters) - 1, int(draw**2 * len(self.letters)))
        return self.letters[position]

    def _first_token_logprobs(self, reply: str, top: int) -> dict[str, Any]:
        """Log-probabilities for the reply's one token: the reply first, then letters.

        Probabilities halve from 0.5 down, so they sum to less than one and the
        reply is always the most likely first token.
        """
        first = reply.split()[0] if reply.split() else ""
        others = [letter for letter in _ALTERNATIVE_TOKENS if letter != first]
        tokens = [first, *others][: max(top, 1)]
        alternatives = [
            {
                "token": token,
                "logprob": math.log(0.5 ** (rank + 1)),
                "bytes": list(token.encode()),
            }
            for rank, token in enumerate(tokens)
        ]
        content = {**alternatives[0], "top_logprobs": alternatives[:top]}
        return {"content": [content], "refusal": None}


# -- HTTP/1.1 plumbing -------------------------------------------------------


async def _read_request(reader: asyncio.StreamReader) -> _HttpRequest | None:
    """Read one request, or return None when the client closed the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise _MalformedRequest("the request head ended early") from None
        return None
    except asyncio.LimitOverrunError:
        raise _MalformedRequest("the request head is too long") from None

    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ", 2)
    except ValueError:
        raise _MalformedRequest(f"bad request line {lines[0]!r}") from None

    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise _MalformedRequest(f"bad header line {line!r}")
        headers[name.strip().lower()] = value.strip()

    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    else:
        length = _positive_int(headers.get("content-length"), default=0)
        if length > _MAX_BODY_BYTES:
            raise _MalformedRequest("the request body is too large")
        body = await reader.readexactly(length) if length else b""

    connection = headers.get("connection", "").lower()
    keep_alive = (version == "HTTP/1.1" and connection != "close") or (
        connection == "keep-alive"
    )
    return _HttpRequest(method.upper(), target, headers, body, keep_alive)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _MalformedRequest("bad chunk size") from None
        if size == 0:
            # Trailers, if any, end with an empty line.
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return b"".join(parts)
        total += size
        if total > _MAX_BODY_BYTES:
            raise _MalformedRequest("the request body is too large")
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def _response_head(
    status: int,
    length: int,
    keep_alive: bool,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
    ]
    lines.extend(f"{name}: {value}" for name, value in (headers or {}).items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _write_response(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    keep_alive: bool,
    headers: Mapping[str, str] | None = None,
) -> None:
    # One write per response: a head and a body sent apart would let Nagle's
    # algorithm hold the body back until the client acknowledges the head.
    writer.write(_response_head(status, len(body), keep_alive, headers) + body)


def _error_body(
    message: str,
    *,
    kind: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> bytes:
    error = {"message": message, "type": kind, "param": param, "code": code}
    return json.dumps({"error": error}).encode()


def _bearer_token(headers: Mapping[str, str]) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _positive_int(value: object, *, default: int) -> int:
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return default
    return number if number >= 0 else default


def _count_prompt_words(messages: object) -> int:
    if not isinstance(messages, list):
        return 0
    words = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            words += len(content.split())
    return words


@contextlib.contextmanager
def serve_fault_server(**options: Any) -> Iterator[str]:
    """Run a `FaultServer` in a background thread and yield its base URL.

    Args:
        **options: Keyword arguments of `FaultServer`.

    Yields:
        The base URL, ``http://127.0.0.1:PORT/v1``.
    """
    with FaultServer(**options) as server:
        yield server.base_url


# -- subprocess entry point --------------------------------------------------


def _parse_mix(text: str) -> dict[FaultKind, float]:
    mix: dict[FaultKind, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, weight = item.partition("=")
        if name not in FAULT_KINDS:
            raise argparse.ArgumentTypeError(f"unknown fault kind {name!r}")
        mix[name] = float(weight) if weight else 1.0
    return mix


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Serve OpenAI-style chat completions on 127.0.0.1, with faults."
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--reply-text", default="B")
    parser.add_argument("--model", default="test-model")
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument(
        "--fault-mix",
        type=_parse_mix,
        default=None,
        help="comma-separated KIND[=WEIGHT], from: " + ", ".join(FAULT_KINDS),
    )
    parser.add_argument("--retry-after", type=float, default=0.05)
    parser.add_argument("--slow-seconds", type=float, default=5.0)
    parser.add_argument("--always-401", action="store_true")
    parser.add_argument("--expected-api-key", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--letters", default=None)
    parser.add_argument("--omit-logprobs", action="store_true")
    return parser.parse_args(argv)


async def _serve_from_command_line(args: argparse.Namespace) -> None:
    server = FaultServer(
        port=args.port,
        reply_text=args.reply_text,
        model=args.model,
        fault_rate=args.fault_rate,
        fault_mix=args.fault_mix,
        retry_after=args.retry_after,
        slow_seconds=args.slow_seconds,
        always_401=args.always_401,
        expected_api_key=args.expected_api_key,
        seed=args.seed,
        latency=args.latency,
        letters=args.letters,
        omit_logprobs=args.omit_logprobs,
    )
    serving = asyncio.ensure_future(
        server.serve_until_cancelled(on_ready=lambda url: print(url, flush=True))
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, serving.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await serving


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM; the first stdout line is the base URL."""
    asyncio.run(_serve_from_command_line(_parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
