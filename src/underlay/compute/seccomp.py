"""Pure-Python seccomp-BPF denylist for bubblewrap sandboxes (no libseccomp).

:func:`build_filter` returns a classic-BPF program, an array of ``struct sock_filter``
(u16 code, u8 jt, u8 jf, u32 k), in the form ``bwrap --seccomp FD`` reads from a file
descriptor; :func:`seccomp_fd` produces such a descriptor. Both supported targets
(x86_64, aarch64) are little-endian, so the bytes are the same on any build host.

The program decides, in this order:

1. ``seccomp_data.arch`` is not the target's native AUDIT_ARCH -> SECCOMP_RET_KILL_PROCESS.
   A foreign ABI (i386 ``int 0x80`` on x86_64, AArch32 on aarch64) numbers syscalls
   differently, so a denylist keyed on native numbers would not apply to it.
2. x86_64 only: a syscall number with the x32 bit set (>= 0x40000000) -> KILL_PROCESS.
   x32 calls report AUDIT_ARCH_X86_64 but reach the same handlers under other numbers
   (x32 keyctl is 0x40000000 + 250), which would bypass rule 3; nothing built for this
   host uses x32, so it is treated like a foreign ABI. Exception: nr == -1 (0xffffffff,
   the "no syscall" probe) falls through and the kernel answers ENOSYS.
3. Every syscall in :data:`DENIED` -> SECCOMP_RET_ERRNO | EPERM (reasons next to the table).
4. ``clone3`` -> ERRNO | ENOSYS. Its flags live in a user-memory struct that BPF cannot
   read; glibc >= 2.34 falls back to ``clone`` on ENOSYS, whose flags rule 5 inspects.
5. ``clone`` -> EPERM if the low 32 bits of its flags (args[0] on both arches) contain
   CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID
   or CLONE_NEWNET. CLONE_NEWTIME (0x80) is deliberately not tested: in ``clone`` the
   low byte (CSIGNAL) is the exit signal and the kernel strips it from the flags, so a
   time namespace is reachable only through ``unshare`` (denied) or ``clone3`` (ENOSYS);
   testing 0x80 would wrongly reject exit signals >= 128. fork, vfork and
   pthread_create never pass namespace flags, so they keep working.
6. ``ioctl`` -> EPERM for TIOCSTI (inject bytes into the terminal's input queue, a
   classic escape through an inherited tty) and TIOCLINUX (the same via console
   selection paste). Only the low 32 bits of the request are compared, matching the
   kernel, which truncates it to ``unsigned int`` -- setting high bits cannot bypass this.
7. ``personality`` -> EPERM unless the argument is PER_LINUX (0) or 0xffffffff (query);
   other personas disable ASLR (ADDR_NO_RANDOMIZE) or make data executable.
8. Everything else -> SECCOMP_RET_ALLOW.

This is defence in depth for kernel attack surface, not the sandbox boundary: the
sandbox also drops all capabilities, so many denied calls would fail anyway, but a
filtered call never reaches the kernel code behind it.

bwrap installs the program after its own setup (its mounts, pivot_root and unshare are
unaffected) as the last step before execve of the target, and also in its pid-1 reaper
under ``--unshare-pid``, which afterwards only waits, writes its eventfd and exits.
"""

from __future__ import annotations

import errno
import fcntl
import os
import platform
import struct

_ARCHES = ("x86_64", "aarch64")
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}

# name: (x86_64 nr from asm/unistd_64.h, aarch64 nr from asm-generic/unistd.h or None)
_DENY_TABLE: dict[str, tuple[int, int | None]] = {
    "keyctl": (250, 219),  # kernel keyrings are not namespaced; recurring CVEs
    "add_key": (248, 217),  # kernel keyrings
    "request_key": (249, 218),  # kernel keyrings
    "bpf": (321, 280),  # eBPF verifier/JIT is a large attack surface
    "io_uring_setup": (425, 425),  # io_uring ops bypass seccomp and have a poor CVE record
    "io_uring_enter": (426, 426),  # io_uring
    "io_uring_register": (427, 427),  # io_uring
    "ptrace": (101, 117),  # inspect/modify other processes; bypasses seccomp on old kernels
    "process_vm_readv": (310, 270),  # read another process's memory
    "process_vm_writev": (311, 271),  # write another process's memory
    "kcmp": (312, 272),  # compares kernel objects of other processes (info leak)
    "pidfd_getfd": (438, 438),  # steal a file descriptor from another process
    "mount": (165, 40),  # filesystem layout is fixed by bwrap
    "umount2": (166, 39),  # could reveal what bwrap mounted over
    "move_mount": (429, 429),  # new mount API
    "open_tree": (428, 428),  # new mount API
    "open_tree_attr": (467, 467),  # new mount API (Linux 6.15)
    "fsopen": (430, 430),  # new mount API
    "fsconfig": (431, 431),  # new mount API
    "fsmount": (432, 432),  # new mount API
    "fspick": (433, 433),  # new mount API
    "mount_setattr": (442, 442),  # e.g. clear read-only on bind mounts
    "pivot_root": (155, 41),  # change the root filesystem
    "chroot": (161, 51),  # chroot games enable escapes from nested roots
    "unshare": (272, 97),  # new namespaces (user namespaces expose root-only kernel code)
    "setns": (308, 268),  # join another namespace
    "kexec_load": (246, 104),  # load a new kernel
    "kexec_file_load": (320, 294),  # load a new kernel
    "init_module": (175, 105),  # load kernel modules
    "finit_module": (313, 273),  # load kernel modules
    "delete_module": (176, 106),  # unload kernel modules
    "perf_event_open": (298, 241),  # performance counters: side channels, many CVEs
    "userfaultfd": (323, 282),  # stalls kernel page faults, widens race windows in exploits
    "swapon": (167, 224),  # host memory management
    "swapoff": (168, 225),  # host memory management
    "reboot": (169, 142),  # reboot host or pid-namespace init
    "acct": (163, 89),  # process accounting to a file
    "quotactl": (179, 60),  # filesystem quotas
    "quotactl_fd": (443, 443),  # filesystem quotas
    "lookup_dcookie": (212, 18),  # profiling interface, leaks paths
    "name_to_handle_at": (303, 264),  # file handles: open_by_handle_at escapes bind mounts
    "open_by_handle_at": (304, 265),  # file handles ("shocker" container escape)
    "iopl": (172, None),  # raw I/O port access (x86 only)
    "ioperm": (173, None),  # raw I/O port access (x86 only)
    "uselib": (134, None),  # obsolete a.out loader (x86 only)
    "ustat": (136, None),  # obsolete filesystem info (x86 only)
    "sysfs": (139, None),  # obsolete filesystem type info (x86 only)
    "syslog": (103, 116),  # kernel log leaks addresses
    "vhangup": (153, 58),  # hang up the terminal
    "settimeofday": (164, 170),  # set the host clock
    "clock_settime": (227, 112),  # set the host clock
    "clock_adjtime": (305, 266),  # adjust the host clock
}

DENIED: tuple[str, ...] = tuple(_DENY_TABLE)
"""Syscalls always answered with EPERM (on aarch64 minus the x86-only ones)."""

_CLONE3 = {"x86_64": 435, "aarch64": 435}
_CLONE = {"x86_64": 56, "aarch64": 220}
_IOCTL = {"x86_64": 16, "aarch64": 29}
_PERSONALITY = {"x86_64": 135, "aarch64": 92}

_CLONE_NAMESPACES = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)
_TIOCSTI, _TIOCLINUX = 0x5412, 0x541C
_X32_SYSCALL_BIT = 0x40000000
_PER_QUERY = 0xFFFFFFFF
_NO_SYSCALL = 0xFFFFFFFF  # nr == -1

_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000

# classic BPF opcodes (linux/bpf_common.h)
_LD_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ, _JGE, _JSET = 0x15, 0x35, 0x45  # BPF_JMP | BPF_J* | BPF_K
_RET = 0x06  # BPF_RET | BPF_K
_MAX_INSNS = 4096  # BPF_MAXINSNS

# struct seccomp_data offsets; args[] are u64, low halves first on little-endian
_NR, _ARCH, _ARG0_LO, _ARG1_LO = 0, 4, 16, 24


class _Program:
    """Classic-BPF emitter whose conditional jumps name labels, resolved in assemble()."""

    def __init__(self) -> None:
        self._insns: list[tuple[int, int, str | None, str | None]] = []
        self._labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        self._labels[name] = len(self._insns)

    def emit(self, code: int, k: int, jt: str | None = None, jf: str | None = None) -> None:
        """Append one instruction; a jump target of None means the next instruction."""
        self._insns.append((code, k, jt, jf))

    def assemble(self) -> bytes:
        if len(self._insns) > _MAX_INSNS:
            raise ValueError(f"seccomp program has {len(self._insns)} > {_MAX_INSNS} insns")
        out = bytearray()
        for pc, (code, k, jt, jf) in enumerate(self._insns):
            out += struct.pack("<HBBI", code, self._offset(pc, jt), self._offset(pc, jf), k)
        return bytes(out)

    def _offset(self, pc: int, label: str | None) -> int:
        if label is None:
            return 0
        offset = self._labels[label] - pc - 1
        if not 0 <= offset <= 0xFF:
            raise ValueError(f"jump from {pc} to {label!r} does not fit a u8 forward offset")
        return offset


def build_filter(arch: str | None = None) -> bytes:
    """Return the seccomp program described in the module docstring for ``arch``.

    ``arch`` defaults to ``platform.machine()``; only "x86_64" and "aarch64" are
    supported, anything else raises ValueError. The result is a whole number of 8-byte
    ``struct sock_filter`` records, at most 4096 of them, every jump in range.
    """
    arch = platform.machine() if arch is None else arch
    if arch not in _ARCHES:
        raise ValueError(f"unsupported seccomp architecture {arch!r}; expected one of {_ARCHES}")
    index = _ARCHES.index(arch)
    p = _Program()
    p.emit(_LD_ABS, _ARCH)
    p.emit(_JEQ, _AUDIT_ARCH[arch], jf="kill")
    p.emit(_LD_ABS, _NR)
    if arch == "x86_64":
        p.emit(_JGE, _X32_SYSCALL_BIT, jt="x32")
    for numbers in _DENY_TABLE.values():
        nr = numbers[index]
        if nr is not None:
            p.emit(_JEQ, nr, jt="eperm")
    p.emit(_JEQ, _CLONE3[arch], jt="enosys")
    p.emit(_JEQ, _CLONE[arch], jt="clone")
    p.emit(_JEQ, _IOCTL[arch], jt="ioctl")
    p.emit(_JEQ, _PERSONALITY[arch], jt="personality", jf="allow")
    if arch == "x86_64":
        p.label("x32")
        p.emit(_JEQ, _NO_SYSCALL, jt="allow", jf="kill")
    p.label("clone")
    p.emit(_LD_ABS, _ARG0_LO)
    p.emit(_JSET, _CLONE_NAMESPACES, jt="eperm", jf="allow")
    p.label("ioctl")
    p.emit(_LD_ABS, _ARG1_LO)
    p.emit(_JEQ, _TIOCSTI, jt="eperm")
    p.emit(_JEQ, _TIOCLINUX, jt="eperm", jf="allow")
    p.label("personality")
    p.emit(_LD_ABS, _ARG0_LO)
    p.emit(_JEQ, 0, jt="allow")
    p.emit(_JEQ, _PER_QUERY, jt="allow", jf="eperm")
    p.label("allow")
    p.emit(_RET, _RET_ALLOW)
    p.label("eperm")
    p.emit(_RET, _RET_ERRNO | errno.EPERM)
    p.label("enosys")
    p.emit(_RET, _RET_ERRNO | errno.ENOSYS)
    p.label("kill")
    p.emit(_RET, _RET_KILL_PROCESS)
    return p.assemble()


def seccomp_fd(program: bytes) -> int:
    """Return a readable fd positioned at offset 0 whose content is exactly ``program``.

    This is what ``bwrap --seccomp FD`` consumes: bwrap reads the fd to EOF and installs
    the bytes as one filter. The fd is a sealed memfd (no write, grow or shrink), so
    nobody holding it can alter the program; it is close-on-exec, so hand it to bwrap
    with ``subprocess`` ``pass_fds``. The caller owns it and must close it.
    """
    fd = os.memfd_create("underlay-seccomp", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(program)
        while view:
            view = view[os.write(fd, view) :]
        seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd
