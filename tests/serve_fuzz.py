"""What ``tests/test_serve_fuzz.py`` sends to ``wasinn serve``, and what each answer must be.

Strategies make HTTP calls (method, path, raw query string, headers, body) for the serve-echo
guest's route and for the OpenAI routes over the tiny GGUF. Each call carries what it must
get: ``ok`` calls (a valid request, chosen so that the guest succeeds) must be 200 with the
right body; the others may be 200 or a one-line JSON 4xx, never a 5xx, never a hang.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from hypothesis import strategies as st

# serve-echo reads these words as orders (exit, trap, spin, ...): the fuzzer never sends them,
# so every request it sends with a clean query must be an echo (200).
ECHO_CONTROLS = frozenset({"--exit", "--trap", "--spin", "--alloc", "--stderr"})
# The HTTP client owns these (framing, the connection); the rest are free for the fuzzer.
CLIENT_HEADERS = frozenset(
    {
        "content-length",
        "transfer-encoding",
        "host",
        "connection",
        "upgrade",
        "te",
        "trailer",
        "keep-alive",
        "expect",
    }
)
KNOWN_HEADERS = (
    "content-type",
    "accept",
    "accept-encoding",
    "authorization",
    "cookie",
    "user-agent",
    "origin",
    "range",
    "content-encoding",
    "x-forwarded-for",
    "x-request-id",
)
OTHER_METHODS = ("PUT", "DELETE", "PATCH", "OPTIONS")
MODEL = "tiny"
EMBEDDING_WIDTH = 64  # the tiny llama's n_embd
MAX_INPUTS = 2048  # embedding inputs a request may hold (OpenAI's bound)


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    query: str  # the raw query string (before the client's own escaping)
    headers: tuple[tuple[str, str], ...]
    body: bytes
    ok: bool = False  # a valid request: it must be answered 200

    def __repr__(self) -> str:  # short enough to read in a failure report
        body = self.body if len(self.body) <= 200 else self.body[:200] + b"..."
        query = self.query[:200]
        return f"Call({self.method} {self.path}?{query} headers={self.headers} body={body!r} ok={self.ok})"


# ----------------------------------------------------------------------- pieces


header_names = st.sampled_from(KNOWN_HEADERS) | st.from_regex(r"[a-z][a-z0-9-]{0,19}", fullmatch=True)
# h11 (the client) refuses control characters and leading or trailing blanks in a value.
header_values = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60
).map(str.strip)
headers = st.lists(
    st.tuples(header_names.filter(lambda name: name not in CLIENT_HEADERS), header_values), max_size=4
).map(tuple)

# Any text, NUL and lone surrogates included (st.text leaves surrogates out unless asked).
# (st.text merges its alphabet into one set of code points: surrogates would be 1 in 500.)
any_char = st.characters() | st.characters(categories=["Cs"]) | st.sampled_from('\x00\n\r\t"\\')
any_text = st.text(max_size=24) | st.lists(any_char, max_size=24).map("".join)
pairs = st.lists(st.tuples(any_text, any_text), max_size=5)
# Raw query strings with stray escapes, separators and non-ASCII, as a client may send them.
raw_queries = st.text(st.sampled_from("ab=&%+;?/-_.~09AFz é"), max_size=40)
queries = pairs.map(lambda p: urlencode(p, quote_via=quote, errors="surrogatepass")) | raw_queries

bodies = st.binary(max_size=2048) | st.builds(
    lambda chunk, count: chunk * count, st.binary(min_size=1, max_size=64), st.integers(1, 4096)
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)


def sent_query(client_query: bytes) -> list[tuple[str, str]]:
    """The query as the server's router parses it (Starlette's QueryParams)."""
    return parse_qsl(client_query.decode("latin-1"), keep_blank_values=True)


def echo_args(query: list[tuple[str, str]]) -> list[str]:
    """The serve route's mapping: ``?arg=X`` → ``X``; ``?k=v`` → ``--k v``; ``?k`` → ``--k``."""
    args: list[str] = []
    for key, value in query:
        args += [value] if key == "arg" else [f"--{key}", *([value] if value else [])]
    return args


# ----------------------------------------------------------------------- the echo route


@st.composite
def echo_calls(draw: st.DrawFn) -> Call:
    # Mostly the route itself (an echo to check byte for byte); now and then another method or path.
    method = draw(st.sampled_from(("GET", "POST") * 8 + OTHER_METHODS))
    path = draw(st.sampled_from(("/echo",) * 8 + ("/echo/", "")))
    path = path or draw(st.from_regex(r"/[a-z0-9._~-]{0,12}", fullmatch=True))
    return Call(method, path, draw(queries), draw(headers), draw(bodies))


def echo_expected(call: Call, client_query: bytes) -> tuple[int, bytes | None]:
    """(status, body) the echo route must answer; body None: a one-line JSON error."""
    if call.path == "/echo/":
        return 307, None  # Starlette's redirect to /echo
    if call.path not in ("/echo", "/healthz", "/metrics") and not call.path.startswith("/v1/"):
        return 404, None
    if call.path != "/echo":
        return 0, None  # not the echo route: the test checks those separately
    if call.method not in ("GET", "POST"):
        return 405, None
    args = echo_args(sent_query(client_query))
    if any("\x00" in arg for arg in args):
        return 400, None  # a C argument cannot hold NUL
    line = "args:" + "".join(f" {arg}" for arg in args) + "\n"
    return 200, line.encode() + call.body


def echo_control_free(client_query: bytes) -> bool:
    return not ECHO_CONTROLS.intersection(echo_args(sent_query(client_query)))


# ----------------------------------------------------------------------- OpenAI bodies


clean_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=20)
short_ints = st.integers(0, 8)


def _message(role: str, content: Any) -> dict[str, Any]:
    return {"role": role, "content": content}


# Texts with NUL are valid prompts (stdin bytes); with a lone surrogate they are not UTF-8.
prompt_text = st.one_of(*[st.text(max_size=20)] * 5, st.lists(any_char, max_size=20).map("".join))
messages = st.lists(
    st.builds(
        _message,
        st.sampled_from(("system", "user", "assistant")) | prompt_text.filter(bool),
        prompt_text
        | st.none()
        | st.lists(st.builds(lambda t: {"type": "text", "text": t}, prompt_text), max_size=2),
    ),
    min_size=1,
    max_size=3,
)

CHAT_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "model": st.sampled_from((MODEL, "", None)),
    "max_tokens": short_ints,
    "max_completion_tokens": short_ints,
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1),
    "presence_penalty": st.floats(-2, 2),
    "frequency_penalty": st.floats(-2, 2),
    "seed": st.integers(-(2**63), 2**63 - 1),
    "stop": clean_text | st.lists(clean_text, max_size=4),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans()}),
    "n": st.just(1),
    "user": clean_text,
}
EMBEDDING_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "model": st.sampled_from((MODEL, "", None)),
    "encoding_format": st.sampled_from(("float", "base64")),
    "user": clean_text,
}
# Values a field may get that are out of its range, of the wrong type or hostile.
HOSTILE = (
    json_values
    | st.sampled_from(("\ud800", "a\x00b", "--stop", "-1"))
    | st.integers(2**63, 2**70)
    | st.integers(-(2**70), -(2**63) - 1)
    | st.sampled_from((math.nan, math.inf, -math.inf))
    # the edges of the integer types a value may reach on its way to the guest
    | st.sampled_from((2**63, 2**64, -(2**63) - 1, 2**31, 2**32, -1, 0, 3, 1e308, -0.0, True, "1"))
)


@st.composite
def openai_documents(
    draw: st.DrawFn, fields: dict[str, st.SearchStrategy[Any]], required: dict[str, st.SearchStrategy[Any]]
) -> tuple[dict[str, Any], bool]:
    """A request object and whether it is valid (only valid values were drawn)."""
    names = draw(st.lists(st.sampled_from(sorted(fields)), unique=True, max_size=len(fields)))
    document = {name: draw(fields[name]) for name in names}
    document.update({name: draw(strategy) for name, strategy in required.items()})
    valid = not has_surrogates(document)
    mutations = draw(st.sampled_from((0, 0, 0, 1, 1, 2)))  # half of the documents keep every field valid
    mutable = [*sorted(fields), *required, "extra"]
    for name in draw(st.lists(st.sampled_from(mutable), unique=True, min_size=mutations, max_size=mutations)):
        if draw(st.booleans()):
            document.pop(name, None)
            valid = valid and name not in required
        else:
            document[name] = draw(HOSTILE)
            valid = False
    return document, valid


# JSON at the edges of Python's parser: nesting past the recursion limit, integers past the
# 4,300 digits int() accepts, numbers that overflow to infinity, in the document or in a field.
def _nested(opener: bytes, depth: int, field: str) -> bytes:
    closer = {b"[": b"]", b'{"a":': b"}"}[opener]
    value = opener * depth + b"1" + closer * depth
    return b'{"%s": %s}' % (field.encode(), value) if field else value


extreme_json = st.builds(
    _nested,
    st.sampled_from((b"[", b'{"a":')),
    st.integers(0, 100_000),
    st.sampled_from(("", "messages", "temperature", "max_tokens", "input", "stop")),
) | st.builds(
    lambda digits, field: b'{"%s": %s}' % (field.encode(), digits.encode()),
    st.sampled_from(("1" * 4301, "9" * 10_000, "1e400", "-1e400", "1" * 30)),
    st.sampled_from(("max_tokens", "seed", "temperature", "n", "model")),
)


def has_surrogates(value: Any) -> bool:
    """Whether a JSON value holds a lone surrogate (valid JSON, but not text in UTF-8)."""
    if isinstance(value, str):
        return any("\ud800" <= char <= "\udfff" for char in value)
    if isinstance(value, list):
        return any(map(has_surrogates, value))
    if isinstance(value, dict):
        return any(has_surrogates(key) or has_surrogates(item) for key, item in value.items())
    return False


def _encode(document: Any) -> bytes:
    # ensure_ascii: lone surrogates travel as \\udXXX escapes, as a client's JSON library writes them.
    return json.dumps(document, ensure_ascii=True, allow_nan=True).encode()


@st.composite
def openai_calls(
    draw: st.DrawFn, path: str, document: st.SearchStrategy[tuple[dict[str, Any], bool]]
) -> Call:
    kind = draw(st.sampled_from(("document",) * 7 + ("json", "bytes", "extreme")))
    ok = False
    if kind == "document":
        value, ok = draw(document)
        body = _encode(value)
    elif kind == "json":
        body = _encode(draw(json_values))
    elif kind == "extreme":
        body = draw(extreme_json)
    else:
        body = draw(bodies)
    method = "POST" if ok else draw(st.sampled_from(("POST",) * 8 + ("GET", *OTHER_METHODS)))
    return Call(method, path, draw(queries), draw(headers), body, ok and method == "POST")


chat_documents = openai_documents(CHAT_FIELDS, {"messages": messages})
embedding_inputs = prompt_text.filter(bool) | st.lists(prompt_text.filter(bool), min_size=1, max_size=3)
embedding_documents = openai_documents(EMBEDDING_FIELDS, {"input": embedding_inputs})
chat_calls = openai_calls("/v1/chat/completions", chat_documents)
embedding_calls = openai_calls("/v1/embeddings", embedding_documents)
model_calls = st.builds(
    Call, st.sampled_from(("GET", "GET", "POST", "DELETE")), st.just("/v1/models"), queries, headers, bodies
)


# ----------------------------------------------------------------------- answers


def one_line_json_error(status: int, text: str, *, openai: bool) -> None:
    assert 400 <= status < 500, (status, text[:500])
    assert "\n" not in text.rstrip("\n"), text[:500]
    error = json.loads(text)["error"]
    if openai:
        assert isinstance(error["message"], str) and error["type"] == "invalid_request_error", text[:500]
    else:
        assert isinstance(error, str), text[:500]


def check_chat(document: dict[str, Any], status: int, content_type: str, text: str) -> None:
    """A 200 chat answer: a chat.completion, or a stream of chunks ending with [DONE]."""
    assert status == 200, text[:500]
    stops = document.get("stop")
    stops = [stops] if isinstance(stops, str) else stops if isinstance(stops, list) else []
    # A C argument ends at NUL: the guest would stop at the text before it, silently.
    assert not any("\x00" in stop for stop in stops), f"stop {stops!r} was accepted"
    limit = document.get("max_completion_tokens", document.get("max_tokens"))
    if document.get("stream") is True:
        assert content_type.startswith("text/event-stream"), content_type
        assert text.endswith("data: [DONE]\n\n"), text[-500:]
        events = [json.loads(block.removeprefix("data: ")) for block in text.split("\n\n")[:-2]]
        assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        finishes = [e["choices"][0]["finish_reason"] for e in events if e["choices"]]
        assert finishes[-1] in ("stop", "length") and not any(finishes[:-1]), finishes
        return
    answer = json.loads(text)
    choice = answer["choices"][0]
    assert answer["object"] == "chat.completion" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    if isinstance(limit, int):
        assert answer["usage"]["completion_tokens"] <= limit


def check_embeddings(document: dict[str, Any], status: int, text: str) -> None:
    assert status == 200, text[:500]
    answer = json.loads(text)
    texts = document["input"] if isinstance(document["input"], list) else [document["input"]]
    # Each input is a guest run, one after the other: OpenAI's bound keeps a request finite.
    assert len(texts) <= MAX_INPUTS, f"{len(texts)} inputs were accepted"
    assert [item["index"] for item in answer["data"]] == list(range(len(texts)))
    for item in answer["data"]:
        vector = item["embedding"]
        width = len(vector) if isinstance(vector, list) else len(base64.b64decode(vector)) // 4
        assert width == EMBEDDING_WIDTH, item
