"""``make bench-llm``: `wasinn serve --openai` against llama-server and llama_cpp.server.

llm-serving spec §8. One random-weight GGUF written by our code (512 wide, 8 blocks, Q8_0, a
2,048-token context), three servers started one after the other on loopback with the same
threads, slots and context, and one streaming client: distinct prompts, temperature 0,
``MAX_TOKENS`` tokens each, at concurrency 1, 4 and 8. Per level: aggregate generated tokens
per second (Σ completion tokens / wall) and p50/p99 time to the first non-empty content delta.

llama-server is built once from the llama.cpp the llama-cpp-python sdist vendors (the same
source as our llama.cpp) and cached under ``~/.cache/wasinn/llama-server/``, never committed.
Run with ``python -m wasinn.bench.llm [--json PATH]``; not part of ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wasinn.core._paths import user_cache_dir
from wasinn.testing.tiny_gguf import SDIST_NAME, TinyLlamaShape, _sdist_candidates

SHAPE = TinyLlamaShape(
    context_length=2048,
    embedding_length=512,
    feed_forward_length=1408,
    block_count=8,
    head_count=8,
    head_count_kv=8,
)
VERSION = "0.3.36"
LEVELS = (1, 4, 8)
SLOTS, CTX, MAX_TOKENS, REQUESTS = 8, 2048, 128, 16
# the prebuilt web UI would be downloaded from Hugging Face at build time: off, nothing phones home
CMAKE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
]


def llama_server(log: Any = sys.stderr) -> Path:
    """The llama-server binary, built from the sdist's vendored llama.cpp on first use."""
    binary = user_cache_dir() / "llama-server" / VERSION / "llama-server"
    if binary.is_file():
        return binary
    sdist = next((path for path in _sdist_candidates() if path.is_file()), None)
    if sdist is None:
        raise SystemExit(f"bench-llm: no build/sdist/{SDIST_NAME} (make setup downloads it)")
    with tempfile.TemporaryDirectory(prefix="wasinn-llama-server-") as scratch:
        root = Path(scratch)
        prefix = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"
        with tarfile.open(sdist) as archive:
            members = [member for member in archive.getmembers() if member.name.startswith(prefix)]
            archive.extractall(root, members, filter="data")
        source, build = root / prefix, root / "build"
        jobs = str(os.cpu_count() or 2)
        print(f"bench-llm: building llama-server from {sdist.name} (minutes)", file=log, flush=True)
        subprocess.run(
            ["cmake", "-S", str(source), "-B", str(build), "-G", "Ninja", *CMAKE_FLAGS], check=True
        )
        subprocess.run(["cmake", "--build", str(build), "--target", "llama-server", "-j", jobs], check=True)
        binary.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(build / "bin" / "llama-server", binary)
    return binary


def bench_model() -> Path:
    from wasinn.testing.tiny_quant import tiny_llama_quantized

    return tiny_llama_quantized(SHAPE)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def server_command(name: str, model: Path, port: int, threads: int) -> list[str]:
    """The command line of server ``name``: the same slots, context, batch and threads."""
    if name == "llama-server":
        slots = ["-np", str(SLOTS), "-c", str(SLOTS * CTX), "--no-kv-unified", "-b", "2048", "-ub", "512"]
        rest = ["-fa", "auto", "--cache-ram", "0", "--no-warmup", "--metrics", "--log-disable"]
        where = ["--host", "127.0.0.1", "--port", str(port), "-t", str(threads), "-tb", str(threads)]
        return [str(llama_server()), "-m", str(model), *where, *slots, *rest]
    if name == "llama_cpp.server":
        where = ["--host", "127.0.0.1", "--port", str(port)]
        sizes = ["--n_ctx", str(CTX), "--n_batch", "2048", "--n_ubatch", "512"]
        cpu = ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
        # by default a new request stops the running stream (it serves one at a time): queue them
        queue = ["--interrupt_requests", "False"]
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(model), *where, *sizes, *cpu, *queue]
    if name == "wasinn":
        guest = os.environ.get("WASINN_LLM_GUEST")
        serve = ["serve", "--port", str(port), "--nn-preload", f"bench:GGML:AUTO:{model}"]
        options = ["--openai", "bench", "--parallel", str(SLOTS), "--max-waiting", "64", "--time-limit", "0"]
        guest_option = ["--openai-guest", guest] if guest else []
        return [sys.executable, "-m", "wasinn", *serve, *options, *guest_option]
    raise SystemExit(f"bench-llm: no server named {name!r} (llama-server, llama_cpp.server, wasinn)")


def wait_ready(base: str, process: subprocess.Popen[bytes], seconds: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"bench-llm: the server at {base} exited with {process.returncode}")
        try:
            if httpx.get(f"{base}/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"bench-llm: {base} did not answer within {seconds:.0f} s")


async def _one(client: Any, base: str, index: int) -> tuple[float | None, int]:
    body = {
        "model": "bench",
        "stream": True,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": f"Request {index}: write a long story."}],
    }
    start, first, tokens, chunks = time.perf_counter(), None, 0, 0
    async with client.stream("POST", f"{base}/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            return None, -1
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            for choice in event.get("choices", []):
                if choice.get("delta", {}).get("content"):
                    chunks += 1
                    if first is None:
                        first = time.perf_counter() - start
    # llama_cpp.server sends no usage in a stream: one content chunk is one token there
    return first, tokens or chunks


async def _level(base: str, concurrency: int, requests: int) -> dict[str, Any]:
    import httpx

    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_keepalive_connections=0)  # no stale keep-alive connections
    async with httpx.AsyncClient(timeout=None, limits=limits) as client:

        async def run(index: int) -> tuple[float | None, int]:
            async with gate:
                return await _one(client, base, index)

        start = time.perf_counter()
        results = await asyncio.gather(*(run(index) for index in range(requests)))
    wall = time.perf_counter() - start
    firsts = sorted(first for first, _ in results if first is not None)

    def quantile(q: float) -> float:
        return round(1000 * firsts[min(len(firsts) - 1, int(q * len(firsts)))], 1) if firsts else -1.0

    tokens = sum(count for _, count in results if count > 0)
    return {
        "concurrency": concurrency,
        "requests": requests,
        "failed": sum(count < 0 for _, count in results),
        "completion_tokens": tokens,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 1),
        "ttft_p50_ms": quantile(0.5),
        "ttft_p99_ms": quantile(0.99),
    }


def bench_server(name: str, command: list[str], port: int, requests: int) -> list[dict[str, Any]]:
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1"}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_ready(base, process)
        asyncio.run(_level(base, 1, 2))  # warm-up: the first request loads what it loads
        rows = []
        for concurrency in LEVELS:
            row = {"server": name, **asyncio.run(_level(base, concurrency, requests))}
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
        return rows
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| server | concurrency | tok/s | TTFT p50 ms | TTFT p99 ms |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['server']} | {row['concurrency']} | {row['tokens_per_s']} | "
            f"{row['ttft_p50_ms']} | {row['ttft_p99_ms']} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m wasinn.bench.llm", description=__doc__)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results-llm.json"))
    # wasinn serve's GGML threads are its default, half the CPUs; the anchors get as many
    parser.add_argument("--threads", type=int, default=max((os.cpu_count() or 2) // 2, 1))
    parser.add_argument("--requests", type=int, default=REQUESTS, help="per concurrency level")
    parser.add_argument("--servers", default="llama-server,llama_cpp.server,wasinn")
    args = parser.parse_args(argv)
    model = bench_model()
    rows: list[dict[str, Any]] = []
    for name in args.servers.split(","):
        port = free_port()
        rows += bench_server(name, server_command(name, model, port, args.threads), port, args.requests)
    record = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count()},
        "threads": args.threads,
        "model": {"shape": repr(SHAPE), "weights": "Q8_0", "slots": SLOTS, "ctx_per_slot": CTX},
        "max_tokens": MAX_TOKENS,
        "load_average": os.getloadavg(),
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
