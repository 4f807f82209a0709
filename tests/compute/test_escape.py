"""Escape suite: hostile code in a real bubblewrap sandbox tries to reach the host, another
sandbox, or more resources than it was given, and every attempt must be contained.

Every check asserts what would change if an isolation layer broke (a namespace, the
seccomp filter, dropped capabilities, the read-only root, the cgroup limits, the files
API's no-follow walk), and where it can, it also proves the bait is real (the host file
exists, the host server answers the host, sandbox A reaches its own secret), so a pass
cannot come from a check that looks at nothing.

Read-only facts are gathered once per module by one script in one sandbox (``SURVEY``,
``SYSCALLS``, the two-sandbox probe) and asserted case by case; checks that need bait on
the host or special limits get their own sandbox. Nothing sends traffic off the machine:
a sandbox has only loopback, so its connect() to a public address fails inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import random
import socket
import stat
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from underlay import errors
from underlay.compute.interface import Instance
from underlay.kernel.kernel import Kernel
from underlay.sdk.client import AsyncUnderlay

from .escape_helpers import (
    FIFO_SWAPPER,
    HOLDER,
    SEEKER,
    SURVEY,
    SWAPPER,
    SYSCALLS,
    SYSCALLS_SCRIPT,
    alive,
    cgroup_pids,
    run_json,
    status_fields,
)

UID_BASE = 200_000
ALLOWED_DEV = {
    "core",
    "fd",
    "full",
    "null",
    "ptmx",
    "pts",
    "random",
    "shm",
    "stderr",
    "stdin",
    "stdout",
    "tty",
    "urandom",
    "zero",
}
ALLOWED_ROOT = {
    ".ul",
    "bin",
    "dev",
    "etc",
    "lib",
    "lib32",
    "lib64",
    "libx32",
    "proc",
    "run",
    "sbin",
    "tmp",
    "usr",
    "workspace",
}
SAFE_ERRNOS = {errno.EACCES, errno.EROFS, errno.EPERM, errno.ETXTBSY}

_CACHE: dict[str, Any] = {}


async def _once(key: str, make: Callable[[], Awaitable[Any]]) -> Any:
    """Module-wide memo: one sandbox answers a whole family of checks."""
    if key not in _CACHE:
        _CACHE[key] = await make()
    return _CACHE[key]


async def sh(ul: AsyncUnderlay, sid: str, cmd: str, timeout: float = 30.0) -> Any:
    return await ul.sandbox.commands.run(sid, cmd, timeout=timeout)


async def instance(kernel: Kernel, sid: str) -> Instance:
    return (await kernel.compute()).instances[sid]


def caps(status: dict[str, str]) -> dict[str, int]:
    return {k: int(status[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}


def host_cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


def mounts(mountinfo: str) -> list[dict[str, str]]:
    out = []
    for line in mountinfo.splitlines():
        f = line.split()
        out.append(
            {"dev": f[2], "root": f[3], "point": f[4], "opts": f[5], "fstype": f[f.index("-") + 1]}
        )
    return out


# ======================================================================================
# one default sandbox, surveyed once: what an unprivileged process in it sees and can do

SURVEY_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {}


def survey_check(fn: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    SURVEY_CHECKS[fn.__name__] = fn
    return fn


# -- /proc ------------------------------------------------------------------------------


@survey_check
def proc_shows_only_own_processes(f: dict[str, Any]) -> None:
    host_pids = [p for p in os.listdir("/proc") if p.isdigit()]
    assert len(f["pids"]) <= 8 < len(host_pids)
    everything = " | ".join(f["cmdlines"].values())
    assert host_cmdline(1) not in everything and "pytest" not in everything
    for cmd in f["cmdlines"].values():
        assert cmd.split()[0] in {"bwrap", "/.ul/init", "python3"}, cmd


@survey_check
def proc_pid1_is_the_sandbox_own(f: dict[str, Any]) -> None:
    assert f["cmdlines"]["1"] != host_cmdline(1)
    assert f["cmdlines"]["1"].startswith("bwrap ") and "/.ul/init" in f["cmdlines"]["1"]


@survey_check
def proc_sys_cannot_be_written(f: dict[str, Any]) -> None:
    opened = f["sysctl_open_for_write"]
    assert opened["/proc/sys/kernel/core_pattern"] == errno.EACCES, opened
    assert all(e in SAFE_ERRNOS | {errno.ENOENT} for e in opened.values()), opened


@survey_check
def proc_kcore_unreadable(f: dict[str, Any]) -> None:
    assert f["kcore"] in {errno.ENOENT, errno.EACCES, errno.EPERM}


@survey_check
def proc_kallsyms_hides_addresses(f: dict[str, Any]) -> None:
    assert f["kallsyms_nonzero"] == [], f["kallsyms_nonzero"]


@survey_check
def proc_sysrq_trigger_unwritable(f: dict[str, Any]) -> None:
    assert f["sysrq"] in {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS}


@survey_check
def proc_kmsg_and_kpagecount_unreadable(f: dict[str, Any]) -> None:
    assert f["proc_kmsg"] in SAFE_ERRNOS | {errno.ENOENT}
    assert f["kpagecount"] in SAFE_ERRNOS | {errno.ENOENT}


@survey_check
def supervisor_host_pipes_cannot_be_reopened(f: dict[str, Any]) -> None:
    # ulinit's stdin/stdout are the host's frame pipes, its stderr a log file on the host
    # disk: reopening them would let the sandbox forge or steal supervisor frames
    assert f["init_pids"] and len(f["reopen"]) == 6
    assert all(e == errno.EACCES for e in f["reopen"].values()), f["reopen"]


@survey_check
def no_host_descriptors_leak(f: dict[str, Any]) -> None:
    assert f["own_fds"] == ["0", "1", "2", "3"]  # 3: the listing itself
    assert f["ls_fd"] == ["0", "1", "2", "3"]
    # every descriptor any sandbox process holds: pipes, /dev nodes, and ulinit's stderr
    # (the host log, which it cannot reopen: see the check above); never a host path that
    # /proc/PID/fd/N would reopen (an O_PATH fd bwrap was given but did not consume)
    harmless = {"pipe", "anon_inode"}
    for where, target in f["fd_links"].items():
        ok = (
            target.split(":")[0] in harmless
            or target.startswith(("/dev/", "/proc/"))
            or (target.startswith("/var/lib/underlay/") and target.endswith("/bwrap.log"))
        )
        pid, fd = where.split("/")
        assert ok, f"host descriptor leaked into the sandbox: /proc/{pid}/fd/{fd} -> {target}"


@survey_check
def sys_absent_or_read_only(f: dict[str, Any]) -> None:
    assert f["sys"] in {"absent", "ro"}


@survey_check
def cgroup_namespace_hides_host_hierarchy(f: dict[str, Any]) -> None:
    lines = [ln for ln in f["cgroup"].splitlines() if ln]
    assert lines and all(ln.endswith(":/") for ln in lines), lines
    assert "underlay" not in f["cgroup"] and "sbx_" not in f["cgroup"]


# -- identity, privileges -----------------------------------------------------------------


@survey_check
def uid_is_unprivileged_1000(f: dict[str, Any]) -> None:
    assert f["ids"][:4] == [1000, 1000, 1000, 1000] and set(f["ids"][4]) <= {1000}


@survey_check
def no_capabilities_at_all(f: dict[str, Any]) -> None:
    assert caps(status_fields(f["status"])) == dict.fromkeys(
        ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"), 0
    )


@survey_check
def no_new_privs_and_seccomp_filter(f: dict[str, Any]) -> None:
    st = status_fields(f["status"])
    assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2"


@survey_check
def hostname_is_sandbox_not_the_hosts(f: dict[str, Any]) -> None:
    assert f["hostname"] == "sandbox" != socket.gethostname()
    assert f["etc_hostname"] == f["proc_hostname"] == "sandbox\n"
    assert f["sethostname"] == errno.EPERM


@survey_check
def environment_has_no_host_variables(f: dict[str, Any]) -> None:
    assert set(f["env"]) <= {"PATH", "HOME", "USER", "PWD", "SHLVL", "_", "LC_CTYPE"}
    assert f["environs"]["1"] == ""  # bwrap, pid 1, was started with an empty environment
    for environ in f["environs"].values():
        assert "PYTEST" not in environ and "HOME=/root" not in environ  # the host's


# -- devices, terminals -------------------------------------------------------------------


@survey_check
def dev_has_only_harmless_nodes(f: dict[str, Any]) -> None:
    assert set(f["dev"]) <= ALLOWED_DEV, set(f["dev"]) - ALLOWED_DEV


@survey_check
def dangerous_device_nodes_absent(f: dict[str, Any]) -> None:
    assert not any(f["dev_present"].values()), f["dev_present"]


@survey_check
def mknod_of_devices_fails(f: dict[str, Any]) -> None:
    assert f["mknod"] == dict.fromkeys(f["mknod"], errno.EPERM), f["mknod"]


@survey_check
def no_controlling_terminal(f: dict[str, Any]) -> None:
    assert f["dev_tty"] == errno.ENXIO  # --new-session: /dev/tty leads nowhere


@survey_check
def tiocsti_is_denied(f: dict[str, Any]) -> None:
    assert f["tcgets_works"] == 0  # a real tty: EPERM below is the filter, not ENOTTY
    assert f["tiocsti"] == errno.EPERM


@survey_check
def tioclinux_is_denied(f: dict[str, Any]) -> None:
    assert f["tioclinux"] == errno.EPERM


# -- file system --------------------------------------------------------------------------


@survey_check
def root_usr_etc_are_read_only(f: dict[str, Any]) -> None:
    new = ("/escape", "/usr/escape", "/etc/escape", "/bin/escape", "/run/escape", "/.ul/escape")
    assert all(f["readonly"][p] == errno.EROFS for p in new), f["readonly"]


@survey_check
def shared_template_and_init_binary_immutable(f: dict[str, Any]) -> None:
    # /usr is the host's, /etc and ulinit are shared by every sandbox: a write would trojan all
    for p in ("/usr/bin/env", "/etc/passwd", "/etc/ld.so.cache", "/.ul/init"):
        assert f["readonly"][p] in SAFE_ERRNOS, (p, f["readonly"][p])
    assert f["chmod_usr"] in SAFE_ERRNOS


@survey_check
def host_files_cannot_be_hardlinked_into_workspace(f: dict[str, Any]) -> None:
    # a hard link in the workspace would make the host's files API write through to them
    assert f["hardlink"] == dict.fromkeys(f["hardlink"], errno.EXDEV), f["hardlink"]


@survey_check
def root_has_no_host_directories(f: dict[str, Any]) -> None:
    points = {m["point"] for m in mounts(f["mountinfo"])}
    assert {"/", "/usr", "/etc", "/proc", "/dev", "/tmp", "/workspace"} <= points
    assert not {"/root", "/home", "/var", "/sys", "/boot", "/mnt", "/srv"} & points


@survey_check
def host_disk_mounts_are_read_only_and_minimal(f: dict[str, Any]) -> None:
    st = os.stat("/usr")
    host_dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    on_host_disk = [m for m in mounts(f["mountinfo"]) if m["dev"] == host_dev]
    assert on_host_disk, f["mountinfo"]
    for m in on_host_disk:
        assert m["point"] in {"/usr", "/etc", "/.ul/init", "/.ul/fwd"}, m
        assert m["root"] != "/" and m["opts"].split(",")[0] == "ro", m
        assert "nosuid" in m["opts"].split(","), m


@survey_check
def writable_mounts_are_nosuid_nodev(f: dict[str, Any]) -> None:
    for m in mounts(f["mountinfo"]):
        if m["opts"].split(",")[0] == "rw" and m["point"] != "/dev/pts":
            opts = m["opts"].split(",")
            assert "nosuid" in opts, m
            assert "nodev" in opts or m["fstype"] == "devtmpfs", m  # the 6 bound nodes


# -- privileged tools ---------------------------------------------------------------------


@survey_check
def mount_and_umount_fail(f: dict[str, Any]) -> None:
    assert f["mount_cmd"]["rc"] != 0 and f["umount_cmd"]["rc"] != 0
    assert f["workspace_is_mount"] and f["workspace_still_mounted"]


@survey_check
def unshare_of_every_namespace_fails(f: dict[str, Any]) -> None:
    for flag, res in f["unshare"].items():
        assert res["rc"] != 0 and "Operation not permitted" in res["err"], (flag, res)


@survey_check
def chroot_fails(f: dict[str, Any]) -> None:
    assert f["chroot_cmd"]["rc"] != 0 and "Operation not permitted" in f["chroot_cmd"]["err"]


@survey_check
def su_does_not_give_root(f: dict[str, Any]) -> None:
    assert f["su_c_id"]["rc"] != 0 and "uid=0" not in f["su_c_id"]["out"]


@survey_check
def setuid_binaries_keep_uid_1000_and_no_caps(f: dict[str, Any]) -> None:
    assert all(f["setuid_bits"].values())  # the bait: these really are setuid root
    for binary, text in f["setuid_status"].items():
        st = status_fields(text)
        assert st["Name"] == os.path.basename(binary), (binary, text[:200])
        assert st["Uid"].split() == ["1000"] * 4 and st["Gid"].split() == ["1000"] * 4, binary
        assert caps(st)["CapEff"] == caps(st)["CapPrm"] == 0 and st["NoNewPrivs"] == "1"


@survey_check
def setuid_exec_is_not_a_secure_exec(f: dict[str, Any]) -> None:
    auxv = dict(ln.split(":", 1) for ln in f["auxv"]["out"].splitlines() if ln.startswith("AT_"))
    assert auxv["AT_EUID"].strip() == "1000" and auxv["AT_SECURE"].strip() == "0", auxv


# -- network ------------------------------------------------------------------------------


@survey_check
def only_loopback_interface(f: dict[str, Any]) -> None:
    names = [ln.split(":")[0].strip() for ln in f["net_dev"].splitlines()[2:] if ln.strip()]
    assert names == ["lo"]
    assert len([ln for ln in f["net_route"].splitlines() if ln.strip()]) <= 1  # header only


@survey_check
def egress_tcp_is_unreachable(f: dict[str, Any]) -> None:
    assert f["egress_tcp"] == errno.ENETUNREACH


@survey_check
def egress_udp_is_unreachable(f: dict[str, Any]) -> None:
    assert f["egress_udp"] == errno.ENETUNREACH


@survey_check
def egress_ipv6_is_unreachable(f: dict[str, Any]) -> None:
    assert f["egress_tcp6"] in {errno.ENETUNREACH, errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL}


@survey_check
def raw_and_packet_sockets_denied(f: dict[str, Any]) -> None:
    assert f["raw_socket"] == errno.EPERM and f["packet_socket"] == errno.EPERM


@pytest.mark.parametrize("check", list(SURVEY_CHECKS))
async def test_sandbox_view(ul: AsyncUnderlay, check: str) -> None:
    async def make() -> Any:
        sbx = await ul.sandbox.create(timeout=120)
        return await run_json(ul, sbx.id, SURVEY)

    SURVEY_CHECKS[check](await _once("survey", make))


# ======================================================================================
# raw syscalls through ctypes


@pytest.mark.parametrize("name", list(SYSCALLS))
async def test_syscall_is_denied(ul: AsyncUnderlay, name: str) -> None:
    async def make() -> Any:
        sbx = await ul.sandbox.create(timeout=120)
        exprs = {n: expr for n, (expr, _) in SYSCALLS.items()}
        return await run_json(ul, sbx.id, SYSCALLS_SCRIPT, json.dumps(exprs))

    got = (await _once("syscalls", make))[name]
    assert got == SYSCALLS[name][1], f"{name}: errno {got} ({os.strerror(got)})"


# ======================================================================================
# host files


async def test_host_shadow_is_not_readable(ul: AsyncUnderlay, sbx: Any) -> None:
    assert "root:" in Path("/etc/shadow").read_text()  # the bait
    out = await sh(ul, sbx.id, "cat /etc/shadow /etc/gshadow; echo rc=$?; ls -A /etc")
    assert out.stdout.startswith("rc=1\n") and "root:" not in out.stdout
    assert out.stderr.count("No such file") == 2, out.stderr
    assert not {"shadow", "gshadow", "sudoers", "ssh", "machine-id"} & set(out.stdout.split())


async def test_sandbox_etc_is_generated_not_the_hosts(ul: AsyncUnderlay, sbx: Any) -> None:
    host_users = {ln.split(":")[0] for ln in Path("/etc/passwd").read_text().splitlines()}
    out = await sh(ul, sbx.id, "cut -d: -f1 /etc/passwd; echo ---; cat /etc/hostname")
    users, hostname = out.stdout.split("---\n")
    assert set(users.split()) == {"root", "user", "nobody"} and host_users - set(users.split())
    assert hostname == "sandbox\n" != Path("/etc/hostname").read_text()


async def test_host_home_directories_are_absent(ul: AsyncUnderlay, sbx: Any) -> None:
    assert Path("/root").is_dir()  # the bait
    out = await sh(ul, sbx.id, "ls -A /; ls -A /root /home")
    assert set(out.stdout.split()) <= ALLOWED_ROOT, out.stdout
    assert out.exit_code != 0 and "No such file" in out.stderr


async def test_underlay_home_and_runtime_dir_are_unreachable(
    ul: AsyncUnderlay, sbx: Any, kernel: Kernel
) -> None:
    secret = f"ul-home-secret-{uuid.uuid4().hex}"
    bait = kernel.config.home / "escape-bait.txt"
    bait.parent.mkdir(parents=True, exist_ok=True)
    bait.write_text(secret)
    ws = (await instance(kernel, sbx.id)).workspace_dir
    paths = [
        kernel.config.home,
        bait,
        "/var/lib/underlay",
        ws,
        ws.parent / "bwrap.log",
        ws.parent.parent,
    ]
    script = "; ".join(f"test -e '{p}' && echo 'present {p}'" for p in paths)
    out = await sh(ul, sbx.id, f"{script}; cat '{bait}'; true")
    assert "present" not in out.stdout and secret not in out.stdout
    assert bait.read_text() == secret and ws.is_dir()  # the bait is real on the host


async def test_host_tmp_is_not_shared(ul: AsyncUnderlay, sbx: Any) -> None:
    secret = f"ul-tmp-secret-{uuid.uuid4().hex}"
    bait = Path("/tmp") / secret
    bait.write_text(secret)
    try:
        out = await sh(ul, sbx.id, f"ls -A /tmp; cat /tmp/{secret}; echo made > /tmp/{secret}-in")
        assert secret not in out.stdout and "No such file" in out.stderr
        assert not Path(f"/tmp/{secret}-in").exists()
    finally:
        bait.unlink()


# ======================================================================================
# another sandbox


async def _two_sandboxes(ul: AsyncUnderlay, kernel: Kernel) -> dict[str, Any]:
    secret = f"ul-sbx-secret-{uuid.uuid4().hex}"
    key, port = random.randint(0x5A000000, 0x5AFFFFFF), random.randint(20000, 40000)
    a = await ul.sandbox.create(timeout=120)
    b = await ul.sandbox.create(timeout=120)
    argv = [str(key), str(port)]
    hold = await ul.sandbox.commands.run(
        a.id, ["python3", "-c", HOLDER, secret, *argv], background=True
    )
    for _ in range(50):
        ready = await ul.sandbox.commands.output(a.id, hold.id, wait=0.2)
        if "ready" in ready.stdout:
            break
    assert "ready" in ready.stdout and int(ready.stdout.split()[1]) >= 0, ready
    ia, ib = await instance(kernel, a.id), await instance(kernel, b.id)
    args = (secret, *argv, str(ia.workspace_dir))
    st = os.stat(ia.workspace_dir)
    return {
        "b": await run_json(ul, b.id, SEEKER, *args),
        "a": await run_json(ul, a.id, SEEKER, *args),  # A reaches its own bait
        "uids": (ia.spec.uid, ib.spec.uid),
        "ws_a": (st.st_uid, stat.S_IMODE(st.st_mode)),
    }


CROSS_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {}


def cross_check(fn: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    CROSS_CHECKS[fn.__name__] = fn
    return fn


@cross_check
def files_by_any_path(r: dict[str, Any]) -> None:
    a, b = r["a"], r["b"]
    assert b["hits"] == [] and b["controls"] and b["scanned"] > 20, b
    assert {"/workspace/secret.txt", "/tmp/secret.txt", "/dev/shm/secret.txt"} <= set(a["hits"])
    assert b["direct_host_path"] == errno.ENOENT


@cross_check
def processes_are_invisible(r: dict[str, Any]) -> None:
    assert r["b"]["cmdline_hits"] == [] and r["a"]["cmdline_hits"]


@cross_check
def sysv_ipc_is_separate(r: dict[str, Any]) -> None:
    assert r["b"]["shm_errno"] == errno.ENOENT and r["a"]["shm_errno"] == 0


@cross_check
def abstract_unix_socket_is_unreachable(r: dict[str, Any]) -> None:
    assert r["b"]["unix"] == errno.ECONNREFUSED and r["a"]["unix"] == 0


@cross_check
def loopback_tcp_is_unreachable(r: dict[str, Any]) -> None:
    assert r["b"]["tcp"] == errno.ECONNREFUSED and r["a"]["tcp"] == 0


@cross_check
def distinct_unprivileged_host_uids(r: dict[str, Any]) -> None:
    ua, ub = r["uids"]
    assert ua != ub and min(ua, ub) >= UID_BASE
    assert r["ws_a"] == (ua, 0o700)  # B's host uid could not enter A's workspace either


@pytest.mark.parametrize("check", list(CROSS_CHECKS))
async def test_other_sandbox(ul: AsyncUnderlay, kernel: Kernel, check: str) -> None:
    CROSS_CHECKS[check](await _once("cross", lambda: _two_sandboxes(ul, kernel)))


# ======================================================================================
# host processes, host loopback, host environment


@pytest.mark.parametrize("target", ["root_process", "same_host_uid_process", "kill_minus_one"])
async def test_signals_cannot_reach_host_processes(
    ul: AsyncUnderlay, sbx: Any, kernel: Kernel, target: str
) -> None:
    uid = (await instance(kernel, sbx.id)).spec.uid
    argv = ["sleep", "300"]
    if target != "root_process":  # the very host uid the sandbox runs as: only the pid ns
        argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv]
    host = await asyncio.create_subprocess_exec(*argv)
    try:
        await asyncio.sleep(0.05)
        want_uid = 0 if target == "root_process" else uid
        assert status_fields(Path(f"/proc/{host.pid}/status").read_text())["Uid"].split()[0] == str(
            want_uid
        )
        if target == "kill_minus_one":
            with contextlib.suppress(errors.UnderlayError):  # it may kill its own supervisor
                await sh(ul, sbx.id, "kill -KILL -1", timeout=10)
        else:
            out = await sh(
                ul,
                sbx.id,
                f"kill -0 {host.pid}; echo $?; kill -KILL {host.pid}; "
                f"echo $?; kill -STOP {host.pid}; echo $?",
            )
            assert out.stdout.split() == ["1", "1", "1"], out
            assert out.stderr.count("No such process") == 3, out.stderr
        await asyncio.sleep(0.2)
        assert host.returncode is None
        assert status_fields(Path(f"/proc/{host.pid}/status").read_text())["State"][0] == "S"
    finally:
        host.kill()
        await host.wait()


CONNECT = r"""
import json, socket, sys
kind, where = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_INET if kind == "tcp" else socket.AF_UNIX)
s.settimeout(3)
try:
    s.connect(("127.0.0.1", int(where)) if kind == "tcp" else "\0" + where)
    e = 0
except OSError as exc:
    e = exc.errno
print(json.dumps(e))
"""


@pytest.mark.parametrize("kind", ["tcp", "abstract_unix"])
async def test_host_loopback_services_are_unreachable(
    ul: AsyncUnderlay, sbx: Any, kind: str
) -> None:
    accepted: list[str] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(kind)
        writer.close()

    name = f"ul-escape-{uuid.uuid4().hex}"
    if kind == "tcp":
        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        where = str(server.sockets[0].getsockname()[1])
    else:
        server = await asyncio.start_unix_server(on_connect, path="\0" + name)
        where = name
    async with server:
        assert await run_json(ul, sbx.id, CONNECT, kind, where) == errno.ECONNREFUSED
        await asyncio.sleep(0.2)
        assert accepted == []
        # the bait is real: the host itself reaches the server
        if kind == "tcp":
            _, w = await asyncio.open_connection("127.0.0.1", int(where))
        else:
            _, w = await asyncio.open_unix_connection("\0" + name)
        w.close()
        for _ in range(50):
            if accepted:
                break
            await asyncio.sleep(0.01)
        assert accepted == [kind]


async def test_host_environment_does_not_leak(
    ul: AsyncUnderlay, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = f"ul-env-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("UL_ESCAPE_HOST_SECRET", value)
    sbx = await ul.sandbox.create(timeout=60)
    script = (
        "import json, os\n"
        "envs = {}\n"
        "for p in [p for p in os.listdir('/proc') if p.isdigit()] + ['self']:\n"
        "    envs[p] = open('/proc/%s/environ' % p, 'rb').read().decode()\n"
        "print(json.dumps({'env': dict(os.environ), 'environs': envs}))\n"
    )
    got = await run_json(ul, sbx.id, script)
    dumped = json.dumps(got)
    assert value not in dumped and "UL_ESCAPE_HOST_SECRET" not in dumped
    assert got["environs"]["1"] == "" and "HOME=/workspace" in got["environs"]["self"]


# ======================================================================================
# host uids


async def test_sandbox_files_belong_to_an_unprivileged_host_uid(
    ul: AsyncUnderlay, sbx: Any, kernel: Kernel
) -> None:
    inst = await instance(kernel, sbx.id)
    out = await sh(ul, sbx.id, "id -u; echo hi > made; mkdir dir; ln -s /etc/shadow link")
    assert out.stdout.split() == ["1000"]
    assert inst.spec.uid >= UID_BASE and inst.spec.uid == inst.spec.gid
    for name in ("made", "dir", "link"):
        st = os.lstat(inst.workspace_dir / name)
        assert (st.st_uid, st.st_gid) == (inst.spec.uid, inst.spec.gid), name
    st = os.stat(inst.workspace_dir)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (inst.spec.uid, 0o700)


async def test_sandbox_processes_run_as_the_unprivileged_host_uid(
    ul: AsyncUnderlay, sbx: Any, kernel: Kernel
) -> None:
    inst = await instance(kernel, sbx.id)
    await ul.sandbox.commands.run(sbx.id, "sleep 30", background=True)
    await asyncio.sleep(0.1)
    pids = cgroup_pids(inst)
    cmds = {host_cmdline(p).split()[0] for p in pids}
    assert len(pids) >= 4 and {"bwrap", "/.ul/init", "sleep"} <= cmds, cmds
    for pid in pids:
        st = status_fields(Path(f"/proc/{pid}/status").read_text())
        assert st["Uid"].split() == [str(inst.spec.uid)] * 4, (pid, st["Uid"])
        assert st["Gid"].split() == [str(inst.spec.gid)] * 4 and st["Groups"] == ""
        assert caps(st)["CapEff"] == caps(st)["CapPrm"] == 0, (pid, caps(st))


# ======================================================================================
# resource limits


async def test_memory_bomb_is_killed_inside_its_limit(ul: AsyncUnderlay) -> None:
    sbx = await ul.sandbox.create(timeout=60, limits={"memory_mb": 64})
    out = await ul.sandbox.commands.run(
        sbx.id, ["python3", "-c", "x = b'\\1' * (512 << 20); print(len(x))"], timeout=30
    )
    assert out.exit_code == 137 or "MemoryError" in out.stderr, out
    assert str(512 << 20) not in out.stdout
    m = await ul.sandbox.metrics(sbx.id)
    assert 32 << 20 < m.memory_peak_bytes <= 64 << 20, m
    assert (await sh(ul, sbx.id, "echo alive")).stdout == "alive\n"


async def test_fork_bomb_hits_the_pids_limit(ul: AsyncUnderlay, kernel: Kernel) -> None:
    sbx = await ul.sandbox.create(timeout=60, limits={"pids": 32})
    inst = await instance(kernel, sbx.id)
    out = await sh(ul, sbx.id, "for i in $(seq 200); do sleep 5 & done; echo all-started", 20)
    assert "all-started" not in out.stdout and "fork" in out.stderr.lower(), out
    assert (await ul.sandbox.metrics(sbx.id)).pids <= 32
    pids = cgroup_pids(inst)
    assert 20 < len(pids) <= 32, len(pids)  # it did fork, up to the limit and no further
    host = await asyncio.create_subprocess_exec("true")  # the host still forks
    assert await host.wait() == 0
    assert (await ul.sandbox.destroy(sbx.id)).state == "destroyed"
    assert not any(alive(p) for p in pids) and cgroup_pids(inst) == set()


@pytest.mark.parametrize("where", ["workspace", "tmp"])
async def test_disk_fill_stops_at_disk_mb(ul: AsyncUnderlay, kernel: Kernel, where: str) -> None:
    sbx = await ul.sandbox.create(timeout=60, limits={"disk_mb": 8})
    path = "/workspace/fill" if where == "workspace" else "/tmp/fill"
    out = await sh(ul, sbx.id, f"head -c 50M /dev/zero > {path}; stat -c %s {path}")
    assert "No space left on device" in out.stderr, out
    assert int(out.stdout.split()[-1]) <= 8 << 20
    ws = (await instance(kernel, sbx.id)).workspace_dir
    vfs = os.statvfs(ws)  # the host-side mount itself is capped
    assert vfs.f_blocks * vfs.f_frsize <= 8 << 20
    assert (await ul.sandbox.metrics(sbx.id)).disk_used_bytes <= 8 << 20
    assert (await sh(ul, sbx.id, f"rm {path}; echo ok > small")).exit_code == 0  # usable again


async def test_dev_shm_fill_is_bounded_by_the_memory_limit(ul: AsyncUnderlay) -> None:
    # /dev is bwrap's own tmpfs: not capped by disk_mb, but its pages are charged to the
    # sandbox's memory cgroup, so filling it ends inside the sandbox, never on the host
    sbx = await ul.sandbox.create(timeout=60, limits={"memory_mb": 64, "disk_mb": 8})
    with contextlib.suppress(errors.Unavailable):
        await sh(ul, sbx.id, "head -c 200M /dev/zero > /dev/shm/fill; echo rc=$?", 20)
    m = await ul.sandbox.metrics(sbx.id)
    assert m.memory_peak_bytes <= 64 << 20, m
    assert (await ul.sandbox.destroy(sbx.id)).state == "destroyed"


async def test_cpu_hog_is_throttled_to_its_quota(ul: AsyncUnderlay) -> None:
    sbx = await ul.sandbox.create(timeout=60, limits={"cpus": 0.2})
    before = (await ul.sandbox.metrics(sbx.id)).cpu_seconds
    t0 = time.monotonic()
    await sh(
        ul, sbx.id, "for i in 1 2 3 4; do timeout 1.5 sh -c 'while :; do :; done' & done; wait", 15
    )
    wall = time.monotonic() - t0
    used = (await ul.sandbox.metrics(sbx.id)).cpu_seconds - before
    assert 1.4 < wall < 5 and 0.05 < used <= 0.5, (wall, used)


# ======================================================================================
# the files API against symlinks, FIFOs and races planted by the sandbox


def _host_marker_paths(marker: str) -> list[Path]:
    found = []
    for d in ("/", "/tmp", "/etc", "/root", "/var/lib/underlay"):
        found += [p for p in Path(d).iterdir() if marker in p.name]
    return found


async def test_files_api_refuses_planted_symlinks_and_fifos(ul: AsyncUnderlay, sbx: Any) -> None:
    marker = f"ul-plant-{uuid.uuid4().hex}"
    bait = Path(f"/tmp/{marker}-host")
    bait.write_text("HOST-SECRET")
    try:
        await sh(
            ul,
            sbx.id,
            f"ln -s / rootlink; ln -s /etc etclink; ln -s {bait} hostfile; "
            "mkfifo fifo; mkdir d; ln -s /root d/r",
        )
        attempts: list[Awaitable[Any]] = [
            ul.sandbox.files.read(sbx.id, "hostfile"),
            ul.sandbox.files.read(sbx.id, "etclink/shadow"),
            ul.sandbox.files.read(sbx.id, "fifo"),
            ul.sandbox.files.write(sbx.id, "fifo", "x"),
            ul.sandbox.files.write(sbx.id, f"rootlink/tmp/{marker}", "x"),
            ul.sandbox.files.write(sbx.id, f"d/r/{marker}", "x"),
            ul.sandbox.files.write(sbx.id, "hostfile", "overwritten"),
            ul.sandbox.files.list(sbx.id, "etclink"),
            ul.sandbox.files.list(sbx.id, "d/r", depth=3),
        ]
        for attempt in attempts:
            with pytest.raises(errors.InvalidInput):
                await asyncio.wait_for(attempt, 5)  # a FIFO must not hang the host either
        listing = await ul.sandbox.files.list(sbx.id, depth=3)
        assert {f.path: f.type for f in listing.items}["/workspace/rootlink"] == "symlink"
        assert not any(f.name in {"shadow", "passwd", "root"} for f in listing.items)
        await ul.sandbox.files.remove(sbx.id, "hostfile")
        await ul.sandbox.files.remove(sbx.id, "etclink", recursive=True)
        assert bait.read_text() == "HOST-SECRET" and Path("/etc/passwd").is_file()
        assert _host_marker_paths(marker) == [bait]
    finally:
        bait.unlink()


async def test_files_api_survives_a_symlink_swap_race(ul: AsyncUnderlay, sbx: Any) -> None:
    marker = f"ul-race-{uuid.uuid4().hex}"
    decoy, victim = Path(f"/tmp/{marker}-decoy"), Path(f"/tmp/{marker}-victim")
    decoy.write_text("HOST-SECRET")
    victim.write_text("keep me")
    outcomes: dict[str, int] = {}
    try:
        bg = await ul.sandbox.commands.run(
            sbx.id, ["python3", "-c", SWAPPER, marker], background=True
        )
        for _ in range(50):
            if "ready" in (await ul.sandbox.commands.output(sbx.id, bg.id, wait=0.2)).stdout:
                break
        f = ul.sandbox.files
        for _ in range(100):
            ops: list[Awaitable[Any]] = [
                f.write(sbx.id, f"race_tmp/{marker}", "x"),
                f.write(sbx.id, f"race_root/tmp/{marker}", "x"),
                f.write(sbx.id, f"race_root/root/{marker}", "x"),
                f.write(sbx.id, f"race_etc/{marker}", "x"),
                f.read(sbx.id, f"race_tmp/{marker}-decoy"),
                f.list(sbx.id, "race_etc"),
                f.remove(sbx.id, f"race_tmp/{marker}-victim"),
            ]
            for op in ops:
                try:
                    res = await op
                except errors.UnderlayError as exc:
                    outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
                    continue
                outcomes["ok"] = outcomes.get("ok", 0) + 1
                dumped = res.model_dump_json() if res is not None else ""
                assert "HOST-SECRET" not in dumped and '"shadow"' not in dumped
        await f.write(sbx.id, "stop", "")
        for _ in range(50):  # a read returns at once while output is pending: pace it
            done = await ul.sandbox.commands.output(sbx.id, bg.id)
            if "swaps" in done.stdout:
                break
            await asyncio.sleep(0.2)
        swaps = int(done.stdout.split("swaps")[1].split()[0])
        assert swaps >= 1000 and outcomes.get("InvalidInput", 0) > 0, (swaps, outcomes)
        assert decoy.read_text() == "HOST-SECRET" and victim.read_text() == "keep me"
        assert sorted(_host_marker_paths(marker)) == sorted([decoy, victim]), outcomes
    finally:
        for p in _host_marker_paths(marker):
            p.unlink()


async def test_recursive_remove_racing_a_fifo_symlink_never_blocks_the_host(
    ul: AsyncUnderlay, sbx: Any
) -> None:
    """files.remove(recursive=True) must not be steerable into open()ing a FIFO.

    The sandbox flips ``victim/dN`` between a directory and a symlink to ``victim/f``, a
    FIFO. A walker that opens entries without O_NOFOLLOW|O_NONBLOCK (shutil.rmtree opens
    ``os.open(name, O_RDONLY, dir_fd=...)`` after its lstat) blocks in open() until a
    writer appears, and the files API runs on the kernel's event loop: every syscall of
    every tenant would stop for as long as the sandbox likes. Here the sandbox releases
    the FIFO after a few seconds so the test ends; a hostile one never would.
    """
    race_for, release_after = 2.5, 3.5
    bg = await ul.sandbox.commands.run(
        sbx.id, ["python3", "-c", FIFO_SWAPPER, str(race_for), str(release_after)], background=True
    )
    for _ in range(50):
        if "ready" in (await ul.sandbox.commands.output(sbx.id, bg.id, wait=0.2)).stdout:
            break
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    slowest, attempts, end = 0.0, 0, time.monotonic() + race_for - 0.5
    try:
        while time.monotonic() < end:
            t0 = time.monotonic()
            with contextlib.suppress(errors.UnderlayError):
                await ul.sandbox.files.remove(sbx.id, "victim", recursive=True)
            attempts += 1
            slowest = max(slowest, time.monotonic() - t0)
            await asyncio.sleep(0)
    finally:
        tick.cancel()
    out = ""
    for _ in range(60):  # each read returns at once when output is pending: pace it
        res = await ul.sandbox.commands.output(sbx.id, bg.id)
        out = res.stdout
        if "swaps" in out or not res.running:
            break
        await asyncio.sleep(0.2)
    assert "swaps" in out, (out, res.stderr, res.exit_code)
    assert "HOST-OPENED-FIFO" not in out, (
        f"the host opened the sandbox's FIFO during files.remove and blocked the kernel's "
        f"event loop for {max(gaps, default=0.0):.1f} s (one remove took {slowest:.1f} s, attempt "
        f"{attempts})"
    )
    assert slowest < 1.0 and max(gaps, default=0.0) < 1.0, (slowest, max(gaps, default=0.0))
    assert attempts >= 10, attempts  # the race was run, not skipped
