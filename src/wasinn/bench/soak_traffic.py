"""What the soak (:mod:`wasinn.bench.soak`) sends, and what each answer must be.

Each kind of request is a check: it sends one request and returns the status and what was
wrong with the answer (None: right). The deterministic routes must answer what they answered
first (the warm-up's answer is the reference).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

ROAD = "/road-segmentation?name=road-segmentation&dims=1x512x896x3&argmax=4"
BIRDS = "/birds?name=birds&dims=1x224x224x3&type=u8"
LABELS, BIRD_CLASSES, EMBEDDING_WIDTH = 512 * 896, 965, 64
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "Once upon a time,"}], "temperature": 0}


@dataclass
class Inputs:
    road: bytes
    photo: bytes
    bird: bytes
    reference: dict[str, Any] = field(default_factory=dict)  # the warm-up's answers
    turn: int = 0  # which malformed body is next


@dataclass
class Client:
    http: httpx.AsyncClient
    base: str
    inputs: Inputs

    async def post(self, path: str, **options: Any) -> httpx.Response:
        return await self.http.post(self.base + path, **options)


Check = Callable[[Client], Awaitable[tuple[int, str | None]]]  # (status, what was wrong)


def _json_error(response: httpx.Response) -> str | None:
    text = response.text
    if response.status_code != 400 or "\n" in text.rstrip("\n") or "error" not in json.loads(text):
        return f"{response.status_code} {text[:200]}"
    return None


def _same(client: Client, key: str, value: Any) -> str | None:
    """The first answer is the reference; a later one that differs is a failure."""
    expected = client.inputs.reference.setdefault(key, value)
    return None if value == expected else f"{key} answered {str(value)[:80]}, first {str(expected)[:80]}"


async def road_tensor(client: Client) -> tuple[int, str | None]:
    response = await client.post(ROAD, content=client.inputs.road)
    if response.status_code != 200 or len(response.content) != LABELS or max(response.content) >= 4:
        return response.status_code, f"road: {len(response.content)} bytes, {response.text[:100]!r}"
    return 200, _same(client, "road", response.content)


async def road_photo(client: Client) -> tuple[int, str | None]:
    response = await client.post("/demo/segment", content=client.inputs.photo)
    if response.status_code != 200:
        return response.status_code, response.text[:200]
    return 200, _same(client, "photo", response.json()["shares"])


async def birds(client: Client) -> tuple[int, str | None]:
    response = await client.post(BIRDS, content=client.inputs.bird)
    if response.status_code != 200 or len(response.content) != BIRD_CLASSES:
        return response.status_code, f"birds: {response.text[:200]!r}"
    return 200, _same(client, "birds", response.content)


async def chat(client: Client) -> tuple[int, str | None]:
    response = await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 16})
    if response.status_code != 200:
        return response.status_code, response.text[:200]
    return 200, _same(client, "chat", response.json()["choices"][0]["message"]["content"])


async def chat_stream(client: Client) -> tuple[int, str | None]:
    body = {**CHAT, "max_tokens": 16, "stream": True}
    response = await client.post("/v1/chat/completions", json=body)
    if response.status_code != 200 or not response.text.endswith("data: [DONE]\n\n"):
        return response.status_code, f"stream: {response.text[-200:]!r}"
    events = [json.loads(block[6:]) for block in response.text.split("\n\n")[:-2]]
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    return 200, _same(client, "chat", text)  # the same tokens as the JSON answer's


async def embeddings(client: Client) -> tuple[int, str | None]:
    response = await client.post("/v1/embeddings", json={"input": ["a road", "a bird"]})
    if response.status_code != 200:
        return response.status_code, response.text[:200]
    vectors = [item["embedding"] for item in response.json()["data"]]
    if [len(vector) for vector in vectors] != [EMBEDDING_WIDTH] * 2:
        return 200, f"embeddings of widths {[len(v) for v in vectors]}"
    reference = client.inputs.reference.setdefault("embeddings", vectors)
    worst = max(
        abs(a - b)
        for got, want in zip(vectors, reference, strict=True)
        for a, b in zip(got, want, strict=True)
    )
    return 200, None if worst <= 1e-4 else f"embeddings moved by {worst}"


MALFORMED: list[tuple[str, dict[str, Any]]] = [
    (ROAD, {"content": b"\x01" * 999}),  # nn-pipe: not 1x512x896x3 f32
    (BIRDS, {"content": b"\x01" * 10}),
    ("/demo/segment", {"content": b"GIF89a..."}),  # not a picture
    ("/v1/chat/completions", {"content": b'{"messages": '}),  # not JSON
    ("/v1/embeddings", {"json": {"input": []}}),
]


async def malformed(client: Client) -> tuple[int, str | None]:
    """A bad body for each kind of route, in turn: each must be a one-line JSON 400."""
    client.inputs.turn += 1
    path, options = MALFORMED[client.inputs.turn % len(MALFORMED)]
    response = await client.post(path, **options)
    return response.status_code, _json_error(response)


async def _raw(client: Client, request: bytes, *, read: bool = False) -> None:
    url = httpx.URL(client.base)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(request)
        await writer.drain()
        if read:
            await reader.read(1)  # the answer has started; leave before the rest
    finally:
        writer.close()
        await writer.wait_closed()


def _head(path: str, length: int) -> bytes:
    return f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {length}\r\n\r\n".encode()


async def leave_mid_body(client: Client) -> tuple[int, str | None]:
    """Sends the headers and a fifth of a road tensor, then closes the connection."""
    road = client.inputs.road
    await _raw(client, _head(ROAD, len(road)) + road[: len(road) // 5])
    return 0, None


async def leave_after_body(client: Client) -> tuple[int, str | None]:
    """Sends a whole road tensor and closes before the answer: the guest runs for nobody."""
    await _raw(client, _head(ROAD, len(client.inputs.road)) + client.inputs.road)
    return 0, None


async def leave_mid_stream(client: Client) -> tuple[int, str | None]:
    """Reads the first events of a 64-token stream, then closes the connection."""
    body = {**CHAT, "max_tokens": 64, "stream": True}
    async with client.http.stream("POST", client.base + "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            return response.status_code, (await response.aread()).decode()[:200]
        async for _ in response.aiter_raw():
            break
    return 0, None


# name → (weight, the check, the status it must get; 0: the client leaves, nothing to get)
MIX: dict[str, tuple[int, Check, int]] = {
    "road-tensor": (4, road_tensor, 200),
    "road-photo": (1, road_photo, 200),
    "birds": (4, birds, 200),
    "chat-stream": (4, chat_stream, 200),
    "chat": (2, chat, 200),
    "embeddings": (3, embeddings, 200),
    "malformed": (3, malformed, 400),
    "leave-mid-body": (1, leave_mid_body, 0),
    "leave-after-body": (1, leave_after_body, 0),
    "leave-mid-stream": (1, leave_mid_stream, 0),
}
