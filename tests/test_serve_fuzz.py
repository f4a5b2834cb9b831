"""Fuzzing a real ``wasinn serve`` over loopback HTTP with hypothesis: bodies, query strings, headers.

One server subprocess serves the serve-echo guest at ``/echo`` and the tiny GGUF at the
OpenAI routes (``--time-limit 20000``, so no guest can run on). A real server, not
Starlette's in-process client: a hang, a dropped connection or a protocol error shows as
it would to a client. Each call (tests/serve_fuzz.py) must get

* a valid request (an echo with a clean query; a well-formed OpenAI request with small
  ``max_tokens``): 200 and the right body (the echo exactly; a chat.completion, an SSE
  stream ending in ``[DONE]``, one embedding of the model's width per input);
* anything else: 200 or a one-line JSON 4xx (OpenAI's error shape under ``/v1/``), never a
  5xx and never a hang (30 s per request); the server answers ``/healthz`` after it all and
  counted no 5xx.

``WASINN_FUZZ_EXAMPLES`` is the total over the five tests (default 1,200 in ``make test``:
25-50 s on 2 busy cores); ``make fuzz`` runs 10,000 with a random seed
(``WASINN_FUZZ_RANDOM=1``), ``make test`` the same fixed examples every time.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import guest_wasm, require_module

require_module("starlette")
require_module("httpx")

import httpx  # noqa: E402
from hypothesis import HealthCheck, assume, example, given, settings  # noqa: E402

from serve_fuzz import (  # noqa: E402
    MODEL,
    Call,
    chat_calls,
    check_chat,
    check_embeddings,
    echo_calls,
    echo_control_free,
    echo_expected,
    embedding_calls,
    model_calls,
    one_line_json_error,
)
from serve_helpers import start_server, stop_server  # noqa: E402

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("WASINN_FUZZ_EXAMPLES", "1200"))
SHARES = {"echo": 0.4, "chat": 0.3, "embeddings": 0.2, "models": 0.05, "other": 0.05}
REQUEST_SECONDS = 30.0
CHAT, EMBEDDINGS = "/v1/chat/completions", "/v1/embeddings"


def fuzz_settings(share: str) -> Callable[[Any], Any]:
    return settings(
        max_examples=max(10, round(EXAMPLES * SHARES[share])),
        deadline=None,  # a busy 2-core machine; hangs are caught by the request timeout
        derandomize=not os.environ.get("WASINN_FUZZ_RANDOM"),
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


@dataclass
class Server:
    process: Any
    client: httpx.Client
    log: Path
    statuses: Counter[str] = field(default_factory=Counter)  # 'METHOD PATH STATUS'
    seconds: float = 0.0
    slowest: float = 0.0

    def request(self, call: Call) -> httpx.Request:
        return self.client.build_request(
            call.method,
            f"{call.path}?{call.query}",
            headers=[(name, value.encode("latin-1")) for name, value in call.headers],
            content=call.body,
        )

    def send(self, request: httpx.Request) -> httpx.Response:
        started = time.perf_counter()
        response = self.client.send(request)  # timeout: REQUEST_SECONDS between reads
        took = time.perf_counter() - started
        assert took < REQUEST_SECONDS, f"{took:.1f} s for {request.method} {request.url}"
        self.statuses[f"{request.method} {request.url.path} {response.status_code}"] += 1
        self.seconds += took
        self.slowest = max(self.slowest, took)
        return response


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("fuzz") / "server.log"
    process, base = start_server(
        f"echo={guest_wasm('serve-echo')}",
        "--workers",
        "2",
        "--nn-preload",
        f"{MODEL}:GGML:AUTO:{tiny_model}",
        "--openai",
        MODEL,
        "--openai-guest",
        str(guest_wasm("llm-serve")),
        "--time-limit",
        "20000",
        log=log,
    )
    client = httpx.Client(base_url=base, timeout=REQUEST_SECONDS)
    try:
        yield Server(process, client, log)
    finally:
        client.close()
        stop_server(process)


def check_other_route(call: Call, response: httpx.Response) -> None:
    """Paths the fuzzer reached that are not the echo route: the server's own, or none."""
    if response.status_code == 200:
        assert call.method == "GET" and call.path in ("/healthz", "/metrics"), call
    elif response.status_code == 307:
        assert response.headers["location"].endswith(call.path.rstrip("/") + ("?" if call.query else ""))
    else:
        one_line_json_error(response.status_code, response.text, openai=call.path.startswith("/v1/"))


# ------------------------------------------------------------------------ the echo route


@fuzz_settings("echo")
@given(call=echo_calls())
@example(call=Call("PUT", "/echo", "", (), b""))  # Starlette's 405 was plain text
@example(call=Call("GET", "/nothing", "", (), b""))  # and its 404
@example(call=Call("GET", "/echo", "=%00", (), b""))  # the guest saw "--" (argv ends at NUL): 200
def test_the_echo_route_echoes_or_refuses_in_one_line(server: Server, call: Call) -> None:
    request = server.request(call)
    assume(echo_control_free(request.url.query))
    status, body = echo_expected(call, request.url.query)
    response = server.send(request)
    if status == 0:
        check_other_route(call, response)
        return
    assert response.status_code == status, (call, response.status_code, response.text[:300])
    if body is not None:
        assert response.content == body
        assert response.headers["content-type"] == "application/octet-stream"
    elif status != 307:
        one_line_json_error(status, response.text, openai=False)


# ------------------------------------------------------------------------ OpenAI routes


def check_openai(
    server: Server, call: Call, answer: Callable[[dict[str, Any], httpx.Response], None]
) -> None:
    response = server.send(server.request(call))
    if call.ok:
        assert response.status_code == 200, (call, response.text[:500])
    if response.status_code == 200:
        assert call.method == "POST", call
        answer(json.loads(call.body), response)
    else:
        one_line_json_error(response.status_code, response.text, openai=True)


@fuzz_settings("chat")
@given(call=chat_calls)
# json.loads raises ValueError (not JSONDecodeError) past int()'s 4,300 digits, and
# RecursionError past the recursion limit: both were 500s
@example(call=Call("POST", CHAT, "", (), b'{"max_tokens": %s}' % (b"1" * 4301)))
@example(call=Call("POST", CHAT, "", (), b"[" * 100_000))
# a lone surrogate escape is valid JSON but no UTF-8: encoding the prompt raised, a 500
@example(call=Call("POST", CHAT, "", (), b'{"messages": [{"role": "system", "content": "\\ud800"}]}'))
# a seed past int64 went to the guest, whose set_input refused it: a 500
@example(call=Call("POST", CHAT, "", (), b'{"messages": [{"role": "user"}], "seed": 9223372036854775808}'))
# a stop string holding NUL was accepted, and the guest's C argument ended at it: stop "a"
@example(call=Call("POST", CHAT, "", (), b'{"messages": [{"role": "user"}], "stop": "a\\u0000b"}'))
def test_chat_completions_answer_or_refuse_in_one_line(server: Server, call: Call) -> None:
    check_openai(
        server,
        call,
        lambda document, response: check_chat(
            document, response.status_code, response.headers["content-type"], response.text
        ),
    )


@fuzz_settings("embeddings")
@given(call=embedding_calls)
@example(call=Call("POST", EMBEDDINGS, "", (), b'{"input": "\\ud800"}'))  # a 500, as for chat
# 2,049 inputs ran 2,049 guests in one request (a body of 64 MiB: millions, hours)
@example(call=Call("POST", EMBEDDINGS, "", (), json.dumps({"input": ["a"] * 2049}).encode()))
def test_embeddings_answer_or_refuse_in_one_line(server: Server, call: Call) -> None:
    check_openai(
        server,
        call,
        lambda document, response: check_embeddings(document, response.status_code, response.text),
    )


@fuzz_settings("models")
@given(call=model_calls)
@example(call=Call("POST", "/v1/models", "", (), b""))  # Starlette's 405 was plain text
def test_the_models_list_answers_or_refuses_in_one_line(server: Server, call: Call) -> None:
    response = server.send(server.request(call))
    if call.method == "GET":
        assert response.status_code == 200
        assert [model["id"] for model in response.json()["data"]] == [MODEL]
    else:
        assert response.status_code == 405
        one_line_json_error(405, response.text, openai=True)


@fuzz_settings("other")
@given(call=echo_calls().map(lambda c: Call(c.method, "/v1" + c.path, c.query, c.headers, c.body)))
@example(call=Call("GET", "/v1/completions", "", (), b""))  # Starlette's 404 was plain text
def test_unknown_openai_paths_are_one_line_json(server: Server, call: Call) -> None:
    response = server.send(server.request(call))
    served = ("/v1/models", "/v1/chat/completions", "/v1/completions", "/v1/embeddings")
    if call.path in served or call.path.startswith("/v1/models/"):
        assert response.status_code < 500
        return
    check_other_route(call, response)


# ------------------------------------------------------------------------ after it all


def test_the_server_is_alive_and_counted_no_5xx(server: Server) -> None:
    health = server.client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    metrics = server.client.get("/metrics").text
    totals = [line for line in metrics.splitlines() if line.startswith("wasinn_requests_total{")]
    assert totals and not [line for line in totals if 'status="5' in line], totals
    assert "wasinn_requests_in_flight 0\n" in metrics
    log = server.log.read_text()
    assert "Traceback" not in log and "internal error" not in log, log[-3000:]
    total = sum(server.statuses.values())
    routes: Counter[str] = Counter()
    for key, count in server.statuses.items():
        method, path, status = key.split(" ")
        known = path in ("/echo", "/v1/models", CHAT, EMBEDDINGS) and method in ("GET", "POST")
        routes[f"{path if known else 'other'} {status}"] += count
    print(
        f"\nfuzz: {total} requests in {server.seconds:.1f} s of requests "
        f"(slowest {server.slowest:.2f} s): {dict(sorted(routes.items()))}"
    )
    assert server.process.poll() is None
