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

import errno
import json
import os
import random
import socket
import stat
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from underlay.kernel.kernel import Kernel
from underlay.sdk.client import AsyncUnderlay

from .escape_helpers import (
    HOLDER,
    SEEKER,
    SURVEY,
    SYSCALLS,
    SYSCALLS_SCRIPT,
    UID_BASE,
    caps,
    host_cmdline,
    instance,
    run_json,
    sh,
    status_fields,
)

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
async def test_sandbox_view(ul: AsyncUnderlay, kernel: Kernel, check: str) -> None:
    async def make() -> Any:  # through a waiting launcher (the syscalls' sandbox is not)
        launchers = (await kernel.compute()).driver.launchers  # type: ignore[attr-defined]
        await launchers.wait_ready()
        taken = launchers.taken
        sbx = await ul.sandbox.create(timeout=120)
        assert launchers.taken == taken + 1
        return await run_json(ul, sbx.id, SURVEY)

    SURVEY_CHECKS[check](await _once("survey", make))


# ======================================================================================
# raw syscalls through ctypes


@pytest.mark.parametrize("name", list(SYSCALLS))
async def test_syscall_is_denied(ul: AsyncUnderlay, name: str) -> None:
    async def make() -> Any:  # spawned: with no launcher waiting (see test_sandbox_view)
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
