"""A fault-injecting HTTP proxy: a real server behind it, a scripted share of failures in front.

Each request the proxy receives gets a number; a seeded draw for that number (and the scripted
outage windows, in seconds since the proxy's clock started) decides what it does with it:

=================  ==========================================================================
``rate_limit``     answers 429 with ``retry-after-ms`` and ``Retry-After``, as OpenAI does
``server_error``   answers 500
``unavailable``    answers 503
``reset``          accepts the request and resets the connection (TCP RST)
``timeout``        accepts the request and never answers (until ``hang_s`` or the client leaves)
``slow_first_byte`` waits ``slow_s``, then forwards
``truncated``      forwards, then cuts the body in half and closes without ending it
``malformed``      answers 200 with a JSON body that does not parse
``refusal``        answers 200 with a well-formed completion that declines (:data:`REFUSAL_TEXT`):
                   not a transport fault but a behaviour one, for monitors that count refusals
(none)             forwards the request to the upstream server and relays its answer
=================  ==========================================================================

The same seed gives the same fault for the same request number, so two client strategies can
be run against one schedule. ``log`` keeps (number, seconds, fault, path) for every request.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import httpx

__all__ = ["FAULT_KINDS", "REFUSAL_TEXT", "FaultPlan", "FaultProxy", "FaultRecord", "Outage"]

FAULT_KINDS = ("rate_limit", "server_error", "unavailable", "reset", "timeout", "slow_first_byte",
               "truncated", "malformed", "refusal")  # new kinds go last: a seed's earlier draws stay the same
REFUSAL_TEXT = "I'm sorry, but I can't help with that request."
_STATUS = {"rate_limit": (429, "Too Many Requests"), "server_error": (500, "Internal Server Error"),
           "unavailable": (503, "Service Unavailable")}
_MAX_HEAD_BYTES = 64 * 1024
_MAX_BODY_BYTES = 4 * 1024 * 1024
_FORWARDED_HEADERS = ("content-type", "accept", "authorization")


@dataclass(frozen=True)
class Outage:
    """From ``start_s`` to ``end_s`` (seconds on the proxy's clock) every request gets ``kind``."""

    start_s: float
    end_s: float
    kind: str = "unavailable"


@dataclass(frozen=True)
class FaultPlan:
    """What share of requests gets each fault, the outage windows, and the fault's parameters."""

    rates: Mapping[str, float] = field(default_factory=dict)
    outages: tuple[Outage, ...] = ()
    seed: int = 0
    retry_after_s: float = 0.5
    slow_s: float = 2.0
    hang_s: float = 30.0

    def __post_init__(self):
        unknown = sorted((set(self.rates) | {o.kind for o in self.outages}) - set(FAULT_KINDS))
        if unknown:
            raise ValueError(f"unknown fault kind(s) {unknown}; choose from {', '.join(FAULT_KINDS)}")
        if any(not 0 <= r <= 1 for r in self.rates.values()) or sum(self.rates.values()) > 1 + 1e-9:
            raise ValueError(f"fault rates are shares in [0, 1] that sum to at most 1, got {dict(self.rates)}")
        if any(o.end_s <= o.start_s for o in self.outages):
            raise ValueError("each outage must end after it starts")
        object.__setattr__(self, "rates", MappingProxyType(dict(self.rates)))

    def fault_for(self, number: int, elapsed_s: float) -> str | None:
        """The fault for request ``number`` arriving ``elapsed_s`` after the clock started."""
        for outage in self.outages:
            if outage.start_s <= elapsed_s < outage.end_s:
                return outage.kind
        draw = random.Random(self.seed * 1_000_003 + number).random()
        for kind in FAULT_KINDS:
            draw -= self.rates.get(kind, 0.0)
            if draw < 0:
                return kind
        return None


@dataclass(frozen=True)
class FaultRecord:
    number: int
    elapsed_s: float
    fault: str | None
    path: str


class FaultProxy:
    """``with FaultProxy("http://127.0.0.1:8000", plan) as proxy:`` serves ``proxy.url`` (…/v1)
    from a background thread on a free loopback port, and stops on exit."""

    def __init__(self, upstream: str, plan: FaultPlan, name: str = "proxy"):
        self.upstream, self.plan, self.name = upstream.rstrip("/"), plan, name
        self.log: list[FaultRecord] = []
        self.port = 0
        self._epoch = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def restart_clock(self) -> None:
        """Outage windows count from now; request numbers and the log start again."""
        self._epoch, self.log = time.monotonic(), []

    def counts(self) -> Counter:
        """How many requests got each fault ("none": forwarded untouched)."""
        return Counter(record.fault or "none" for record in self.log)

    def __enter__(self) -> FaultProxy:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._start())
            ready.set()
            loop.run_forever()
            loop.close()

        self._loop, self._thread = loop, threading.Thread(target=run, name=f"fault-proxy-{self.name}", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"the fault proxy {self.name} did not start within 10 s")
        self.restart_clock()
        return self

    def __exit__(self, *exc) -> None:
        assert self._loop is not None and self._thread is not None
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        self._http = httpx.AsyncClient(base_url=self.upstream, timeout=None)
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, limit=_MAX_HEAD_BYTES)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._http.aclose()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, httpx.HTTPError):
            pass  # a client that left, a request we cannot parse, an upstream that failed: drop it
        finally:
            self._tasks.discard(task)
            if not writer.is_closing():
                writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        headers = {}
        for line in header_lines:
            if ":" in line:
                key, value = line.split(":", 1)
                headers[key.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if not 0 <= length <= _MAX_BODY_BYTES:
            raise ValueError("body too large")
        body = await reader.readexactly(length) if length else b""
        number = len(self.log)
        fault = self.plan.fault_for(number, time.monotonic() - self._epoch)
        self.log.append(FaultRecord(number, time.monotonic() - self._epoch, fault, path))
        plan = self.plan
        if fault in _STATUS:
            status, reason = _STATUS[fault]
            extra = {}
            if fault == "rate_limit":
                extra = {"retry-after-ms": str(round(plan.retry_after_s * 1000)),
                         "retry-after": str(math.ceil(plan.retry_after_s))}
            payload = (b'{"error": {"message": "injected %s", "type": "%s", "code": %d}}'
                       % (fault.encode(), fault.encode(), status))
            await self._respond(writer, status, reason, {"content-type": "application/json", **extra}, payload)
        elif fault == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        elif fault == "timeout":
            try:
                await asyncio.wait_for(reader.read(1), plan.hang_s)  # b"" as soon as the client gives up
            except asyncio.TimeoutError:
                pass
        elif fault == "malformed":
            await self._respond(writer, 200, "OK", {"content-type": "application/json"},
                                b'{"id": "chatcmpl-injected", "choices": [{"message": {"content": "')
        elif fault == "refusal":
            words = len(REFUSAL_TEXT.split())
            payload = json.dumps({"id": "chatcmpl-injected", "object": "chat.completion", "created": 0,
                                  "model": "injected", "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                      "role": "assistant", "content": REFUSAL_TEXT}}],
                                  "usage": {"prompt_tokens": 0, "completion_tokens": words, "total_tokens": words}})
            await self._respond(writer, 200, "OK", {"content-type": "application/json"}, payload.encode())
        else:
            if fault == "slow_first_byte":
                await asyncio.sleep(plan.slow_s)
            forwarded = {k: v for k, v in headers.items() if k in _FORWARDED_HEADERS}
            request = self._http.build_request(method, path, headers=forwarded, content=body)
            response = await self._http.send(request, stream=True)
            try:
                kept = {k: v for k, v in response.headers.items()
                        if k not in ("content-length", "transfer-encoding", "connection", "content-encoding")}
                writer.write(_status_line(response.status_code, response.reason_phrase, kept,
                                          {"transfer-encoding": "chunked"}))
                if fault == "truncated":
                    content = await response.aread()
                    writer.write(_chunk(content[: len(content) // 2]))
                    await writer.drain()
                    writer.transport.abort()
                    return
                async for piece in response.aiter_raw():
                    writer.write(_chunk(piece))
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
                await writer.drain()
            finally:
                await response.aclose()

    @staticmethod
    async def _respond(writer: asyncio.StreamWriter, status: int, reason: str, headers: dict[str, str],
                       payload: bytes) -> None:
        writer.write(_status_line(status, reason, headers, {"content-length": str(len(payload))}) + payload)
        await writer.drain()


def _status_line(status: int, reason: str, headers: Mapping[str, str], framing: Mapping[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{k}: {v}" for k, v in {**headers, **framing, "connection": "close"}.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""
