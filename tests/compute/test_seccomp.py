"""The seccomp filter: its shape, its decisions (by a small BPF interpreter, for both
arches), and its effect on real processes inside bubblewrap.

Syscall numbers are taken from this machine's kernel headers, independently of the
module's hard-coded table, so a wrong number in the table shows up as a failure.
Sandbox runs are done twice where the kernel itself could answer EPERM (no capabilities
inside the sandbox): once with the real program, and once with its EPERM returns patched
to EHWPOISON, an errno no syscall here returns naturally -- so EPERM is the filter's doing.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import re
import shutil
import signal
import struct
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from underlay.compute.seccomp import DENIED, build_filter, seccomp_fd

HEADERS = {
    "x86_64": Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
    "aarch64": Path("/usr/include/asm-generic/unistd.h"),
}
NEWER_THAN_HEADERS = {"open_tree_attr": 467}  # Linux 6.15, same number on every arch
X86_ONLY = {"iopl", "ioperm", "uselib", "ustat", "sysfs"}
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
REQUIRED = """keyctl add_key request_key bpf io_uring_setup io_uring_enter io_uring_register
ptrace process_vm_readv process_vm_writev mount umount2 move_mount open_tree fsopen fsconfig
fsmount fspick mount_setattr pivot_root chroot unshare setns kexec_load kexec_file_load
init_module finit_module delete_module perf_event_open userfaultfd swapon swapoff reboot acct
quotactl lookup_dcookie name_to_handle_at open_by_handle_at iopl ioperm syslog vhangup""".split()

KILL, ALLOW = 0x80000000, 0x7FFF0000
EPERM, ENOSYS = 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
NAMESPACE_FLAGS = [0x20000, 0x2000000, 0x4000000, 0x8000000, CLONE_NEWUSER, 0x20000000]
FORK_FLAGS = 0x01200011  # CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD
THREAD_FLAGS = 0x003D0F00  # what glibc's pthread_create passes
TIOCSTI, TIOCLINUX, TCGETS = 0x5412, 0x541C, 0x5401
EHWPOISON = 133


def numbers(arch: str) -> dict[str, int]:
    header = HEADERS[arch]
    assert header.exists(), f"{header} is missing (scripts/setup.sh installs libc6-dev)"
    found = re.findall(r"^#define __NR_(\w+)\s+(\d+)\s*$", header.read_text(), re.M)
    return {**NEWER_THAN_HEADERS, **{name: int(nr) for name, nr in found}}


def decode(program: bytes) -> list[tuple[int, int, int, int]]:
    return list(struct.iter_unpack("<HBBI", program))


def run_bpf(program: bytes, nr: int, args: Sequence[int] = (), *, arch: int) -> int:
    """Evaluate the program on one struct seccomp_data; return the SECCOMP_RET_* value."""
    padded = [*args, 0, 0, 0, 0, 0, 0][:6]
    data = struct.pack("<iIQ6Q", nr, arch, 0, *padded)
    insns, acc, pc = decode(program), 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == 0x20:
            (acc,) = struct.unpack_from("<I", data, k)
            pc += 1
        elif code == 0x06:
            return k
        else:
            taken = {0x15: acc == k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += 1 + (jt if taken else jf)


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_program_shape(arch: str) -> None:
    program = build_filter(arch)
    assert len(program) % 8 == 0
    insns = decode(program)
    assert 0 < len(insns) <= 4096
    assert insns[0] == (0x20, 0, 0, 4)  # first thing loaded is seccomp_data.arch
    assert insns[-1][0] == 0x06
    for pc, (code, jt, jf, _k) in enumerate(insns):
        assert code in (0x20, 0x06, 0x15, 0x35, 0x45)
        if code == 0x06:
            assert (jt, jf) == (0, 0)
        else:  # loads fall through, jumps land on an instruction that exists
            assert pc + 1 + max(jt, jf) < len(insns)


def test_arches_differ_default_is_native_and_unknown_is_rejected() -> None:
    assert build_filter("aarch64") != build_filter("x86_64")
    if platform.machine() in AUDIT_ARCH:
        assert build_filter() == build_filter(platform.machine())
    for arch in ("riscv64", "i686", "armv7l", ""):
        with pytest.raises(ValueError, match="unsupported seccomp architecture"):
            build_filter(arch)


def test_denied_list_covers_the_required_syscalls() -> None:
    assert len(set(DENIED)) == len(DENIED)
    assert set(REQUIRED) <= set(DENIED)
    assert {"clone", "clone3", "ioctl", "personality"}.isdisjoint(DENIED)


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_decisions(arch: str) -> None:
    nrs, program = numbers(arch), build_filter(arch)

    def decide(name: str, *args: int) -> int:
        return run_bpf(program, nrs[name], args, arch=AUDIT_ARCH[arch])

    assert {n for n in DENIED if n not in nrs} == (set() if arch == "x86_64" else X86_ONLY)
    for name in DENIED:
        if name in nrs:
            assert decide(name) == EPERM, name
    assert decide("clone3") == ENOSYS
    for flag in [*NAMESPACE_FLAGS, CLONE_NEWNET]:
        assert decide("clone", flag | FORK_FLAGS) == EPERM
        assert decide("clone", (1 << 32) | flag) == EPERM
    assert decide("clone", FORK_FLAGS) == ALLOW
    assert decide("clone", THREAD_FLAGS) == ALLOW
    assert decide("clone", 0x80) == ALLOW  # exit signal 0x80, not CLONE_NEWTIME
    for cmd in (TIOCSTI, TIOCLINUX, (1 << 32) | TIOCSTI):
        assert decide("ioctl", 0, cmd) == EPERM
    assert decide("ioctl", 0, TCGETS) == ALLOW
    assert decide("personality", 0) == ALLOW
    assert decide("personality", 0xFFFFFFFF) == ALLOW
    assert decide("personality", 8) == EPERM  # PER_LINUX32
    assert decide("personality", 0x0040000) == EPERM  # ADDR_NO_RANDOMIZE
    for name in ("read", "write", "openat", "execve", "wait4", "exit_group", "getpid"):
        assert decide(name) == ALLOW
    assert run_bpf(program, nrs["getpid"], arch=0x40000003) == KILL  # i386
    assert run_bpf(program, nrs["getpid"], arch=0x40000028) == KILL  # AArch32


def test_x32_is_killed_but_the_no_syscall_probe_is_not() -> None:
    program, native = build_filter("x86_64"), AUDIT_ARCH["x86_64"]
    assert run_bpf(program, 0x40000000 + 250, arch=native) == KILL  # x32 keyctl
    assert run_bpf(program, 0x40000000 + 39, arch=native) == KILL
    assert run_bpf(program, -1, arch=native) == ALLOW  # kernel answers ENOSYS


def test_seccomp_fd_is_a_sealed_readable_copy() -> None:
    program = build_filter("x86_64")
    fd = seccomp_fd(program)
    try:
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0
        assert os.read(fd, len(program) + 1) == program
        assert os.read(fd, 1) == b""
        assert not os.get_inheritable(fd)
        with pytest.raises(PermissionError):
            os.pwrite(fd, b"\0" * 8, 0)
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 0)
        assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_SEAL
    finally:
        os.close(fd)


# --- inside bubblewrap ---------------------------------------------------------------

BWRAP = [
    "bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
    "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
    "--symlink", "usr/lib64", "/lib64", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
]  # fmt: skip
PYTHON = ["/usr/bin/python3", "-I", "-S", "-u", "-c"]
PROBE = r"""
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(64)
out = {}
for label, nr, args in json.loads(sys.argv[1]):
    args = [ctypes.addressof(buf) if a == "buf" else a for a in args]
    ctypes.set_errno(0)
    rc = libc.syscall(*[ctypes.c_long(a) for a in [nr, *args]])
    if rc == 0 and label == "clone_newnet":
        os._exit(0)  # the child of a clone that should not have happened
    out[label] = ctypes.get_errno() if rc == -1 else 0
print(json.dumps(out))
"""

Sandbox = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    assert platform.machine() in AUDIT_ARCH, "underlay's seccomp filter knows x86_64, aarch64"
    assert shutil.which("bwrap"), "bwrap is missing (scripts/setup.sh installs bubblewrap)"
    probe = subprocess.run([*BWRAP, "--", "/bin/true"], check=False, capture_output=True)
    assert probe.returncode == 0, f"bwrap cannot create a sandbox here: {probe.stderr!r}"

    def run(
        *argv: str, program: bytes | None = None, options: Sequence[str] = ()
    ) -> subprocess.CompletedProcess[str]:
        fd = seccomp_fd(build_filter() if program is None else program)
        try:
            return subprocess.run(
                [*BWRAP, *options, "--seccomp", str(fd), "--", *argv], pass_fds=(fd,),
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
            )  # fmt: skip
        finally:
            os.close(fd)

    return run


def with_eperm_as_ehwpoison(program: bytes) -> bytes:
    patched = [
        (code, jt, jf, (EPERM & ~0xFFFF) | EHWPOISON if (code, k) == (0x06, EPERM) else k)
        for code, jt, jf, k in decode(program)
    ]
    assert patched != decode(program)
    return b"".join(struct.pack("<HBBI", *insn) for insn in patched)


def test_denied_syscalls_fail_inside_the_sandbox(sandbox: Sandbox) -> None:
    nrs = numbers(platform.machine())
    calls: list[tuple[str, int, list[int | str]]] = [
        (name, nrs[name], [0] * 6) for name in DENIED if name in nrs
    ]
    calls += [
        ("unshare_newuser", nrs["unshare"], [CLONE_NEWUSER]),
        ("clone_newnet", nrs["clone"], [CLONE_NEWNET | signal.SIGCHLD, 0, 0, 0, 0]),
        ("tiocsti", nrs["ioctl"], [0, TIOCSTI, "buf"]),
        ("tiocsti_high_bits", nrs["ioctl"], [0, (1 << 32) | TIOCSTI, "buf"]),
        ("tioclinux", nrs["ioctl"], [0, TIOCLINUX, "buf"]),
        ("personality_linux32", nrs["personality"], [8]),
    ]
    others = [
        ("clone3", nrs["clone3"], [0, 0]),
        ("personality_query", nrs["personality"], [0xFFFFFFFF]),
        ("getpid", nrs["getpid"], []),
    ]
    argv = [*PYTHON, PROBE, json.dumps([*calls, *others])]
    expected = {label: errno.EPERM for label, _, _ in calls}
    expected |= {"clone3": errno.ENOSYS, "personality_query": 0, "getpid": 0}

    real = sandbox(*argv)
    assert real.returncode == 0, real.stderr
    assert json.loads(real.stdout) == expected

    patched = sandbox(*argv, program=with_eperm_as_ehwpoison(build_filter()))
    assert patched.returncode == 0, patched.stderr
    assert json.loads(patched.stdout) == {
        label: EHWPOISON if err == errno.EPERM else err for label, err in expected.items()
    }


ORDINARY = r"""
import os, subprocess, threading
assert "Seccomp:\t2" in open("/proc/self/status").read()  # the filter is really on
seen = []
threads = [threading.Thread(target=seen.append, args=(i,)) for i in range(4)]
for t in threads: t.start()
for t in threads: t.join()
assert sorted(seen) == [0, 1, 2, 3]
pid = os.fork()
if pid == 0:
    os._exit(7)
assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7
with open("/tmp/f", "w") as f: f.write("data")
assert open("/tmp/f").read() == "data"
out = subprocess.run(["/bin/sh", "-c", "ls /usr && echo $((6*7))"], capture_output=True)
assert out.returncode == 0 and out.stdout.split()[-1] == b"42", out
print("ok")
"""


def test_ordinary_programs_still_work(sandbox: Sandbox) -> None:
    py = sandbox(*PYTHON, ORDINARY)
    assert (py.returncode, py.stdout) == (0, "ok\n"), py.stderr
    sh = sandbox("sh", "-c", "ls / >/dev/null && echo hi >/tmp/x && cat /tmp/x")
    assert (sh.returncode, sh.stdout) == (0, "hi\n"), sh.stderr


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x32 and int 0x80 are x86_64 ABIs")
def test_x32_and_i386_syscalls_kill_the_process(sandbox: Sandbox, tmp_path: Path) -> None:
    x32 = "import ctypes; c = ctypes.CDLL(None); print(c.syscall(-1)); c.syscall(0x40000027)"
    killed = sandbox(*PYTHON, x32)
    assert (killed.returncode, killed.stdout) == (128 + signal.SIGSYS, "-1\n"), killed.stderr

    assert shutil.which("gcc"), "gcc is missing (scripts/setup.sh installs it)"
    source = tmp_path / "int80.c"
    source.write_text(
        'int main(void) { long r; __asm__ volatile ("int $0x80" : "=a"(r) : "a"(20L));'
        " return r > 0 ? 0 : 1; }\n"  # i386 getpid
    )
    subprocess.run(["gcc", "-O0", "-o", str(tmp_path / "int80"), str(source)], check=True)
    bind = ["--ro-bind", str(tmp_path / "int80"), "/int80"]
    unfiltered = subprocess.run([*BWRAP, *bind, "/int80"], check=False)
    assert unfiltered.returncode == 0, "without the filter, the i386 getpid must succeed"
    sandboxed = sandbox("/int80", options=bind)
    assert sandboxed.returncode == 128 + signal.SIGSYS
