"""``/v1/completions`` (text in, text out, no chat template) and ``/v1/models`` (llm-serving spec §6.3, §6.5).

A completion's prompt is the guest's stdin as it is; the backend adds BOS as for any prompt.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from wasinn.serve.app import guest_status, run_guest
from wasinn.serve.openai import (
    GuestText,
    OpenAIModel,
    _OpenAIRoute,
    openai_error,
    stream_guest,
)
from wasinn.serve.openai_audio import AudioModel
from wasinn.serve.openai_protocol import (
    SSE_DONE,
    ChatRequest,
    Done,
    RequestError,
    parse_guest_output,
    sse,
    usage,
)

OPENAI_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions (chat has none)


def _completion_request(body: dict[str, Any]) -> tuple[ChatRequest, str]:
    """The shared fields (as a chat's) and the prompt; what wasinn does not do is a 400."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise RequestError("prompt must be a string (arrays of prompts or tokens are not served)", "prompt")
    if body.get("echo") not in (None, False):
        raise RequestError("echo is not supported", "echo")
    if body.get("suffix") is not None:
        raise RequestError("suffix is not supported", "suffix")
    if body.get("best_of") not in (None, 1):
        raise RequestError("best_of must be 1", "best_of")
    if body.get("logprobs") not in (None, 0):
        raise RequestError("logprobs is not supported", "logprobs")
    fields = {key: value for key, value in body.items() if key != "prompt"}
    fields.setdefault("max_tokens", OPENAI_DEFAULT_MAX_TOKENS)
    return ChatRequest.parse({**fields, "messages": [{"role": "user", "content": ""}]}), prompt


def completion(ident: str, created: int, model: str, text: str, finish: str | None) -> dict[str, Any]:
    choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
    return {"id": ident, "object": "text_completion", "created": created, "model": model, "choices": [choice]}


class CompletionsRoute(_OpenAIRoute):
    @property
    def path(self) -> str:
        return "/v1/completions"

    async def answer(self, body: dict[str, Any], request: Request) -> Response:
        request_fields, prompt = _completion_request(body)
        model = self.model(request_fields.model)
        args = [*model.chat_config, *request_fields.guest_args(model.name)]  # the chats' batched graph
        if request_fields.stream:
            events = _CompletionEvents(request_fields.include_usage)
            return await stream_guest(self.state, request, model, prompt.encode(), args, events)
        result = await run_guest(self.state, model.chat, prompt.encode(), args, request=request)
        guest_status(result)
        text, _, done = parse_guest_output(bytes(result.stdout))
        answer = completion(
            _ident(), int(time.time()), model.name, text.decode(errors="replace"), done.finish_reason
        )
        answer["usage"] = usage(done.prompt_tokens, done.completion_tokens)
        return JSONResponse(answer)


def _ident() -> str:
    return f"cmpl-{uuid.uuid4().hex}"


class _CompletionEvents:
    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage

    async def events(self, guest: GuestText, model: str) -> AsyncIterator[bytes]:
        ident, created = _ident(), int(time.time())
        async for text in guest.pieces():
            yield sse(completion(ident, created, model, text, None))
        done = guest.done or Done("stop", 0, 0)
        yield sse(completion(ident, created, model, "", done.finish_reason))
        if self.include_usage:
            last = completion(ident, created, model, "", None)
            last["choices"], last["usage"] = [], usage(done.prompt_tokens, done.completion_tokens)
            yield sse(last)
        yield SSE_DONE


def model_card(model: OpenAIModel | AudioModel) -> dict[str, Any]:
    """OpenAI's model object, plus the context length the GGUF was trained for (as llama-server's meta)."""
    card: dict[str, Any] = {"id": model.name, "object": "model", "owned_by": "wasinn"}
    if isinstance(model, AudioModel):
        return {**card, "created": 0}
    context = {"context_length": model.context_length, "meta": {"n_ctx_train": model.context_length}}
    return {**card, "created": model.created, **context}


@dataclass
class ModelsRoute:
    models: dict[str, OpenAIModel | AudioModel]
    methods: Sequence[str] = ("GET",)
    path: str = "/v1/models"
    metric_name: str = "v1/models"

    async def handle(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [model_card(model) for model in self.models.values()]})


@dataclass
class ModelRoute:
    models: dict[str, OpenAIModel | AudioModel]
    methods: Sequence[str] = ("GET",)
    path: str = "/v1/models/{model:path}"
    metric_name: str = "v1/models/{model}"

    async def handle(self, request: Request) -> Response:
        name = request.path_params["model"]
        found = self.models.get(name)
        if found is None:
            return openai_error(404, f"the model {name!r} is not served here", "model", "model_not_found")
        return JSONResponse(model_card(found))
