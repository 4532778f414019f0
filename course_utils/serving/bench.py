"""A load generator for any OpenAI-compatible endpoint (ours, vLLM's, a hosted one).

Like vLLM's serving benchmark: requests arrive as a Poisson process at ``request_rate`` per
second (``inf`` sends them all at once), optionally capped at ``max_concurrency`` in flight.
Every request streams, so the client sees each token arrive and measures

* **TTFT**, time to first token: from sending the request to the first text;
* **ITL**, inter-token latency: the gaps between later pieces of text;
* **TPOT**, time per output token: (end-to-end - TTFT) / (output tokens - 1), per request;
* **E2E**, end-to-end latency;

summarised as mean, median, p95 and p99 in milliseconds, with requests/s and output tokens/s
over the whole run. ``llm-course bench`` is the command-line face of :func:`run_benchmark`.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import httpx
import numpy as np

__all__ = ["RequestResult", "run_benchmark", "summarise"]


@dataclass
class RequestResult:
    ok: bool
    prompt_tokens: int = 0
    output_tokens: int = 0
    ttft: float | None = None  # seconds
    e2e: float | None = None
    itl: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def tpot(self) -> float | None:
        if self.ttft is None or self.e2e is None or self.output_tokens < 2:
            return None
        return (self.e2e - self.ttft) / (self.output_tokens - 1)


async def _one(http: httpx.AsyncClient, model: str, prompt: str, max_tokens: int) -> RequestResult:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    result, last = RequestResult(ok=False), None
    try:
        async with http.stream("POST", "/completions", json=body) as response:
            if response.status_code != 200:
                result.error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    result.prompt_tokens = chunk["usage"]["prompt_tokens"]
                    result.output_tokens = chunk["usage"]["completion_tokens"]
                if chunk.get("choices") and chunk["choices"][0].get("text"):
                    now = time.perf_counter()
                    if last is None:
                        result.ttft = now - start
                    else:
                        result.itl.append(now - last)
                    last = now
        result.e2e = time.perf_counter() - start
        result.ok = result.ttft is not None
        if not result.ok:
            result.error = "the stream carried no text"
    except (httpx.HTTPError, json.JSONDecodeError, KeyError) as err:
        result.error = f"{type(err).__name__}: {err}"
    return result


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "median": None, "p95": None, "p99": None}
    ms = np.array(values) * 1000
    return {"mean": float(ms.mean()), "median": float(np.median(ms)), "p95": float(np.percentile(ms, 95)),
            "p99": float(np.percentile(ms, 99))}


def summarise(results: list[RequestResult], duration_s: float) -> dict:
    """Latency percentiles (ms) and throughput of one run."""
    done = [r for r in results if r.ok]
    output = sum(r.output_tokens for r in done)
    return {
        "completed": len(done), "failed": len(results) - len(done), "duration_s": duration_s,
        "requests_per_s": len(done) / duration_s if duration_s else 0.0,
        "output_tokens_per_s": output / duration_s if duration_s else 0.0, "output_tokens": output,
        "ttft_ms": _stats([r.ttft for r in done]), "tpot_ms": _stats([r.tpot for r in done if r.tpot is not None]),
        "itl_ms": _stats([gap for r in done for gap in r.itl]), "e2e_ms": _stats([r.e2e for r in done]),
        "errors": sorted({r.error for r in results if r.error})[:5],
    }


async def _run(base_url: str, model: str, prompts: list[str], max_tokens: int, request_rate: float,
               max_concurrency: int | None, seed: int) -> tuple[list[RequestResult], float]:
    rng = random.Random(seed)
    limit = asyncio.Semaphore(max_concurrency or len(prompts))
    timeout = httpx.Timeout(600.0, connect=30.0)
    async with httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout,
                                 limits=httpx.Limits(max_connections=None)) as http:

        async def limited(prompt: str) -> RequestResult:
            async with limit:
                return await _one(http, model, prompt, max_tokens)

        start, tasks = time.perf_counter(), []
        for prompt in prompts:
            tasks.append(asyncio.create_task(limited(prompt)))
            if math.isfinite(request_rate):
                await asyncio.sleep(rng.expovariate(request_rate))
        results = await asyncio.gather(*tasks)
    return list(results), time.perf_counter() - start


def run_benchmark(base_url: str, model: str, prompts: list[str], max_tokens: int = 64,
                  request_rate: float = math.inf, max_concurrency: int | None = None, seed: int = 0) -> dict:
    """Send every prompt (streaming) and return the summary, with the per-request results.

    Works from plain Python and from inside a running event loop (a notebook cell) alike.
    """
    if not prompts or max_tokens < 1 or request_rate <= 0:
        raise ValueError("need at least one prompt, max_tokens >= 1 and request_rate > 0")
    run = _run(base_url, model, prompts, max_tokens, request_rate, max_concurrency, seed)
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # the usual case: a script or the command line
        results, duration = asyncio.run(run)
    else:  # called from a running event loop (a Jupyter cell): give the run a loop of its own in a thread
        with ThreadPoolExecutor(max_workers=1) as pool:
            results, duration = pool.submit(asyncio.run, run).result()
    summary = summarise(results, duration)
    summary.update(base_url=base_url, model=model, num_prompts=len(prompts), max_tokens=max_tokens,
                   request_rate=request_rate if math.isfinite(request_rate) else "inf",
                   max_concurrency=max_concurrency, requests=[asdict(r) for r in results])
    return summary
