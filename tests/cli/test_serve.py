"""``underlay up`` and ``underlay mcp`` as real subprocesses (network: 127.0.0.1 only)."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from .conftest import Cli

UNDERLAY = str(Path(sys.executable).parent / "underlay")


def _env(cli: Cli) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNDERLAY_")}
    env.update({k: v for k, v in cli.env.items() if v is not None})
    return env


def _first_line(stream: object, timeout: float) -> str:
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()  # type: ignore[attr-defined]
    return lines.get(timeout=timeout)


def test_up_serves_rest_and_mcp_and_stops_cleanly_on_sigterm(cli: Cli) -> None:
    proc = subprocess.Popen(
        [UNDERLAY, "up", "--host", "127.0.0.1", "--port", "0", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(cli),
        text=True,
    )
    try:
        info = json.loads(_first_line(proc.stdout, timeout=60))
        url = info["url"]
        assert url.startswith("http://127.0.0.1:") and info["mcp"] == f"{url}/mcp"
        token_file = Path(info["admin_token_file"])
        assert token_file.parent == Path(cli.env["UNDERLAY_HOME"] or "")
        token = token_file.read_text().strip()
        assert token not in json.dumps(info)  # the path is printed, never the token

        assert httpx.get(f"{url}/healthz", timeout=10).json() == {"ok": True}
        me = httpx.post(
            f"{url}/v1/self/whoami",
            json={},
            timeout=10,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert me.status_code == 200 and me.json()["kind"] == "human"
        anon = httpx.post(f"{url}/v1/self/whoami", json={}, timeout=10)
        assert anon.status_code == 401

        # the same CLI, now over HTTP
        remote = {"UNDERLAY_URL": url, "UNDERLAY_TOKEN": token}
        made = cli.json("agents", "create", "remote", "--budget", "2.00 USD", env=remote)
        assert cli.json("agents", "get", "remote", env=remote)["id"] == made["id"]
        assert (
            cli.json("budget", "balance", "--agent", "remote", env=remote)["available"]
            == "2.00 USD"
        )
        # the worker `up` started (a child process) runs submitted tasks
        task = cli.json("tasks", "submit", "sleep", "--input", '{"seconds": 0.01}', env=remote)
        for _ in range(300):
            done = cli.json("tasks", "get", task["id"], env=remote)
            if done["state"] == "succeeded":
                break
            time.sleep(0.05)
        assert done["state"] == "succeeded" and done["result"] == {"slept": 0.01}
        assert [t["id"] for t in cli.json("tasks", "ls", env=remote)["items"]] == [task["id"]]
        # the worker child is restarted when it dies
        children = subprocess.run(
            ["pgrep", "-P", str(proc.pid), "-f", "worker"], capture_output=True, text=True
        ).stdout.split()
        assert len(children) == 1
        os.kill(int(children[0]), signal.SIGKILL)
        again = cli.json("tasks", "submit", "noop", env=remote)
        for _ in range(400):
            if cli.json("tasks", "get", again["id"], env=remote)["state"] == "succeeded":
                break
            time.sleep(0.05)
        assert cli.json("tasks", "get", again["id"], env=remote)["state"] == "succeeded"
        bad = cli("agents", "create", "no/slashes", env=remote)
        assert bad.exit_code == 2 and "(field: name)" in bad.stderr
        assert cli.ok("audit", "verify", env=remote).stdout.startswith("audit chain intact")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=30)
        finally:
            proc.kill()
    rest = proc.stdout.read() if proc.stdout else ""
    err = proc.stderr.read() if proc.stderr else ""
    assert rc == 0, err
    assert rest == "" and "Traceback" not in err and "underlay stopped" in err


def test_up_human_output_names_urls_and_token_file(cli: Cli) -> None:
    proc = subprocess.Popen(
        [UNDERLAY, "up", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**_env(cli), "COLUMNS": "80"},
        text=True,
    )
    try:
        lines = [_first_line(proc.stdout, timeout=60) for _ in range(5)]
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
    assert rc == 0
    text = "".join(lines)
    assert "underlay is up" in text and "/mcp" in text
    assert str(Path(cli.env["UNDERLAY_HOME"] or "") / "admin-token") in text
    token = (Path(cli.env["UNDERLAY_HOME"] or "") / "admin-token").read_text().strip()
    assert token not in text


def test_mcp_over_stdio_lists_and_calls_tools(cli: Cli, tmp_path: Path) -> None:
    cli.ok("agents", "create", "tooluser", "--cap", "system.noop", "--cap", "agents.read")
    token = cli.json("tokens", "create", "--agent", "tooluser")["token"]
    params = StdioServerParameters(
        command=UNDERLAY, args=["mcp"], env={**_env(cli), "UNDERLAY_TOKEN": token}
    )

    async def session_run() -> tuple[set[str], object]:
        with (tmp_path / "mcp.log").open("w") as log:
            async with (
                stdio_client(params, errlog=log) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                names = {t.name for t in (await session.list_tools()).tools}
                return names, await session.call_tool("agents.get", {"agent": "tooluser"})

    names, result = asyncio.run(session_run())
    assert {"system.noop", "agents.get", "self.whoami"} <= names
    assert "agents.create" not in names  # only what this token may call
    assert not result.is_error  # type: ignore[attr-defined]
    assert "tooluser" in json.dumps(result.model_dump(mode="json"))  # type: ignore[attr-defined]


def test_mcp_with_a_bad_token_fails_on_stderr(cli: Cli) -> None:
    proc = subprocess.run(
        [UNDERLAY, "mcp"],
        env={**_env(cli), "UNDERLAY_TOKEN": "ul_not_a_real_token_at_all"},
        capture_output=True,
        text=True,
        timeout=60,
        input="",
    )
    assert proc.returncode == 1
    assert proc.stdout == ""  # stdout belongs to the protocol
    assert "error[unauthenticated]" in proc.stderr and "Traceback" not in proc.stderr


def test_up_on_a_busy_port_is_a_clear_error(cli: Cli) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [UNDERLAY, "up", "--port", str(port)],
            env=_env(cli),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1 and proc.stdout == ""
    assert "error[unavailable]" in proc.stderr and str(port) in proc.stderr
    assert "Traceback" not in proc.stderr
