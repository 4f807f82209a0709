"""A FAKE of a paid external API, for tests: an OpenAI-compatible chat completions server.

Shipped with underlay (like ``testing.pgvector``) so that every layer that may call a
model tests against the same loopback fake; it is never used outside tests.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

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

    def __init__(self, model: str, key: str, system_prompt: str, user_keys: set[str]) -> None:
        self.model, self.key = model, key
        self.system_prompt, self.user_keys = system_prompt, user_keys
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

    def _check(self, method: str, path: str, headers: dict[str, str], body: Any) -> list[str]:
        """What every request must have (path, key, model, temperature 0), then the body's
        own shape (``_check_body``)."""
        problems = []
        if (method, path) != ("POST", "/v1/chat/completions"):
            problems.append(f"unexpected {method} {path}")
        if headers.get("authorization") != f"Bearer {self.key}":
            problems.append("missing or wrong bearer key")
        if body.get("model") != self.model:
            problems.append(f"model {body.get('model')!r}")
        if body.get("temperature") != 0:
            problems.append("temperature must be 0")
        return problems + self._check_body(body)

    def _check_body(self, body: Any) -> list[str]:
        """A JSON-mode request: system prompt, then the user's JSON with the expected keys."""
        problems = []
        messages = body.get("messages") or []
        if [m.get("role") for m in messages] != ["system", "user"]:
            problems.append("messages must be system, user")
        elif messages[0]["content"] != self.system_prompt:
            problems.append("unexpected system prompt")
        elif set(json.loads(messages[1]["content"])) != self.user_keys:
            problems.append(f"user message must be JSON with {sorted(self.user_keys)}")
        if body.get("response_format") != {"type": "json_object"}:
            problems.append("JSON mode not requested")
        return problems

    def _answer(self, body: dict[str, Any], problems: list[str]) -> tuple[int, bytes]:
        if problems:
            return 400, json.dumps({"error": {"message": "; ".join(problems)}}).encode()
        if self.raw_body is not None:
            return self.status, self.raw_body
        if self.status != 200:  # like real APIs, echo a (masked) key in the error
            error = {"message": f"Incorrect API key provided: {self.key}", "type": "error"}
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


Script = Callable[[list[dict[str, Any]], list[dict[str, Any]]], dict[str, Any]]


class FakeAgentModel(FakeChatCompletions):
    """A FAKE of a paid external API: a chat model that uses tools, for the agent loop.

    ``script(messages, tools)`` plays the model: it returns the assistant message —
    ``{"content": text}`` or ``{"tool_calls": [{"name": ..., "arguments": {...}}]}`` (ids
    are added) — or ``{"status": 500}`` for a failed request. Each request is first
    checked for the shape of the real API's tool use:
    system then user first; every assistant tool call answered by one ``tool`` message
    with its id before the next turn; tools offered as functions whose names the API
    accepts and whose parameters are JSON object schemas; temperature 0.
    """

    def __init__(self, model: str, key: str, script: Script) -> None:
        super().__init__(model, key, "", set())
        self.script = script
        self._calls = 0

    def _check_body(self, body: Any) -> list[str]:
        problems = []
        messages = body.get("messages") or []
        if [m.get("role") for m in messages[:2]] != ["system", "user"]:
            problems.append("messages must start with system, user")
        open_calls: set[str] = set()
        for m in messages[2:]:
            if m.get("role") == "tool":
                if m.get("tool_call_id") not in open_calls or not isinstance(m.get("content"), str):
                    problems.append(f"tool message for unknown call {m.get('tool_call_id')}")
                open_calls.discard(m.get("tool_call_id"))
                continue
            if open_calls:
                problems.append(f"tool calls {sorted(open_calls)} left unanswered")
            open_calls = {c["id"] for c in m.get("tool_calls") or ()}
        if open_calls:
            problems.append(f"tool calls {sorted(open_calls)} left unanswered")
        for tool in body.get("tools") or ():
            fn = tool.get("function") or {}
            if tool.get("type") != "function" or not re.fullmatch(
                r"[a-zA-Z0-9_-]{1,64}", fn.get("name", "")
            ):
                problems.append(f"bad tool {fn.get('name')!r}")
            if (fn.get("parameters") or {}).get("type") != "object":
                problems.append(f"tool {fn.get('name')!r} parameters are not an object schema")
        return problems

    def _answer(self, body: dict[str, Any], problems: list[str]) -> tuple[int, bytes]:
        if problems or self.status != 200 or self.raw_body is not None:
            return super()._answer(body, problems)
        said = self.script(body["messages"], body.get("tools") or [])
        if "status" in said:
            return int(said["status"]), json.dumps({"error": {"message": "scripted"}}).encode()
        message: dict[str, Any] = {"role": "assistant", "content": said.get("content")}
        if said.get("tool_calls"):
            calls = []
            for call in said["tool_calls"]:
                self._calls += 1
                arguments = call["arguments"]
                if not isinstance(arguments, str):
                    arguments = json.dumps(arguments)
                function = {"name": call["name"], "arguments": arguments}
                call_id = f"call_{self._calls}"
                calls.append({"id": call_id, "type": "function", "function": function})
            message["tool_calls"] = calls
        completion = {
            "id": "chatcmpl-fake", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }  # fmt: skip
        return 200, json.dumps(completion).encode()
