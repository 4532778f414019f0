"""An OpenAI-compatible HTTP server in front of the engine (FastAPI + uvicorn).

Routes: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions`` (the
model's chat template), with ``"stream": true`` answered as server-sent events: one
``data: {json}`` chunk per new piece of text, then ``data: [DONE]``.

Every bad request gets OpenAI's error shape, ``{"error": {"message", "type", "param", "code"}}``:
400 for invalid JSON, wrong types, out-of-range values or a prompt too long for the context, 404
for an unknown model, 408 for a body that does not arrive in time, 413 for one too large; never a
500 (that is kept for a request the engine itself failed on; the others in its step go on). A
client that disconnects aborts its request, which frees its KV blocks at once.

The engine is synchronous and single-threaded; :class:`AsyncEngine` runs its step loop in a
background thread, feeds it new requests and aborts through an inbox, and hands each request's
progress to that request's asyncio queue. Tokenising runs in worker threads. Nothing in the
event loop waits for a step, so a long prefill delays no other route.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import queue
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException

from course_utils.defaults import DEFAULT_MODEL
from course_utils.serving.engine import LLMEngine
from course_utils.serving.llm import CompletionOutput, RequestOutput, request_output
from course_utils.serving.logprobs import Logprob, token_bytes_table
from course_utils.serving.sampling import MAX_SPECULATIVE_TOKENS, SamplingParams
from course_utils.serving.sequence import Sequence, SequenceStatus
from course_utils.serving.structured import StructuredOutputs
from course_utils.serving.tools import (
    MAX_TOOLS,
    ChatPlan,
    ResponseFormat,
    ToolDef,
    may_become_call,
    parse_reply,
    plan_chat,
)

__all__ = ["BODY_TIMEOUT_S", "MAX_CHOICES", "MAX_LOGPROBS", "MAX_STOP_CHARS", "MAX_STOP_STRINGS", "AsyncEngine",
           "BodyLimits", "background_server", "bind_socket", "create_app", "free_port", "serve"]

MAX_STOP_STRINGS = 4  # OpenAI's limit on `stop`
MAX_STOP_CHARS = 256  # each stop string is searched for in the whole reply at every token
MAX_BODY_OVERHEAD = 64 * 1024  # bytes a request may carry beside its prompt or messages
BODY_TIMEOUT_S = 30.0  # a request body must arrive whole within this time
MAX_CHOICES = 16  # `n`: completions one request may ask for
MAX_LOGPROBS = 20  # top alternatives per token (`logprobs`, `top_logprobs`), vLLM's default limit

logger = logging.getLogger(__name__)


class AsyncEngine:
    """The engine's step loop in a thread; ``generate`` yields a request's outputs as they grow.

    Only the engine thread touches the engine. The asyncio side never waits for it: a new request
    or an abort goes into an inbox that the engine thread empties between steps, so a long step
    delays no other route of the server.
    """

    def __init__(self, engine: LLMEngine):
        if engine.served_by is not None:
            raise RuntimeError(f"this engine is already served by {engine.served_by}; shut that down first")
        self.engine = engine
        engine.served_by = "a background server (AsyncEngine)"
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._queues: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="engine-loop", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while self._running:
            updates = self._take_inbox()
            busy = self.engine.has_unfinished
            try:
                updates += _request_outputs(self.engine.step()) if busy else []
            except Exception:  # a bug must not kill the loop and strand every client: fail them all
                logger.exception("engine step failed; ending the requests in flight")
                updates += _request_outputs(self.engine.abort_all("error"))
            for out in updates:
                self._deliver(out)
            if not busy:
                self._wake.wait(0.05)
                self._wake.clear()

    def _take_inbox(self) -> list[RequestOutput]:
        """Register the requests and aborts that arrived since the last step; the outputs of
        requests that could not be registered (they end with finish reason "error")."""
        refused = []
        while True:
            try:
                kind, item = self._inbox.get_nowait()
            except queue.Empty:
                return refused
            if kind == "abort":
                self.engine.abort(item)
                continue
            prompt_token_ids, params, request_id = item
            try:
                self.engine.add_request(prompt_token_ids, params, request_id)
            except Exception:  # checked on arrival, so this is a bug: end this request only
                logger.exception("could not register %s", request_id)
                seq = Sequence(list(prompt_token_ids), params, request_id)
                seq.status, seq.finish_reason = SequenceStatus.FINISHED, "error"
                refused.append(request_output(seq))

    def _deliver(self, out: RequestOutput) -> None:
        target = self._queues.get(out.request_id)
        if target is not None:
            loop, updates = target
            loop.call_soon_threadsafe(updates.put_nowait, out)

    def shutdown(self) -> None:
        """Stop the step loop and hand the engine back: it is the caller's again, and this object no
        longer holds it (FastAPI caches the route functions, which hold this object, beyond the
        server's life: a notebook that dropped its engine after the server kept a gigabyte)."""
        self._running = False
        self._wake.set()
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.engine.served_by = None
            self.engine = None

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    def add(self, prompt_token_ids: list[int], params: SamplingParams) -> tuple[str, asyncio.Queue]:
        """Queue a request (ValueError if it can never be served); returns its id and its update queue."""
        self.engine.check_request(prompt_token_ids, params)  # pure and cheap: safe beside a running step
        request_id = f"req-{uuid.uuid4().hex}"
        updates: asyncio.Queue = asyncio.Queue()
        self._queues[request_id] = (asyncio.get_running_loop(), updates)
        self._inbox.put(("add", (list(prompt_token_ids), params, request_id)))
        self._wake.set()
        return request_id, updates

    async def stream(self, request_id: str, updates: asyncio.Queue) -> AsyncIterator[RequestOutput]:
        """The request's outputs, one per new token, until it finishes; aborts it if abandoned."""
        finished = False
        try:
            while not finished:
                out = await updates.get()
                finished = out.finished
                yield out
        finally:
            self._queues.pop(request_id, None)
            if not finished:
                self._inbox.put(("abort", request_id))
                self._wake.set()


def _request_outputs(seqs: list[Sequence]) -> list[RequestOutput]:
    """One output per request among ``seqs`` (the n completions of a request are one reply)."""
    return [request_output(root) for root in {id(seq.root): seq.root for seq in seqs}.values()]


class _Body(BaseModel):
    """The request fields this server implements; any other field is refused with a 400 naming it,
    never silently ignored (a client asking for ``logprobs`` must not get a reply without them)."""

    model_config = ConfigDict(extra="forbid")
    model: str
    user: str | None = None  # OpenAI's end-user identifier: accepted, used for nothing
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int = Field(default=0, ge=-1)
    seed: int | None = None
    stop: str | Annotated[list[Annotated[str, Field(max_length=MAX_STOP_CHARS)]],
                          Field(max_length=MAX_STOP_STRINGS)] | None = Field(default=None, max_length=MAX_STOP_CHARS)
    stream: bool = False
    n: int = Field(default=1, ge=1, le=MAX_CHOICES)
    repetition_penalty: float = Field(default=1.0, gt=0)
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    min_p: float = Field(default=0.0, ge=0, le=1)
    stop_token_ids: list[int] = Field(default_factory=list, max_length=MAX_STOP_STRINGS * 16)  # vLLM's extra
    ignore_eos: bool = False
    # the course's extra: prompt-lookup drafts per step for this request (None: the engine's setting, 0: none)
    speculative_tokens: int | None = Field(default=None, ge=0, le=MAX_SPECULATIVE_TOKENS)
    stream_options: dict[str, Any] | None = None

    def requested_logprobs(self) -> int | None:
        """How many top alternatives per token the client asked for; None for no logprobs."""
        return None


class CompletionBody(_Body):
    prompt: str | list[int]
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)

    def requested_logprobs(self) -> int | None:
        return self.logprobs


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_TOOLS)  # an assistant's earlier calls
    tool_call_id: str | None = None  # a tool message: the call it answers

    @model_validator(mode="after")
    def _has_content(self) -> ChatMessage:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required (only an assistant message with tool_calls may leave it out)")
        return self


class ChatBody(_Body):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    tools: list[ToolDef] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None  # accepted; a constrained reply holds one call
    response_format: ResponseFormat | None = None

    def requested_logprobs(self) -> int | None:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return (self.top_logprobs or 0) if self.logprobs else None


class BodyLimits:
    """ASGI middleware: a request body must arrive whole within ``timeout_s`` and hold at most
    ``max_bytes``, or the client gets 408 or 413 (OpenAI's error shape) and the connection is closed.

    Without it, a client that sends its headers and then trickles (or never sends) the body it
    announced would hold a connection and a coroutine forever. The body, once complete, is
    handed to the application as one message.
    """

    def __init__(self, app, max_bytes: int, timeout_s: float):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(scope, receive, send, 413, f"the request body ({int(declared):,} bytes) is "
                                      f"larger than this server accepts ({self.max_bytes:,} bytes)")
        try:
            body = await asyncio.wait_for(self._read_body(receive), self.timeout_s)
        except asyncio.TimeoutError:
            return await self._refuse(scope, receive, send, 408, f"the request body did not arrive within "
                                      f"{self.timeout_s:g} s; send the whole body at once")
        if body is None:  # the client went away
            return None
        if len(body) > self.max_bytes:
            return await self._refuse(scope, receive, send, 413, "the request body is larger than this server "
                                      f"accepts ({self.max_bytes:,} bytes)")
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: only a disconnect can come
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    async def _read_body(self, receive) -> bytes | None:
        """The whole body (cut short just past max_bytes), or None if the client disconnected."""
        chunks, size = [], 0
        while size <= self.max_bytes:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    @staticmethod
    async def _refuse(scope, receive, send, status: int, message: str) -> None:
        response = _error(status, message)
        response.headers["connection"] = "close"
        await response(scope, receive, send)


def _error(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}}, status)


def create_app(engine: AsyncEngine, model_name: str, body_timeout_s: float = BODY_TIMEOUT_S) -> FastAPI:
    """The FastAPI application serving ``engine`` under the name ``model_name``; a request body
    must arrive whole within ``body_timeout_s`` seconds."""
    app = FastAPI(title="llm-course OpenAI-compatible server")
    max_model_len = engine.engine.config.max_model_len
    # No token is longer than the vocabulary's longest entry (byte-level BPE: one character per byte),
    # so a text of more than max_model_len times that many UTF-8 bytes cannot fit: refused untokenised.
    longest_token = max(len(token) for token in engine.tokenizer.get_vocab())
    token_bytes = token_bytes_table(engine.tokenizer)
    max_text_bytes = max_model_len * longest_token
    # JSON may spell a byte as up to 6 ("\u0000"); the rest of a request is small
    app.add_middleware(BodyLimits, max_bytes=6 * max_text_bytes + MAX_BODY_OVERHEAD, timeout_s=body_timeout_s)

    def too_long(text_bytes: int, param: str) -> JSONResponse | None:
        if text_bytes <= max_text_bytes:
            return None
        return _error(400, f"the {param} has {text_bytes:,} bytes: more than this model's context of {max_model_len} "
                           f"tokens can hold (at most {longest_token} bytes per token)", param=param)

    def tokenize(text: str) -> list[int]:  # called in a worker thread: the event loop keeps serving
        return engine.tokenizer(text, add_special_tokens=False)["input_ids"]

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        if first.get("type") == "extra_forbidden":
            return _error(400, f"{where}: this server does not implement this field; leave it out", param=where)
        return _error(400, f"{where or 'request'}: {first.get('msg', 'invalid request')}", param=where or None)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), "not_found_error" if exc.status_code == 404 else
                      "invalid_request_error")

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0,
                                            "owned_by": "llm-course", "max_model_len": max_model_len}]}

    def check(body: _Body, prompt_ids: list[int], chat: bool,
              structured: StructuredOutputs | None = None) -> SamplingParams | JSONResponse:
        if body.model != model_name:
            return _error(404, f"The model `{body.model}` does not exist; this server has `{model_name}`.",
                          "not_found_error", "model")
        # OpenAI's defaults: 16 tokens for a completion, the rest of the context for a chat reply
        max_tokens = body.max_tokens or (max(1, max_model_len - len(prompt_ids)) if chat else 16)
        if not prompt_ids:
            return _error(400, "the prompt is empty", param="prompt")
        try:
            logprobs = body.requested_logprobs()
        except ValueError as err:
            return _error(400, str(err), param="top_logprobs")
        if len(prompt_ids) + max_tokens > max_model_len:
            return _error(400, f"This model's maximum context length is {max_model_len} tokens; the prompt has "
                               f"{len(prompt_ids)} and max_tokens asks for {max_tokens} more.", param="max_tokens")
        try:
            return SamplingParams(temperature=body.temperature, top_p=body.top_p, top_k=body.top_k, seed=body.seed,
                                  max_tokens=max_tokens, stop=body.stop or [], ignore_eos=body.ignore_eos,
                                  repetition_penalty=body.repetition_penalty,
                                  presence_penalty=body.presence_penalty, frequency_penalty=body.frequency_penalty,
                                  min_p=body.min_p, stop_token_ids=body.stop_token_ids, n=body.n, logprobs=logprobs,
                                  structured_outputs=structured, speculative_tokens=body.speculative_tokens)
        except ValueError as err:
            return _error(400, str(err))

    async def respond(request: Request, body: _Body, prompt_ids: list[int], chat: bool,
                      plan: ChatPlan | None = None) -> Any:
        params = check(body, prompt_ids, chat, plan.structured if plan is not None else None)
        if isinstance(params, JSONResponse):
            return params
        try:
            request_id, updates = engine.add(prompt_ids, params)
        except ValueError as err:
            return _error(400, str(err), param="prompt" if params.structured_outputs is None else
                          "tools" if plan.tool_mode != "none" else "response_format")
        created = int(time.time())
        if body.stream:
            usage = bool((body.stream_options or {}).get("include_usage"))
            events = _sse(engine.stream(request_id, updates), request_id, created, model_name, chat, params, usage,
                          token_bytes, plan)
            return StreamingResponse(events, media_type="text/event-stream")
        final, outputs = None, engine.stream(request_id, updates)
        try:
            async for out in outputs:
                final = out
                if await request.is_disconnected():
                    break
        finally:
            await outputs.aclose()  # an unfinished request is aborted here, freeing its blocks
        if final is None or not final.finished:
            return _error(400, "the client disconnected before the reply was complete")
        if any(o.finish_reason == "error" for o in final.outputs):
            return _error(500, "the engine failed while generating this reply", "server_error")
        return _full_response(final, request_id, created, model_name, chat, params, token_bytes, plan)

    @app.post("/v1/completions")
    async def completions(request: Request, body: CompletionBody) -> Any:
        if isinstance(body.prompt, str) and (refused := too_long(len(body.prompt.encode()), "prompt")):
            return refused
        prompt_ids = body.prompt if isinstance(body.prompt, list) else await asyncio.to_thread(tokenize, body.prompt)
        return await respond(request, body, list(prompt_ids), chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, body: ChatBody) -> Any:
        try:
            plan = plan_chat([m.model_dump() for m in body.messages], body.tools, body.tool_choice,
                             body.response_format)
        except ValueError as err:
            return _error(400, str(err), param=str(err).split(":")[0].split(".")[0])
        if refused := too_long(sum(len(m["content"].encode()) for m in plan.messages), "messages"):
            return refused
        try:
            text = await asyncio.to_thread(engine.tokenizer.apply_chat_template, plan.messages, tokenize=False,
                                           add_generation_prompt=True)
        except Exception as err:  # a template may reject a role order; that is the client's to fix
            return _error(400, f"messages could not be rendered with the chat template: {err}", param="messages")
        return await respond(request, body, await asyncio.to_thread(tokenize, text), chat=True, plan=plan)

    return app


def _usage(out: RequestOutput) -> dict:
    prompt, completion = len(out.prompt_token_ids), sum(len(o.token_ids) for o in out.outputs)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _logprobs_json(completion: CompletionOutput, start: int, chat: bool, k: int | None,
                   token_bytes: list[bytes], text_offset: int = 0) -> dict | None:
    """OpenAI's logprobs of ``completion``'s tokens from index ``start`` on (None when not asked for):
    chat's ``{"content": [...]}`` with each token's bytes, or the completions API's four lists."""
    if k is None or completion.logprobs is None:
        return None
    steps = list(zip(completion.token_ids[start:], completion.logprobs[start:], strict=True))

    def top(entry: dict[int, Logprob]) -> list[tuple[int, Logprob]]:
        return sorted(((t, lp) for t, lp in entry.items() if lp.rank <= k), key=lambda item: item[1].rank)

    if chat:
        def item(token_id: int, lp: Logprob) -> dict:
            return {"token": lp.decoded_token, "logprob": lp.logprob, "bytes": list(token_bytes[token_id])}
        return {"content": [item(t, e[t]) | {"top_logprobs": [item(*pair) for pair in top(e)]} for t, e in steps]}
    tokens = [e[t].decoded_token for t, e in steps]
    offsets = list(itertools.accumulate((len(piece) for piece in tokens[:-1]), initial=text_offset))[:len(tokens)]
    return {"tokens": tokens, "token_logprobs": [e[t].logprob for t, e in steps],
            "top_logprobs": [{lp.decoded_token: lp.logprob for _, lp in top(e)} for _, e in steps],
            "text_offset": offsets}


def _choice(index: int, text: str, logprobs: dict | None, finish: str | None, chat: bool, stream: bool,
            plan: ChatPlan | None = None) -> dict:
    """One entry of ``choices``: a whole reply, or a streamed piece of one. A chat reply with tool
    calls (only ever whole: calls are held back while streaming) carries them, content possibly
    None, and finish reason ``tool_calls``."""
    if not chat:
        return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}
    content, calls = parse_reply(text, plan) if finish is not None or not stream else (text, [])
    if calls and finish == "stop":
        finish = "tool_calls"
    if stream:
        delta = {"content": content} if content else {}
        if calls:
            delta["tool_calls"] = [{"index": j, **call} for j, call in enumerate(calls)]
        return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
    message = {"role": "assistant", "content": content} | ({"tool_calls": calls} if calls else {})
    return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish}


def _full_response(out: RequestOutput, request_id: str, created: int, model: str, chat: bool,
                   params: SamplingParams, token_bytes: list[bytes], plan: ChatPlan | None = None) -> dict:
    choices = [_choice(c.index, c.text, _logprobs_json(c, 0, chat, params.logprobs, token_bytes), c.finish_reason,
                       chat, stream=False, plan=plan) for c in out.outputs]
    return {"id": request_id, "object": "chat.completion" if chat else "text_completion", "created": created,
            "model": model, "choices": choices, "usage": _usage(out)}


async def _sse(outputs: AsyncIterator[RequestOutput], request_id: str, created: int, model: str, chat: bool,
               params: SamplingParams, include_usage: bool, token_bytes: list[bytes],
               plan: ChatPlan | None = None) -> AsyncIterator[str]:
    """Server-sent events: a chunk per new piece of text of each of the n choices, with the logprobs
    of the tokens generated since its last chunk. Text that could still turn out to be the start
    of a stop string, or half of a multi-byte character, is held back until it is safe; so is a
    reply that may be a tool call, which is sent whole, as OpenAI's ``tool_calls`` delta, at its end."""
    obj = "chat.completion.chunk" if chat else "text_completion"
    hold = max((len(s) for s in params.stop), default=1) - 1
    sent_chars, sent_tokens, done = [0] * params.n, [0] * params.n, [False] * params.n

    def event(choices: list[dict], **extra) -> str:
        body = {"id": request_id, "object": obj, "created": created, "model": model, "choices": choices} | extra
        return f"data: {json.dumps(body)}\n\n"

    if chat:
        for i in range(params.n):
            yield event([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    last = None
    async for out in outputs:
        last = out
        for completion in out.outputs:
            i, text, finished = completion.index, completion.text, completion.finish_reason is not None
            if done[i]:
                continue
            if sent_chars[i] == 0 and not finished and may_become_call(text, plan):
                continue  # maybe a tool call: nothing is sent until it is known
            safe = len(text) if finished else max(sent_chars[i], len(text) - hold)
            while safe > sent_chars[i] and text[safe - 1] == "\ufffd":  # an incomplete character: wait for the rest
                safe -= 1
            if safe > sent_chars[i] or finished:
                logprobs = _logprobs_json(completion, sent_tokens[i], chat, params.logprobs, token_bytes, sent_chars[i])
                whole = finished and sent_chars[i] == 0  # a reply sent in one piece may hold tool calls
                piece = text[sent_chars[i]:safe]
                yield event([_choice(i, piece, logprobs, completion.finish_reason, chat, stream=True,
                                     plan=plan if whole else None)])
                sent_chars[i], sent_tokens[i], done[i] = safe, len(completion.token_ids), finished
    if include_usage and last is not None:
        yield event([], usage=_usage(last))
    yield "data: [DONE]\n\n"


@contextmanager
def background_server(engine: LLMEngine, model_name: str, port: int | None = None,
                      timeout_s: float = 30.0, body_timeout_s: float = BODY_TIMEOUT_S) -> Iterator[str]:
    """Serve ``engine`` on 127.0.0.1 from a background thread (a notebook, a test); yields the
    base URL for an OpenAI client, ``http://127.0.0.1:PORT/v1``, and stops the server on exit.

    ``port=None`` takes a free port; ``timeout_s`` bounds the wait for the server to start,
    ``body_timeout_s`` the wait for a request's body.
    """
    import uvicorn

    if port is None:
        port = free_port()
    async_engine = AsyncEngine(engine)
    app = create_app(async_engine, model_name, body_timeout_s)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on 127.0.0.1:{port} (is the port taken?)")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        async_engine.shutdown()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on at the moment of asking (the system picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready socket on (host, port); ValueError in one line when the port is taken.

    Bound before the model loads, so a busy port is reported at once, not after a minute of loading.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise ValueError(f"cannot resolve the host {host!r} ({err.strerror}); use an address like 127.0.0.1") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port} ({err.strerror}): another server may be using it; "
                         "stop it or choose another port with --port N") from None
    return sock


def serve(model: str = DEFAULT_MODEL, host: str = "127.0.0.1", port: int = 8000,
          device: str = "cpu", **engine_args) -> None:
    """Load ``model`` and serve it until interrupted (``llm-course serve``)."""
    import uvicorn

    from course_utils.serving.llm import LLM

    sock = bind_socket(host, port)
    try:
        engine = AsyncEngine(LLM(model, device=device, **engine_args).engine)
        try:
            server = uvicorn.Server(uvicorn.Config(create_app(engine, model), log_level="info"))
            server.run(sockets=[sock])
        finally:
            engine.shutdown()
    finally:
        sock.close()
