"""Scripts the escape suite (``test_escape.py``) runs inside sandboxes, and small helpers.

Every script is run as ``python3 -c SCRIPT ARGS...`` and prints one JSON object as its
last line of output. Syscall numbers are x86_64 (asm/unistd_64.h). Nothing here sends
traffic off the machine: a sandbox's network namespace has only loopback, so a connect()
to a public address fails inside it before any packet exists.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from underlay.compute.interface import Instance
from underlay.kernel.kernel import Kernel
from underlay.sdk.client import AsyncUnderlay

UID_BASE = 200_000


async def sh(ul: AsyncUnderlay, sid: str, cmd: str, timeout: float = 30.0) -> Any:
    return await ul.sandbox.commands.run(sid, cmd, timeout=timeout)


async def instance(kernel: Kernel, sid: str) -> Instance:
    return (await kernel.compute()).instances[sid]


def caps(status: dict[str, str]) -> dict[str, int]:
    return {k: int(status[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}


def host_cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


# --------------------------------------------------------------------------------------
# helpers


async def run_json(
    ul: AsyncUnderlay, sid: str, script: str, *args: str, timeout: float = 30.0
) -> Any:
    """Run ``python3 -c script args`` in the sandbox; the JSON of its last stdout line."""
    out = await ul.sandbox.commands.run(sid, ["python3", "-c", script, *args], timeout=timeout)
    assert out.exit_code == 0 and not out.timed_out, (out.exit_code, out.stdout, out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def status_fields(text: str) -> dict[str, str]:
    """``/proc/PID/status`` as a dict (``Uid`` -> ``"1000\\t1000\\t1000\\t1000"``)."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key] = value.strip()
    return fields


def cgroup_pids(inst: Instance) -> set[int]:
    """Host pids of every process in the sandbox's cgroup (all controllers)."""
    pids: set[int] = set()
    for procs in inst.handle.cgroup.join_paths():
        with contextlib.suppress(FileNotFoundError):
            pids.update(int(x) for x in Path(procs).read_text().split())
    return pids


def alive(pid: int) -> bool:
    try:
        state = status_fields(Path(f"/proc/{pid}/status").read_text())["State"]
    except FileNotFoundError:
        return False
    return not state.startswith(("Z", "X"))


# --------------------------------------------------------------------------------------
# the survey: what an unprivileged process inside a default sandbox can see and do

SURVEY = r'''
import ctypes, errno, fcntl, json, os, pty, socket, stat, subprocess, termios, time

OWN_FDS = sorted(os.listdir("/proc/self/fd"), key=int)  # before this script opens anything
libc = ctypes.CDLL(None, use_errno=True)
F = {"own_fds": OWN_FDS}


def err(fn, *args):
    """errno of fn(*args), 0 if it succeeded."""
    try:
        fn(*args)
    except OSError as e:
        return e.errno
    return 0


def try_open(path, flags):
    """errno of opening path (never blocks, never writes), 0 if it opened."""
    try:
        os.close(os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC))
    except OSError as e:
        return e.errno
    return 0


def read(path, cap=8 << 20):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        return "<errno %d>" % e.errno
    chunks, size = [], 0
    try:
        while size < cap:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        return "<errno %d>" % e.errno
    finally:
        os.close(fd)
    return b"".join(chunks).decode(errors="replace")


def run(argv, env=None):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10,
                           stdin=subprocess.DEVNULL, env=env)
    except OSError as e:
        return {"rc": 127, "out": "", "err": "cannot run %s: %s" % (argv[0], e)}
    return {"rc": p.returncode, "out": p.stdout, "err": p.stderr}


# -- processes, descriptors -------------------------------------------------------------
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
F["pids"] = pids
F["cmdlines"] = {str(p): read("/proc/%d/cmdline" % p).replace("\0", " ") for p in pids}
F["environs"] = {str(p): read("/proc/%d/environ" % p) for p in pids}
links = {}
for p in pids:
    try:
        fds = os.listdir("/proc/%d/fd" % p)
    except OSError:
        continue
    for fd in fds:
        try:
            links["%d/%s" % (p, fd)] = os.readlink("/proc/%d/fd/%s" % (p, fd))
        except OSError:
            pass
F["fd_links"] = links
init = [p for p in pids if F["cmdlines"][str(p)].startswith("/.ul/init")]
F["init_pids"] = init
F["reopen"] = {}
for p in [1] + init:
    # fd 0: the host's command pipe; fd 1: the frame pipe to the host; fd 2: the host log
    for fd, flags in ((0, os.O_RDONLY), (1, os.O_WRONLY), (2, os.O_WRONLY)):
        F["reopen"]["/proc/%d/fd/%d" % (p, fd)] = try_open("/proc/%d/fd/%d" % (p, fd), flags)
F["ls_fd"] = run(["ls", "/proc/self/fd"])["out"].split()

# -- identity, capabilities, namespaces --------------------------------------------------
F["status"] = read("/proc/self/status")
F["ids"] = [os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups()]
F["cgroup"] = read("/proc/self/cgroup")
F["mountinfo"] = read("/proc/self/mountinfo")
F["hostname"] = socket.gethostname()
F["etc_hostname"] = read("/etc/hostname")
F["proc_hostname"] = read("/proc/sys/kernel/hostname")
F["sethostname"] = 0 if libc.sethostname(b"pwned", 5) == 0 else ctypes.get_errno()
F["env"] = dict(os.environ)

# -- /proc and /sys ----------------------------------------------------------------------
F["sysctl_open_for_write"] = {p: try_open(p, os.O_WRONLY) for p in (
    "/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe", "/proc/sys/vm/drop_caches",
    "/proc/sys/kernel/hostname", "/proc/sys/net/ipv4/ip_forward",
    "/proc/sys/kernel/randomize_va_space", "/proc/sys/fs/protected_symlinks")}
F["kcore"] = try_open("/proc/kcore", os.O_RDONLY)
F["proc_kmsg"] = try_open("/proc/kmsg", os.O_RDONLY)
F["kpagecount"] = try_open("/proc/kpagecount", os.O_RDONLY)
F["sysrq"] = try_open("/proc/sysrq-trigger", os.O_WRONLY)
ks = read("/proc/kallsyms")
F["kallsyms_lines"] = len(ks.splitlines())
F["kallsyms_nonzero"] = [ln for ln in ks.splitlines()[:200000]
                         if ln and not ln.startswith("0000000000000000")][:3]
if not os.path.lexists("/sys"):
    F["sys"] = "absent"
else:
    F["sys"] = "ro" if os.statvfs("/sys").f_flag & os.ST_RDONLY else "rw"

# -- devices and terminals ---------------------------------------------------------------
F["dev"] = sorted(os.listdir("/dev"))
F["dev_present"] = {p: os.path.lexists(p) for p in (
    "/dev/sda", "/dev/vda", "/dev/nvme0n1", "/dev/mem", "/dev/kmem", "/dev/port", "/dev/kmsg",
    "/dev/loop0", "/dev/loop-control", "/dev/mapper", "/dev/fuse", "/dev/net/tun",
    "/dev/watchdog", "/dev/console", "/dev/tty0", "/dev/tty1", "/dev/ttyS0", "/dev/vsock",
    "/dev/kvm", "/dev/cpu", "/dev/dri", "/dev/hwrng")}
F["mknod"] = {
    "char_null": err(os.mknod, "/tmp/n1", stat.S_IFCHR | 0o666, os.makedev(1, 3)),
    "char_mem": err(os.mknod, "/workspace/n2", stat.S_IFCHR | 0o666, os.makedev(1, 1)),
    "block_vda": err(os.mknod, "/tmp/n3", stat.S_IFBLK | 0o666, os.makedev(254, 0)),
    "char_in_dev": err(os.mknod, "/dev/n4", stat.S_IFCHR | 0o666, os.makedev(1, 11)),
}
F["dev_tty"] = try_open("/dev/tty", os.O_RDWR)
master, slave = pty.openpty()
F["tiocsti"] = err(fcntl.ioctl, slave, termios.TIOCSTI, b"x")
F["tioclinux"] = err(fcntl.ioctl, slave, 0x541C, b"\x02")
F["tcgets_works"] = err(fcntl.ioctl, slave, termios.TCGETS, b"\0" * 64)

# -- the file system ---------------------------------------------------------------------
F["readonly"] = {p: try_open(p, os.O_WRONLY | os.O_CREAT) for p in (
    "/escape", "/usr/escape", "/etc/escape", "/bin/escape", "/run/escape", "/.ul/escape",
    "/usr/bin/env", "/etc/passwd", "/etc/ld.so.cache", "/.ul/init")}
F["chmod_usr"] = err(os.chmod, "/usr/bin/env", 0o4777)
F["hardlink"] = {src: err(os.link, src, "/workspace/hl" + src.replace("/", "-"))
                 for src in ("/etc/passwd", "/.ul/init", "/usr/bin/env")}
F["workspace_is_mount"] = os.path.ismount("/workspace")

# -- privileged tools --------------------------------------------------------------------
F["unshare"] = {flag: run(["unshare", *flag.split(), "true"])
                for flag in ("-U", "-n", "-m", "-i", "-u", "-C", "-T", "-p -f", "-r")}
F["mount_cmd"] = run(["mount", "-t", "tmpfs", "none", "/tmp"])
F["umount_cmd"] = run(["umount", "-l", "/workspace"])
F["workspace_still_mounted"] = os.path.ismount("/workspace")
F["chroot_cmd"] = run(["/usr/sbin/chroot", "/", "/bin/true"])
F["su_c_id"] = run(["su", "-c", "id"])
F["auxv"] = run(["/usr/bin/passwd", "-S"], env={"LD_SHOW_AUXV": "1", "PATH": "/usr/bin"})


def setuid_status(argv):
    """/proc/PID/status of a setuid binary after exec, while it blocks writing to a full pipe
    (or, if it exited, as a zombie: credentials stay until reaped)."""
    r, w = os.pipe()
    fcntl.fcntl(w, 1031, 4096)  # F_SETPIPE_SZ: one page
    os.set_blocking(w, False)
    try:
        while True:
            os.write(w, b"x" * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(w, True)
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=w, stderr=w)
    os.close(w)
    time.sleep(0.15)
    st = read("/proc/%d/status" % p.pid)
    p.kill()
    p.wait()
    os.close(r)
    return st


F["setuid_status"] = {argv[0]: setuid_status(argv) for argv in (
    ["/usr/bin/su", "-c", "id"], ["/usr/bin/mount"], ["/usr/bin/passwd", "-S"],
    ["/usr/bin/newgrp"])}
F["setuid_bits"] = {b: bool(os.stat(b).st_mode & stat.S_ISUID)
                    for b in ("/usr/bin/su", "/usr/bin/mount", "/usr/bin/passwd")}


# -- network -----------------------------------------------------------------------------
def connect(family, addr, kind=socket.SOCK_STREAM):
    try:
        s = socket.socket(family, kind)
    except OSError as e:
        return e.errno
    s.settimeout(3)
    try:
        if kind == socket.SOCK_STREAM:
            s.connect(addr)
        else:
            s.sendto(b"x", addr)
    except OSError as e:
        return e.errno
    finally:
        s.close()
    return 0


F["net_dev"] = read("/proc/net/dev")
F["net_route"] = read("/proc/net/route")
F["egress_tcp"] = connect(socket.AF_INET, ("1.1.1.1", 53))
F["egress_udp"] = connect(socket.AF_INET, ("1.1.1.1", 53), socket.SOCK_DGRAM)
F["egress_tcp6"] = connect(socket.AF_INET6, ("2606:4700:4700::1111", 53))
F["raw_socket"] = err(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW,
                                            socket.IPPROTO_ICMP).close())
F["packet_socket"] = err(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close())

print(json.dumps(F))
'''

# --------------------------------------------------------------------------------------
# raw syscalls: name -> (python expression evaluated in SYSCALLS_SCRIPT, expected errno)
# Arguments are chosen so that, were a call ever allowed, it would be harmless (bad magic,
# NULL pointers, nonexistent names, the sandbox's own mount namespace).

EPERM, ENOSYS = 1, 38
SYSCALLS: dict[str, tuple[str, int]] = {
    "ptrace_attach_own_child": ("ptrace_child()", EPERM),
    "ptrace_traceme": ("call(101, 0, 0, 0, 0)", EPERM),
    "process_vm_readv": ("call(310, 1, 0, 0, 0, 0, 0)", EPERM),
    "pidfd_getfd": ("call(438, -1, 0, 0)", EPERM),
    "keyctl": ("call(250, 0, -4, 0)", EPERM),  # KEYCTL_GET_KEYRING_ID of the user keyring
    "add_key": ("call(248, b'user', b'ul-escape', b'x', 1, -2)", EPERM),
    "request_key": ("call(249, b'user', b'ul-escape', 0, -2)", EPERM),
    "io_uring_setup": ("call(425, 8, buf)", EPERM),
    "bpf": ("call(321, 0, buf, 72)", EPERM),  # BPF_MAP_CREATE
    "perf_event_open": ("call(298, buf, 0, -1, -1, 0)", EPERM),
    "userfaultfd": ("call(323, 0)", EPERM),
    "mount": ("call(165, b'none', b'/tmp', b'tmpfs', 0, 0)", EPERM),
    "umount2": ("call(166, b'/workspace', 2)", EPERM),
    "fsopen": ("call(430, b'tmpfs', 0)", EPERM),
    "open_tree": ("call(428, -100, b'/workspace', 1)", EPERM),  # OPEN_TREE_CLONE
    "pivot_root": ("call(155, b'/tmp', b'/tmp')", EPERM),
    "chroot": ("call(161, b'/tmp')", EPERM),
    "unshare_newuser": ("call(272, 0x10000000)", EPERM),
    "unshare_newns": ("call(272, 0x00020000)", EPERM),
    "clone_newuser": ("clone(0x10000000)", EPERM),
    "clone_newnet": ("clone(0x40000000)", EPERM),
    "clone_newpid": ("clone(0x20000000)", EPERM),
    "clone3": ("call(435, buf, 88)", ENOSYS),  # glibc falls back to the filtered clone
    "setns": ("call(308, os.open('/proc/self/ns/net', os.O_RDONLY), 0)", EPERM),
    "init_module": ("call(175, buf, 64, b'')", EPERM),
    "finit_module": ("call(313, os.open('/dev/null', os.O_RDONLY), b'', 0)", EPERM),
    "delete_module": ("call(176, b'underlay_no_such_module', 0x800)", EPERM),
    "kexec_load": ("call(246, 0, 0, 0, 0xdead0000)", EPERM),
    "kexec_file_load": ("call(320, -1, -1, 0, b'', 0)", EPERM),
    "open_by_handle_at": ("call(304, os.open('/', os.O_RDONLY), buf, 0)", EPERM),
    "name_to_handle_at": ("call(303, -100, b'/workspace', buf, buf2, 0)", EPERM),
    "syslog": ("call(103, 3, buf, 4096)", EPERM),  # SYSLOG_ACTION_READ_ALL
    "clock_settime": ("call(227, 0, 0)", EPERM),  # NULL timespec: EFAULT if it got through
    "iopl": ("call(172, 3)", EPERM),
    "swapon": ("call(167, b'/workspace/no-such-swap', 0)", EPERM),
    "reboot": ("call(169, 0, 0, 0, 0)", EPERM),  # bad magic: EINVAL if it got through
}

SYSCALLS_SCRIPT = r'''
import ctypes, json, os, subprocess, sys

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
buf = ctypes.create_string_buffer(4096)
buf2 = ctypes.create_string_buffer(64)


def call(nr, *args):
    """errno of syscall(nr, args), 0 if it succeeded."""
    conv = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *conv)
    return 0 if r != -1 else ctypes.get_errno()


def clone(flags):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(56), ctypes.c_long(flags | 17), ctypes.c_long(0),
                     ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0))
    if r == 0:
        os._exit(0)
    if r > 0:
        os.waitpid(r, 0)
        return 0
    return ctypes.get_errno()


def ptrace_child():
    child = subprocess.Popen(["sleep", "10"])
    try:
        return call(101, 16, child.pid, 0, 0)  # PTRACE_ATTACH
    finally:
        child.kill()
        child.wait()


print(json.dumps({name: eval(expr) for name, expr in json.loads(sys.argv[1]).items()}))
'''

# --------------------------------------------------------------------------------------
# two sandboxes: A holds secrets, B looks for them

HOLDER = r"""
import ctypes, os, socket, sys, time
secret, key, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for path in ("/workspace/secret.txt", "/tmp/secret.txt", "/dev/shm/secret.txt"):
    with open(path, "w") as f:
        f.write(secret)
libc = ctypes.CDLL(None, use_errno=True)
shm = libc.shmget(key, 4096, 0o1666)  # IPC_CREAT | 0666
unix = socket.socket(socket.AF_UNIX)
unix.bind("\0ul-" + secret)
unix.listen()
tcp = socket.socket()
tcp.bind(("127.0.0.1", port))
tcp.listen()
print("ready", shm, flush=True)
time.sleep(120)
"""

SEEKER = r"""
import ctypes, json, os, socket, sys
secret, key, port, host_ws = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
control = "control-" + secret[::-1]
with open("/workspace/control.txt", "w") as f:
    f.write(control)  # proves the scan below would find a planted string
pids = [p for p in os.listdir("/proc") if p.isdigit()]
roots = ["/workspace", "/tmp", "/dev", "/run", "/etc", "/.ul", "/var", "/home", "/root",
         "/var/lib/underlay", host_ws, os.path.dirname(host_ws)]
for p in pids:
    roots += ["/proc/%s/root/workspace" % p, "/proc/%s/root/tmp" % p, "/proc/%s/cwd" % p,
              "/proc/%s/root/dev/shm" % p]
hits, controls, scanned = [], [], 0
for root in roots:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
            except OSError:
                continue
            try:
                data = os.read(fd, 1 << 20)
            except OSError:
                data = b""
            finally:
                os.close(fd)
            scanned += 1
            if secret.encode() in data:
                hits.append(path)
            if control.encode() in data:
                controls.append(path)
cmdline_hits = []
for p in pids:
    if int(p) == os.getpid():  # this very process has the secret in its argv
        continue
    try:
        with open("/proc/%s/cmdline" % p, "rb") as fh:
            if secret.encode() in fh.read():
                cmdline_hits.append(p)
    except OSError:
        pass
libc = ctypes.CDLL(None, use_errno=True)
shm = libc.shmget(key, 0, 0)
shm_errno = ctypes.get_errno() if shm == -1 else 0


def connect(family, addr):
    s = socket.socket(family)
    s.settimeout(3)
    try:
        s.connect(addr)
    except OSError as e:
        return e.errno
    finally:
        s.close()
    return 0


try:
    os.stat(os.path.join(host_ws, "secret.txt"))
    direct = 0
except OSError as e:
    direct = e.errno
print(json.dumps({
    "hits": hits, "controls": controls, "scanned": scanned, "cmdline_hits": cmdline_hits,
    "shm_errno": shm_errno, "unix": connect(socket.AF_UNIX, "\0ul-" + secret),
    "tcp": connect(socket.AF_INET, ("127.0.0.1", port)), "direct_host_path": direct,
}))
"""

# --------------------------------------------------------------------------------------
# races against the files API

SWAPPER = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
os.chdir("/workspace")
marker = sys.argv[1]
PAIRS = [("race_tmp", "/tmp"), ("race_root", "/"), ("race_etc", "/etc")]


def setup():
    for name, target in PAIRS:
        if not os.path.lexists(name):
            os.mkdir(name)
        if not os.path.lexists(name + ".alt"):
            os.symlink(target, name + ".alt")


setup()
with open("race_tmp/%s-decoy" % marker, "w") as f:
    f.write("sandbox-decoy")
print("ready", flush=True)
swaps, end = 0, time.time() + 30
while not os.path.exists("stop") and time.time() < end:
    for name, _ in PAIRS:  # RENAME_EXCHANGE: NAME flips between a directory and a symlink
        if libc.renameat2(-100, name.encode(), -100, (name + ".alt").encode(), 2) == 0:
            swaps += 1
        else:
            setup()
print("swaps", swaps, flush=True)
"""

FIFO_SWAPPER = r'''
import ctypes, os, sys, threading, time
libc = ctypes.CDLL(None, use_errno=True)
os.chdir("/workspace")
race_for, release_after, pairs = float(sys.argv[1]), float(sys.argv[2]), 4
start = time.time()


def setup():
    os.makedirs("victim", exist_ok=True)
    if not os.path.lexists("victim/f"):
        os.mkfifo("victim/f")
    for i in range(pairs):
        if not os.path.lexists("victim/d%d" % i):
            os.mkdir("victim/d%d" % i)
        if not os.path.lexists("victim/a%d" % i):
            os.symlink("f", "victim/a%d" % i)  # relative: on the host too it names the FIFO


def release():
    """Open the FIFO's write end later: only then does a reader blocked on it return. A
    hostile sandbox would never do this; the test does, so that it ends."""
    while time.time() < start + release_after + 5:
        if time.time() > start + release_after:
            try:
                os.close(os.open("victim/f", os.O_WRONLY | os.O_NONBLOCK))
                print("HOST-OPENED-FIFO", flush=True)  # there was a reader: the host
            except OSError:
                pass
        time.sleep(0.05)


threading.Thread(target=release, daemon=True).start()
setup()
print("ready", flush=True)
swaps = 0
names = [(b"victim/d%d" % i, b"victim/a%d" % i) for i in range(pairs)]
while time.time() < start + race_for:
    for d, a in names:  # RENAME_EXCHANGE: victim/dN flips between a directory and a symlink
        if libc.renameat2(-100, d, -100, a, 2) == 0:
            swaps += 1
        else:
            try:
                setup()
            except OSError:
                pass
print("swaps", swaps, flush=True)
time.sleep(release_after + 6 - race_for)
'''
