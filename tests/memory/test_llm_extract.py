"""The optional LLM extractor, against a fake OpenAI-compatible server on loopback."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from underlay import errors
from underlay.memory.extract import Fact
from underlay.memory.llm_extract import SYSTEM_PROMPT, LLMExtractor, LLMSettings
from underlay.testing.fake_chat import FakeChatCompletions

MODEL = "fake-extractor-1"
KEY = "sk-fake-0123456789-never-shown"


@pytest.fixture
async def fake() -> AsyncIterator[FakeChatCompletions]:
    server = FakeChatCompletions(MODEL, KEY, SYSTEM_PROMPT, {"speaker", "message"})
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
