"""The optional LLM extractor, against a fake OpenAI-compatible server on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from underlay import errors
from underlay.memory.extract import Fact
from underlay.memory.llm_extract import SYSTEM_PROMPT, LLMExtractor, LLMSettings

MODEL = "fake-extractor-1"
KEY = "sk-fake-0123456789-never-shown"
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    429: "Too Many Requests",
    500: "Internal Server Error",
}


class FakeChatCompletions:
    """A FAKE of a paid external API: an OpenAI-compatible ``POST /v1/chat/completions``.

    No model and no network beyond loopback: it listens on 127.0.0.1, speaks just enough
    HTTP/1.1 (one request per connection, ``Content-Length`` bodies), checks that each
    request has the shape the real API expects (path, bearer key, model, messages, JSON
    mode, temperature 0) and answers with the canned ``content`` (or ``status`` /
    ``raw_body`` / ``delay``) the test set. Shape problems are collected in ``problems``.
    """

    def __init__(self) -> None:
        self.content = json.dumps({"facts": []})
        self.status = 200
        self.raw_body: bytes | None = None
        self.delay = 0.0
        self.requests: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.base_url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            method, path, _ = head[0].split(" ", 2)
            headers = {
                k.strip().lower(): v.strip()
                for k, v in (line.split(":", 1) for line in head[1:] if line)
            }
            body = json.loads(await reader.readexactly(int(headers.get("content-length", "0"))))
            self.requests.append({"method": method, "path": path, "headers": headers, "json": body})
            problems = self._check(method, path, headers, body)
            self.problems += problems
            if self.delay:
                await asyncio.sleep(self.delay)
            status, payload = self._answer(body, problems)
            writer.write(
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    @staticmethod
    def _check(method: str, path: str, headers: dict[str, str], body: Any) -> list[str]:
        problems = []
        if (method, path) != ("POST", "/v1/chat/completions"):
            problems.append(f"unexpected {method} {path}")
        if headers.get("authorization") != f"Bearer {KEY}":
            problems.append("missing or wrong bearer key")
        if body.get("model") != MODEL:
            problems.append(f"model {body.get('model')!r}")
        messages = body.get("messages") or []
        if [m.get("role") for m in messages] != ["system", "user"]:
            problems.append("messages must be system, user")
        elif messages[0]["content"] != SYSTEM_PROMPT:
            problems.append("unexpected system prompt")
        elif set(json.loads(messages[1]["content"])) != {"speaker", "message"}:
            problems.append("user message must be JSON with speaker and message")
        if body.get("response_format") != {"type": "json_object"}:
            problems.append("JSON mode not requested")
        if body.get("temperature") != 0:
            problems.append("temperature must be 0")
        return problems

    def _answer(self, body: dict[str, Any], problems: list[str]) -> tuple[int, bytes]:
        if problems:
            return 400, json.dumps({"error": {"message": "; ".join(problems)}}).encode()
        if self.raw_body is not None:
            return self.status, self.raw_body
        if self.status != 200:  # like real APIs, echo a (masked) key in the error
            error = {"message": f"Incorrect API key provided: {KEY}", "type": "error"}
            return self.status, json.dumps({"error": error}).encode()
        completion = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": self.content},
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        return 200, json.dumps(completion).encode()

    def said(self, **facts: Any) -> None:
        self.content = json.dumps(facts)


@pytest.fixture
async def fake() -> AsyncIterator[FakeChatCompletions]:
    server = FakeChatCompletions()
    await server.start()
    yield server
    await server.close()
    assert server.problems == []


@pytest.fixture
async def extractor(fake: FakeChatCompletions) -> AsyncIterator[LLMExtractor]:
    ex = LLMExtractor(LLMSettings(fake.base_url, MODEL, api_key=KEY, timeout_seconds=2.0))
    yield ex
    await ex.aclose()


def assert_secret_kept(err: errors.UnderlayError) -> None:
    assert err.retryable
    for shown in (str(err), repr(err), json.dumps(err.to_dict())):
        assert KEY not in shown
    assert err.__cause__ is None and err.__suppress_context__


async def test_facts_are_mapped(fake: FakeChatCompletions, extractor: LLMExtractor) -> None:
    fake.said(
        facts=[
            {
                "text": "I moved to Lyon",
                "attribute": "Location",
                "value": "Lyon",
                "retract": False,
                "entities": ["Lyon"],
            },
            {
                "text": "My sister Eva lives in Rome.",
                "attribute": None,
                "value": None,
                "retract": False,
                "entities": ["Eva", "Rome"],
            },
            {
                "text": "I no longer work at Initech",
                "attribute": "employer",
                "value": "Initech",
                "retract": True,
                "entities": ["Initech"],
            },
            {
                "text": "My favorite drink is tea",
                "attribute": "favorite drink",
                "value": "tea",
                "retract": False,
                "entities": [],
            },
            {"text": "I   enjoy long walks", "attribute": "other", "value": "walks"},
        ]
    )
    facts = await extractor.extract("Hi! I moved to Lyon. ...", "Ana", "user_1")
    assert facts == [
        Fact("Ana: I moved to Lyon", "ana/location", "Lyon", False, ("Ana", "Lyon")),
        Fact("Ana: My sister Eva lives in Rome.", None, None, False, ("Ana", "Eva", "Rome")),
        Fact("Ana: I no longer work at Initech", "ana/employer", None, True, ("Ana", "Initech")),
        Fact("Ana: My favorite drink is tea", "ana/favourite drink", "tea", False, ("Ana",)),
        Fact("Ana: I enjoy long walks", None, None, False, ("Ana",)),
    ]
    [request] = fake.requests
    assert json.loads(request["json"]["messages"][1]["content"]) == {
        "speaker": "Ana",
        "message": "Hi! I moved to Lyon. ...",
    }


async def test_speaker_attribution(fake: FakeChatCompletions, extractor: LLMExtractor) -> None:
    fake.said(
        facts=[
            {
                "text": "Bob: I work as a nurse",
                "attribute": "job",
                "value": "nurse",
                "retract": False,
                "entities": [],
            }
        ]
    )
    [named] = await extractor.extract("I work as a nurse.", "Bob", "user_1")
    assert (named.text, named.key, named.entities) == (
        "Bob: I work as a nurse",
        "bob/job",
        ("Bob",),
    )
    fake.said(
        facts=[
            {
                "text": "I work as a nurse",
                "attribute": "job",
                "value": "nurse",
                "retract": False,
                "entities": [],
            }
        ]
    )
    [unnamed] = await extractor.extract("I work as a nurse.", None, "Carol")
    assert (unnamed.text, unnamed.key, unnamed.entities) == ("I work as a nurse", "carol/job", ())
    assert json.loads(fake.requests[-1]["json"]["messages"][1]["content"])["speaker"] == "Carol"


async def test_nothing_stated(fake: FakeChatCompletions, extractor: LLMExtractor) -> None:
    fake.said(facts=[])
    assert await extractor.extract("Hey, how are you?", "Ana", "ana") == []


@pytest.mark.parametrize(
    ("content", "raw_body"),
    [
        ("I moved to Lyon.", None),  # not JSON
        ('{"facts": [{"text": 3}]}', None),  # wrong type
        ('{"facts": [{"text": "x", "retract": "yes"}]}', None),  # strict: no coercion
        ('{"facts": [{"text": "x", "confidence": 0.9}]}', None),  # unknown member
        ('{"memories": []}', None),  # wrong shape
        ("", b"<html>gateway</html>"),  # not a completion at all
        ("", b'{"choices": []}'),  # no choice
        ("", b'{"choices": [{"message": {"content": null}}]}'),  # refusal / no content
    ],
)
async def test_malformed_output_is_unavailable(
    fake: FakeChatCompletions, extractor: LLMExtractor, content: str, raw_body: bytes | None
) -> None:
    fake.content, fake.raw_body = content, raw_body
    with pytest.raises(errors.Unavailable) as caught:
        await extractor.extract("I moved to Lyon.", "Ana", "ana")
    port = fake.base_url.split(":")[2].split("/")[0]
    assert f"127.0.0.1:{port}" in caught.value.message
    assert "malformed" in caught.value.message or "no message content" in caught.value.message
    assert_secret_kept(caught.value)


@pytest.mark.parametrize(
    ("status", "says"),
    [(500, "failed (HTTP 500)"), (429, "rate limited"), (401, "rejected the request (HTTP 401)")],
)
async def test_error_status_is_unavailable(
    fake: FakeChatCompletions, extractor: LLMExtractor, status: int, says: str
) -> None:
    fake.status = status
    with pytest.raises(errors.Unavailable) as caught:
        await extractor.extract("I moved to Lyon.", "Ana", "ana")
    assert says in caught.value.message
    assert_secret_kept(caught.value)  # the fake's error body echoes the key


async def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    ex = LLMExtractor(LLMSettings(f"http://127.0.0.1:{port}/v1", MODEL, KEY, 2.0))
    try:
        with pytest.raises(errors.Unavailable) as caught:
            await ex.extract("I moved to Lyon.", "Ana", "ana")
    finally:
        await ex.aclose()
    assert f"127.0.0.1:{port}: request failed (ConnectError" in caught.value.message
    assert_secret_kept(caught.value)


async def test_timeout_is_unavailable_quickly(fake: FakeChatCompletions) -> None:
    fake.delay = 10.0
    ex = LLMExtractor(LLMSettings(fake.base_url, MODEL, api_key=KEY, timeout_seconds=0.3))
    started = time.monotonic()
    try:
        with pytest.raises(errors.Unavailable) as caught:
            await ex.extract("I moved to Lyon.", "Ana", "ana")
    finally:
        await ex.aclose()
    assert time.monotonic() - started < 2.0
    assert "no answer within 0.3s" in caught.value.message
    assert_secret_kept(caught.value)


async def test_given_client_is_used_and_left_open(fake: FakeChatCompletions) -> None:
    async with httpx.AsyncClient() as client:
        ex = LLMExtractor(LLMSettings(fake.base_url + "/", MODEL, api_key=KEY), client)
        fake.said(facts=[{"text": "I live in Oslo", "attribute": "location", "value": "Oslo"}])
        [fact] = await ex.extract("I live in Oslo", None, "ana")
        await ex.aclose()
        assert not client.is_closed
    assert (fact.key, fact.value) == ("ana/location", "Oslo")


def test_settings_keep_the_key_out_of_repr_and_check_values() -> None:
    settings = LLMSettings("https://user:pw@models.example:8443/v1", MODEL, api_key=KEY)
    assert KEY not in repr(settings) and KEY not in str(settings)
    assert settings.endpoint == "models.example:8443"
    assert LLMSettings("https://models.example/v1", MODEL).endpoint == "models.example:443"
    for bad in ("models.example/v1", "http://", "http://[::1/v1", "ftp://models.example"):
        with pytest.raises(errors.InvalidInput):
            LLMSettings(bad, MODEL)
    with pytest.raises(errors.InvalidInput):
        LLMSettings("http://127.0.0.1:1/v1", MODEL, timeout_seconds=0)
