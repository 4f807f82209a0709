"""ulinit and its client, run directly as a host subprocess (no sandbox needed)."""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from underlay.compute.initbin import ulinit_path
from underlay.compute.supervisor import DEAD, Process, Supervisor
from underlay.errors import Unavailable

PATH = "/usr/local/bin:/usr/bin:/bin"
ENV = {"PATH": PATH}


@pytest.fixture(scope="session")
def ulinit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ulinit_path(tmp_path_factory.mktemp("ulinit"))


async def _spawn(ulinit: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(ulinit), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )


@pytest.fixture
async def init(ulinit: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await _spawn(ulinit)
    yield proc
    if proc.returncode is None:
        proc.kill()
    await proc.wait()


@pytest.fixture
async def sup(init: asyncio.subprocess.Process) -> AsyncIterator[Supervisor]:
    assert init.stdout is not None and init.stdin is not None
    s = Supervisor(init.stdout, init.stdin)
    await s.wait_ready(5)
    yield s
    await s.close()


async def run(
    sup: Supervisor, argv: list[str], env: dict[str, str] = ENV, cwd: str = "/"
) -> tuple[int, bytes, bytes, Process]:
    """Runs to completion; returns (exit code, stdout, stderr, process)."""
    proc = await sup.start(argv, env=env, cwd=cwd)
    out, err = bytearray(), bytearray()
    async for stream, chunk in proc.output():
        (out if stream == "stdout" else err).extend(chunk)
    code = await asyncio.wait_for(proc.wait(), 5)
    return code, bytes(out), bytes(err), proc


def gone(pid: int) -> bool:
    """True when ``pid`` no longer exists or is a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def until_gone(pid: int, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        await asyncio.sleep(0.02)
    return False


async def test_hello_frame_is_first(init: asyncio.subprocess.Process) -> None:
    assert init.stdout is not None
    head = await asyncio.wait_for(init.stdout.readexactly(9 + 8), 5)
    assert head == b"H" + struct.pack(">II", 0, 8) + b"ulinit 1"


async def test_stdout_and_stderr_are_separate(sup: Supervisor) -> None:
    code, out, err, proc = await run(sup, ["sh", "-c", "echo out; echo err >&2; echo out2"])
    assert (code, out, err) == (0, b"out\nout2\n", b"err\n")
    assert proc.pid is not None and proc.exec_error is None


async def test_exit_codes(sup: Supervisor) -> None:
    assert (await run(sup, ["true"]))[0] == 0
    assert (await run(sup, ["false"]))[0] == 1
    assert (await run(sup, ["sh", "-c", "exit 42"]))[0] == 42
    assert (await run(sup, ["sh", "-c", "kill -TERM $$"]))[0] == 128 + signal.SIGTERM


async def test_environment_is_exactly_the_given_one(sup: Supervisor) -> None:
    env = {"PATH": PATH, "ONLY": "this one", "EMPTY": ""}
    code, out, _, _ = await run(sup, ["env"], env=env)
    assert code == 0
    assert sorted(out.decode().splitlines()) == ["EMPTY=", "ONLY=this one", f"PATH={PATH}"]


async def test_argv0_is_looked_up_in_the_given_path(sup: Supervisor, tmp_path: Path) -> None:
    tool = tmp_path / "only-here"
    tool.write_text('#!/bin/sh\necho found "$@"\n')
    tool.chmod(0o755)
    code, out, _, _ = await run(sup, ["only-here", "a b"], env={"PATH": f"{tmp_path}:/bin"})
    assert (code, out) == (0, b"found a b\n")
    code, _, _, proc = await run(sup, ["only-here"])  # not in the default PATH
    assert code == 127 and proc.exec_error is not None


async def test_cwd(sup: Supervisor, tmp_path: Path) -> None:
    code, out, _, _ = await run(sup, ["pwd", "-P"], cwd=str(tmp_path))
    assert (code, out.decode().strip()) == (0, os.path.realpath(tmp_path))
    code, _, _, proc = await run(sup, ["pwd"], cwd=str(tmp_path / "missing"))
    assert code == 127
    assert proc.exec_error == f"No such file or directory: chdir {tmp_path / 'missing'}"


async def test_only_std_descriptors_are_inherited(sup: Supervisor) -> None:
    code, out, _, _ = await run(sup, ["ls", "/proc/self/fd"])
    assert code == 0
    assert sorted(out.split()) == [b"0", b"1", b"2", b"3"]  # 3: ls's own directory handle


async def test_stdin_round_trip(sup: Supervisor) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # larger than every pipe buffer on the way
    proc = await sup.start(["cat"], env=ENV, cwd="/", stdin=True)
    out = bytearray()

    async def collect() -> None:
        async for _, chunk in proc.output():
            out.extend(chunk)

    reader = asyncio.create_task(collect())
    await proc.write_stdin(data)
    await proc.close_stdin()
    await asyncio.wait_for(reader, 5)
    assert await proc.wait() == 0
    assert bytes(out) == data


async def test_stdin_queue_never_blocks_the_supervisor(sup: Supervisor) -> None:
    first, second = os.urandom(3_000_000), os.urandom(3_000_000)
    proc = await sup.start(["sh", "-c", "sleep 1; cat"], env=ENV, cwd="/", stdin=True)
    out = bytearray()

    async def collect() -> None:
        async for _, chunk in proc.output():
            out.extend(chunk)

    reader = asyncio.create_task(collect())
    started = time.monotonic()
    await proc.write_stdin(first)  # queued in ulinit: nobody reads it yet
    await sup.ping()
    assert time.monotonic() - started < 0.5  # well before the command reads anything
    await proc.write_stdin(second)  # past the high-water mark: ulinit pauses its input
    await proc.close_stdin()
    await asyncio.wait_for(reader, 5)
    assert await proc.wait() == 0
    assert bytes(out) == first + second


async def test_close_stdin_ends_reader_and_default_stdin_is_devnull(sup: Supervisor) -> None:
    proc = await sup.start(
        ["sh", "-c", "read line; echo got:$line; read x; echo eof:$?"], env=ENV, cwd="/", stdin=True
    )
    await proc.write_stdin(b"hello\n")
    await proc.close_stdin()
    chunks = [c async for _, c in proc.output()]
    assert b"".join(chunks) == b"got:hello\neof:1\n"
    assert await proc.wait() == 0
    code, out, _, _ = await run(sup, ["cat"])  # no stdin pipe: /dev/null, immediate EOF
    assert (code, out) == (0, b"")


async def test_kill_reaches_the_whole_process_group(sup: Supervisor) -> None:
    proc = await sup.start(["sh", "-c", "sleep 100 & echo $!; wait"], env=ENV, cwd="/")
    output = proc.output()
    _, first = await asyncio.wait_for(anext(output), 5)
    child = int(first)
    assert not gone(child)
    await proc.kill()
    assert await asyncio.wait_for(proc.wait(), 2) == 137
    assert await until_gone(child), "the shell's child survived the group kill"


async def test_kill_with_another_signal(sup: Supervisor) -> None:
    proc = await sup.start(["sleep", "100"], env=ENV, cwd="/")
    await proc.kill(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 2) == 128 + signal.SIGTERM


async def test_exec_failures(sup: Supervisor, tmp_path: Path) -> None:
    code, out, err, proc = await run(sup, ["no-such-binary-xyz", "arg"])
    assert (code, out, err, proc.pid) == (127, b"", b"", None)
    assert proc.exec_error == "No such file or directory: no-such-binary-xyz"
    plain = tmp_path / "not-executable"
    plain.write_text("echo hi\n")
    code, _, _, proc = await run(sup, [str(plain)])
    assert code == 126 and proc.exec_error == f"Permission denied: {plain}"


async def test_large_output_arrives_complete(sup: Supervisor) -> None:
    code, out, err, _ = await run(
        sup, ["sh", "-c", "yes 0123456789abcdef | head -c 5000000; echo done >&2"]
    )
    assert (code, len(out), err) == (0, 5_000_000, b"done\n")
    assert out == (b"0123456789abcdef\n" * 300_000)[:5_000_000]


async def test_fifty_concurrent_commands(sup: Supervisor) -> None:
    async def one(i: int) -> tuple[int, bytes]:
        code, out, _, _ = await run(sup, ["sh", "-c", f"sleep 0.2; echo {i}"])
        return code, out

    started = time.monotonic()
    results = await asyncio.gather(*(one(i) for i in range(50)))
    assert results == [(0, f"{i}\n".encode()) for i in range(50)]
    assert time.monotonic() - started < 5  # side by side (one after the other: 10 s)


async def test_over_a_thousand_live_commands(sup: Supervisor) -> None:
    procs = [await sup.start(["sleep", "60"], env=ENV, cwd="/") for _ in range(1030)]
    await asyncio.wait_for(sup.ping(), 30)  # every 'S' was read before the reply
    pids = {p.pid for p in procs}
    assert None not in pids and len(pids) == 1030
    assert not any(p.done or gone(p.pid or 0) for p in procs)  # all alive at once
    for proc in procs:
        await proc.kill()
    codes = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), 30)
    assert set(codes) == {137}


async def test_background_grandchild_does_not_delay_exit(sup: Supervisor) -> None:
    started = time.monotonic()
    code, out, _, _ = await run(sup, ["sh", "-c", "sleep 100 & echo $!"])
    assert code == 0 and time.monotonic() - started < 1
    grandchild = int(out)
    assert not gone(grandchild)
    await sup.close()  # the leftover group is killed when the supervisor shuts down
    assert await until_gone(grandchild)


async def test_ping(sup: Supervisor) -> None:
    rtts = [await sup.ping() for _ in range(100)]
    assert all(0 < rtt < 1 for rtt in rtts)


async def test_wait_while_output_is_iterated_keeps_the_output(sup: Supervisor) -> None:
    proc = await sup.start(["head", "-c", "2000000", "/dev/zero"], env=ENV, cwd="/")
    chunks = proc.output()

    async def collect() -> int:
        return sum([len(c) async for _, c in chunks])

    total, code = await asyncio.wait_for(asyncio.gather(collect(), proc.wait()), 5)
    assert (total, code) == (2_000_000, 0)


async def test_wait_alone_discards_output(sup: Supervisor) -> None:
    proc = await sup.start(["head", "-c", "2000000", "/dev/zero"], env=ENV, cwd="/")
    assert await asyncio.wait_for(proc.wait(), 5) == 0
    assert [c async for c in proc.output()] == []


async def test_supervisor_eof_kills_its_children(init: asyncio.subprocess.Process) -> None:
    assert init.stdout is not None and init.stdin is not None
    sup = Supervisor(init.stdout, init.stdin)
    await sup.wait_ready(5)
    proc = await sup.start(["sh", "-c", "sleep 100 & echo $!; wait"], env=ENV, cwd="/")
    grandchild = int((await asyncio.wait_for(anext(proc.output()), 5))[1])
    await sup.close()
    assert await asyncio.wait_for(init.wait(), 5) == 0
    assert (proc.exit_code, proc.exec_error) == (-1, DEAD)
    assert proc.pid is not None
    assert await until_gone(proc.pid) and await until_gone(grandchild)


async def test_client_survives_supervisor_death(init: asyncio.subprocess.Process) -> None:
    assert init.stdout is not None and init.stdin is not None
    sup = Supervisor(init.stdout, init.stdin)
    await sup.wait_ready(5)
    proc = await sup.start(["sleep", "100"], env=ENV, cwd="/")
    await sup.ping()  # the 'S' frame was read before the reply
    assert proc.pid is not None
    try:
        init.kill()
        assert await asyncio.wait_for(proc.wait(), 5) == -1
        assert proc.exec_error == DEAD
        assert [c async for c in proc.output()] == []
        with pytest.raises(Unavailable):
            await sup.start(["true"], env=ENV, cwd="/")
        with pytest.raises(Unavailable):
            await sup.ping()
        with pytest.raises(Unavailable):
            await sup.wait_ready(1)
        await asyncio.wait_for(sup.close(), 5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # ulinit died by SIGKILL: clean up ourselves


async def test_wait_ready_times_out_on_silence(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        "sleep", "10", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stdin is not None
    sup = Supervisor(proc.stdout, proc.stdin)
    try:
        with pytest.raises(Unavailable):
            await sup.wait_ready(0.2)
    finally:
        proc.kill()
        await proc.wait()
        await sup.close()


async def test_orphans_are_adopted_and_reaped(
    sup: Supervisor, init: asyncio.subprocess.Process
) -> None:
    code, out, _, _ = await run(sup, ["sh", "-c", "sleep 0.3 & echo $!"])
    assert code == 0
    orphan = int(out)
    status = Path(f"/proc/{orphan}/status").read_text()
    assert f"PPid:\t{init.pid}\n" in status  # ulinit is a child subreaper
    deadline = time.monotonic() + 3
    while Path(f"/proc/{orphan}").exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert not Path(f"/proc/{orphan}").exists(), "the orphan was not reaped"
