"""The OpenAI routes of ``wasinn serve --openai``: text routes for GGML models, audio for whisper ones."""

from __future__ import annotations

from wasinn.serve.app import RouteHandler, ServerState
from wasinn.serve.openai import ChatCompletionsRoute, EmbeddingsRoute, OpenAIModel, openai_models
from wasinn.serve.openai_audio import AudioModel, AudioRoute
from wasinn.serve.openai_completions import CompletionsRoute, ModelRoute, ModelsRoute

__all__ = ["openai_handlers", "openai_models"]


def openai_handlers(models: dict[str, OpenAIModel | AudioModel], state: ServerState) -> list[RouteHandler]:
    """The routes of the served models: text routes for GGML models, audio for whisper ones."""
    if not models:
        return []
    text = {name: model for name, model in models.items() if isinstance(model, OpenAIModel)}
    audio = {name: model for name, model in models.items() if isinstance(model, AudioModel)}
    handlers: list[RouteHandler] = [ModelsRoute(models), ModelRoute(models)]
    if text:
        handlers += [
            ChatCompletionsRoute(text, state),
            CompletionsRoute(text, state),
            EmbeddingsRoute(text, state),
        ]
    if audio:
        handlers += [AudioRoute(audio, state, translate=False), AudioRoute(audio, state, translate=True)]
    return handlers
