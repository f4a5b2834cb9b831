"""OpenAI-compatible routes over a GGML guest: ``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/models``
(``/v1/completions``: :mod:`wasinn.serve.openai_completions`).

Chats are rendered with the model's own chat template (:mod:`wasinn.serve.chat_template`);
``tools`` and ``response_format`` are handled in :mod:`wasinn.serve.openai_chat`.

Each request runs the llm-serve guest (examples/c/llm-serve.c) on a preloaded GGML model:
the prompt is its stdin and the sampling settings its arguments. Chat guests load the model
with ``n-parallel`` = ``--parallel``: the graph's one llama context has that many sequence
slots, and the backend decodes the running chats' tokens in one batch per step (continuous
batching, docs/backends/ggml.md); the chat pool runs that many guests, the others wait, up
to the server's ``--max-waiting``. Embeddings run one at a time. With ``stream: true`` the
guest's stdout goes, chunk by chunk as the guest writes each token, into server-sent events.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from wasinn.core import ConfigError, GraphEncoding, Interruption
from wasinn.host import Runtime
from wasinn.serve.app import (
    CLIENT_LEFT,
    HTTPFailure,
    ServerState,
    guest_status,
    interrupt_when_gone,
    read_body,
    run_guest,
)
from wasinn.serve.chat_template import ChatTemplate, read_vocabulary
from wasinn.serve.openai_audio import AudioModel
from wasinn.serve.openai_chat import ChatPlan, finish_reason, plan_chat
from wasinn.serve.openai_protocol import (
    EMBEDDING_CONFIG,
    SSE_DONE,
    ChatRequest,
    Done,
    EmbeddingRequest,
    GuestLines,
    RequestError,
    chat_chunk,
    completion_id,
    embedding_item,
    embeddings_response,
    error_body,
    parse_guest_output,
    parse_json_body,
    sse,
    usage_chunk,
)
from wasinn.serve.pool import GuestPool

GUEST_NAME = "llm-serve.wasm"


@dataclass
class OpenAIModel:
    """One preloaded GGML model: a one-slot pool for chat and one for embeddings."""

    name: str
    chat: GuestPool
    embeddings: GuestPool
    template: ChatTemplate
    context_length: int  # the GGUF's trained context (n_ctx_train)
    created: int  # the GGUF file's modification time, as OpenAI's model "created"
    parallel: int = 1
    ctx_size: int = 0

    @property
    def chat_config(self) -> list[str]:
        """The guest's ``--config`` (load_by_name_with_config): the graph's sequence slots and
        each one's context (the KV cache holds parallel × ctx-size cells; 0: the model's)."""
        settings = {"n-parallel": self.parallel, **({"ctx-size": self.ctx_size} if self.ctx_size else {})}
        return ["--config", json.dumps(settings)]


def openai_models(
    runtime: Runtime,
    names: Sequence[str],
    guest: Path | None,
    state: ServerState,
    chat_template: Path | None = None,
    parallel: int = 1,
    ctx_size: int = 0,
) -> dict[str, OpenAIModel | AudioModel]:
    """Check that each name is a preloaded GGML model (with its guest pools) or a whisper one."""
    if not names:
        return {}
    if guest is None:
        from wasinn.tools.demo import find_guest

        guest = find_guest(GUEST_NAME)
    models: dict[str, OpenAIModel | AudioModel] = {}
    for name in names:
        if name not in runtime.registry.names:
            known = ", ".join(runtime.registry.names) or "none"
            raise ConfigError(f"--openai {name}: no --nn-preload model of that name (preloaded: {known})")
        shared = runtime.registry.get(name)
        if shared.encoding is GraphEncoding.WHISPER:
            models[name] = AudioModel(name, shared)
            continue
        if shared.encoding is not GraphEncoding.GGML:
            raise ConfigError(f"--openai {name}: the model is {shared.encoding.name}, not GGML or Whisper")
        path = ":".join(runtime.registry.preload(name).paths)
        vocabulary = read_vocabulary(path)
        template = ChatTemplate.for_model(vocabulary, chat_template)
        chat = GuestPool(runtime, guest, parallel, name=f"openai-{name}-chat")
        embed = GuestPool(runtime, guest, 1, name=f"openai-{name}-embed")
        state.pools.extend((chat, embed))
        created = int(os.stat(path).st_mtime)
        models[name] = OpenAIModel(
            name, chat, embed, template, vocabulary.context_length, created, parallel, ctx_size
        )
    return models


def openai_error(
    status: int, message: str, param: str | None = None, code: str | int | None = None
) -> Response:
    return JSONResponse(error_body(message, status, param, code), status_code=status)


def _failure_response(failure: HTTPFailure) -> Response:
    code = failure.details.get("exit_code")
    return openai_error(failure.status, str(failure), code=code if isinstance(code, int) else None)


@dataclass
class _OpenAIRoute:
    models: dict[str, OpenAIModel]
    state: ServerState
    methods: Sequence[str] = ("POST",)

    @property
    def metric_name(self) -> str:
        return self.path.lstrip("/")

    @property
    def path(self) -> str:
        raise NotImplementedError

    def model(self, requested: str | None) -> OpenAIModel:
        if requested is None:
            return next(iter(self.models.values()))
        found = self.models.get(requested)
        if found is None:
            served = ", ".join(self.models)
            raise _NotServed(f"the model {requested!r} is not served here (served: {served})")
        return found

    async def handle(self, request: Request) -> Response:
        try:
            body = parse_json_body(await read_body(request, self.state))
            return await self.answer(body, request)
        except RequestError as err:
            return openai_error(400, str(err), param=err.param)
        except _NotServed as err:
            return openai_error(404, str(err), param="model", code="model_not_found")
        except HTTPFailure as failure:
            return _failure_response(failure)

    async def answer(self, body: dict[str, Any], request: Request) -> Response:
        raise NotImplementedError


class _NotServed(Exception):
    pass


class ChatCompletionsRoute(_OpenAIRoute):
    @property
    def path(self) -> str:
        return "/v1/chat/completions"

    async def answer(self, body: dict[str, Any], request: Request) -> Response:
        chat = ChatRequest.parse(body)
        model = self.model(chat.model)
        plan = plan_chat(chat, body, model.template, model.name)
        args, prompt = [*model.chat_config, *plan.args], plan.prompt.encode()
        if chat.stream:
            return await stream_guest(self.state, request, model, prompt, args, _ChatEvents(plan, chat))
        result = await run_guest(self.state, model.chat, prompt, args, request=request)
        guest_status(result)
        text, _, done = parse_guest_output(bytes(result.stdout))
        return JSONResponse(plan.message(completion_id(), model.name, text.decode(errors="replace"), done))


class EventMaker(Protocol):
    """Turns a streamed guest's text pieces into server-sent events (chat or completion)."""

    def events(self, guest: GuestText, model: str) -> AsyncIterator[bytes]: ...


async def stream_guest(
    state: ServerState,
    request: Request,
    model: OpenAIModel,
    prompt: bytes,
    args: list[str],
    maker: EventMaker,
) -> Response:
    """Run the guest with its stdout relayed, chunk by chunk, into server-sent events."""
    relay = _StdoutRelay(asyncio.get_running_loop())
    interruption = Interruption()
    guest = run_guest(state, model.chat, prompt, args, relay.write, interruption=interruption)
    run = asyncio.ensure_future(guest)
    run.add_done_callback(relay.finished)
    # Wait for the first output, so that a refusal or failure before it is a real status;
    # a client that leaves meanwhile stops the guest. Once streaming, Starlette's
    # StreamingResponse listens for the disconnect and closes the events below.
    async with interrupt_when_gone(request, interruption):
        first = await relay.next()
    if first is None:
        guest_status(await run)  # raises the guest's failure; a success falls through
    return _GuestStream(interruption, _guest_events(relay, run, first, model.name, maker))


class _GuestStream(StreamingResponse):
    """Server-sent events from a running guest, which stops when the response does.

    Starlette's StreamingResponse listens for the client's disconnect and then cancels the
    stream; whatever way it ends, the guest is interrupted here (at its next token), which
    frees the model's one chat slot for the next request. After the guest's end, a no-op.
    """

    def __init__(self, interruption: Interruption, events: AsyncIterator[bytes]) -> None:
        super().__init__(events, media_type="text/event-stream", headers={"cache-control": "no-cache"})
        self.interruption = interruption

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.interruption.interrupt(CLIENT_LEFT)


class _StdoutRelay:
    """Takes the guest's stdout in its worker thread and hands it to the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.gone = threading.Event()

    def write(self, chunk: bytes) -> None:
        if self.gone.is_set():
            return  # the client left: its guest is being interrupted, its output dropped
        try:
            self.loop.call_soon_threadsafe(self.chunks.put_nowait, chunk)
        except RuntimeError:  # the loop is closed: the server is going down
            self.gone.set()

    def finished(self, run: asyncio.Future[Any]) -> None:
        self.chunks.put_nowait(None)
        if not run.cancelled():
            run.exception()  # retrieved here, so an abandoned stream logs no stray traceback

    async def next(self) -> bytes | None:
        return await self.chunks.get()


class StreamEnd(Exception):
    """The guest failed after the stream began: the error event is sent, without [DONE]."""


@dataclass
class GuestText:
    """The streamed guest's text pieces, then its done line (or the failure) at the end."""

    relay: _StdoutRelay
    run: asyncio.Future[Any]
    first: bytes | None
    done: Done | None = None

    async def pieces(self) -> AsyncIterator[str]:
        lines = GuestLines()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        chunk = self.first
        while chunk is not None:
            for item in lines.feed(chunk):
                if isinstance(item, bytes) and (text := decoder.decode(item)):
                    yield text
            chunk = await self.relay.next()
        guest_status(await self.run)  # raises HTTPFailure
        if tail := decoder.decode(b"", final=True):
            yield tail
        self.done = lines.done or Done("stop", 0, 0)


async def _guest_events(
    relay: _StdoutRelay, run: asyncio.Future[Any], first: bytes | None, model: str, maker: EventMaker
) -> AsyncIterator[bytes]:
    try:
        async for event in maker.events(GuestText(relay, run, first), model):
            yield event
    except HTTPFailure as failure:
        yield sse(error_body(str(failure), failure.status))
    finally:
        relay.gone.set()


class _ChatEvents:
    def __init__(self, plan: ChatPlan, chat: ChatRequest) -> None:
        self.plan, self.chat = plan, chat

    async def events(self, guest: GuestText, model: str) -> AsyncIterator[bytes]:
        ident, created = completion_id(), int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return sse(chat_chunk(ident, model, delta, finish, created))

        tools = self.plan.stream()
        yield chunk({"role": "assistant", "content": ""})
        async for text in guest.pieces():
            for delta in tools.feed(text) if tools is not None else [{"content": text}]:
                yield chunk(delta)
        done = guest.done or Done("stop", 0, 0)
        called = False
        if tools is not None:
            last, called = tools.finish()
            for delta in last:
                yield chunk(delta)
        yield chunk({}, finish_reason(done, called))
        if self.chat.include_usage:
            yield sse(usage_chunk(ident, model, done, created))
        yield SSE_DONE


class EmbeddingsRoute(_OpenAIRoute):
    @property
    def path(self) -> str:
        return "/v1/embeddings"

    async def answer(self, body: dict[str, Any], request: Request) -> Response:
        embed = EmbeddingRequest.parse(body)
        model = self.model(embed.model)
        args = ["--embedding", "--config", EMBEDDING_CONFIG, model.name]
        items, prompt_tokens = [], 0
        for index, text in enumerate(embed.inputs):
            result = await run_guest(self.state, model.embeddings, text.encode(), args, request=request)
            guest_status(result)
            _, vectors, done = parse_guest_output(bytes(result.stdout))
            items.append(embedding_item(index, vectors[0], embed.base64))
            prompt_tokens += done.prompt_tokens
        return JSONResponse(embeddings_response(model.name, items, prompt_tokens))
