"""llama.cpp beside the course's engine: the server a CPU user would most likely run instead.

``llama-cpp-python`` wraps llama.cpp, the C/C++ library that runs GGUF files on laptops, and ships
an OpenAI-compatible server (``python -m llama_cpp.server``). It is an optional extra
(``pip install -e '.[anchor]'`` compiles llama.cpp: about three and a half minutes on two cores),
so the serving benchmark runs it where it is installed and records why not where it is not.

It runs on two files of the same model:

* the course's GGUF as it is (4-bit blocks with a scale and a minimum each, what a llama.cpp user
  downloads): llama.cpp's quantized kernels read about a fifth of the bytes the float32 weights take;
* :func:`dequantized_gguf`: the same file with every tensor de-quantized to float32, the very
  weights the course's engine runs (:func:`course_utils.models.convert_gguf` de-quantizes the same
  blocks), so that comparison is between engines, not number formats.

Its server answers one request at a time (a lock around one llama.cpp context): requests that
arrive together wait in line (the benchmark records one request's rate beside sixteen's). On a
processor with AMX tiles, llama.cpp 0.3.36's AMX matrix multiply crashed on the 4-bit file here
(``ggml_backend_amx_mul_mat``, as in ggml-org/llama.cpp#20824); the benchmark records such a
crash and goes on.
"""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from course_utils.serving.server import free_port

__all__ = ["LlamaCppServer", "concurrent_completions", "dequantized_gguf", "llama_cpp_missing"]

INSTALL_HINT = "pip install -e '.[anchor]' (compiles llama.cpp, a few minutes)"


def llama_cpp_missing() -> str | None:
    """None where ``llama_cpp`` and its server can be imported, else why not and how to install them."""
    for module in ("llama_cpp", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed: {INSTALL_HINT}"
    return None


def dequantized_gguf(source: Path, target: Path) -> Path:
    """Write ``target``: ``source`` with every tensor stored as float32 (quantized blocks de-quantized
    by gguf-py, the reference reader), the metadata copied and the file type set to all-float32."""
    import gguf

    reader = gguf.GGUFReader(source)
    architecture = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(target.name + ".partial")
    writer = gguf.GGUFWriter(staging, architecture)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # the writer adds the architecture; GGUF.* are the reader's view of the header
        if field.name == gguf.Keys.General.FILE_TYPE:
            writer.add_file_type(gguf.LlamaFileType.ALL_F32)
            continue
        kind = field.types[0]
        writer.add_key_value(field.name, field.contents(), kind,
                             sub_type=field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None)
    for tensor in reader.tensors:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        writer.add_tensor(tensor.name, values.reshape([int(n) for n in reversed(tensor.shape)]))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    staging.replace(target)
    return target


class LlamaCppServer:
    """``python -m llama_cpp.server`` on ``model`` in a child process, for a ``with`` block.

    ``threads``: llama.cpp's threads (give it the cores the course's engine uses); ``n_ctx``: its
    context, which must hold the longest prompt plus its answer; ``float32_cache``: keys and values
    kept in float32 as the engine keeps them (llama.cpp's default is float16). ``url`` is the base address.
    """

    def __init__(self, model: Path, threads: int, n_ctx: int = 2048, float32_cache: bool = True,
                 start_timeout_s: float = 120.0):
        missing = llama_cpp_missing()
        if missing:
            raise RuntimeError(missing)
        self.model, self.threads, self.n_ctx, self.start_timeout_s = Path(model), threads, n_ctx, start_timeout_s
        # ggml type numbers: 0 is float32, 1 float16 (llama.cpp's default, half the engine's KV bytes)
        self.cache_type = 0 if float32_cache else 1
        self.url = ""
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> LlamaCppServer:
        port = free_port()
        self._log = tempfile.TemporaryFile("w+")
        self.url = f"http://127.0.0.1:{port}"
        self._process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model), "--host", "127.0.0.1",
             "--port", str(port), "--n_threads", str(self.threads), "--n_threads_batch", str(self.threads),
             "--n_ctx", str(self.n_ctx), "--interrupt_requests", "False", "--verbose", "False",
             "--type_k", str(self.cache_type), "--type_v", str(self.cache_type)],
            stdout=subprocess.DEVNULL, stderr=self._log, text=True)  # a file: a pipe nobody reads fills and blocks
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                message = f"llama_cpp.server exited with {self._process.returncode}: {self.log_tail()}"
                self.__exit__(None, None, None)
                raise RuntimeError(message)
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=2.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        self.__exit__(None, None, None)
        raise TimeoutError(f"llama_cpp.server did not answer within {self.start_timeout_s:.0f} s")

    def __exit__(self, *exc) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()

    def completions(self, prompts: list[str], max_tokens: int) -> dict:
        """:func:`concurrent_completions` against this server; if it fails, a RuntimeError says how the
        server ended (a signal, for instance) and what it wrote last."""
        try:
            return concurrent_completions(self.url, prompts, max_tokens)
        except httpx.HTTPError as err:
            code = self._process.poll()
            how = ("still running" if code is None else f"killed by {signal.Signals(-code).name}" if code < 0
                   else f"exited with {code}")
            raise RuntimeError(f"llama_cpp.server failed ({how}): {err}; its log ends: {self.log_tail(300)!r}") from err

    def log_tail(self, chars: int = 500) -> str:
        """The end of what the server wrote to its standard error."""
        self._log.seek(0)
        return self._log.read()[-chars:]


def concurrent_completions(url: str, prompts: list[str], max_tokens: int) -> dict:
    """Send every prompt to ``url``'s ``/v1/completions`` at once, greedy without a repetition
    penalty, each made to produce exactly ``max_tokens`` tokens (``min_tokens`` = ``max_tokens``, as
    ``ignore_eos`` does in the course's engine). Returns the wall time, the output tokens/s over it
    and the texts, in order."""
    def one(prompt: str) -> dict:
        reply = httpx.post(f"{url}/v1/completions", timeout=600.0, json={
            "prompt": prompt, "max_tokens": max_tokens, "min_tokens": max_tokens, "temperature": 0.0,
            "repeat_penalty": 1.0})  # the server's default is 1.1: plain greedy needs it off
        reply.raise_for_status()
        return reply.json()

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        replies = list(pool.map(one, prompts))
    wall = time.perf_counter() - start
    tokens = [r["usage"]["completion_tokens"] for r in replies]
    if tokens != [max_tokens] * len(prompts):
        raise RuntimeError(f"llama.cpp produced {tokens} tokens, not {max_tokens} each")
    return {"requests": len(prompts), "output_tokens": sum(tokens), "wall_s": round(wall, 2),
            "tokens_per_s": round(sum(tokens) / wall, 2), "texts": [r["choices"][0]["text"] for r in replies]}
