/*
 * ulseed: a launcher started ahead of its sandbox, waiting inside the sandbox's cgroup.
 *
 *   ulseed CONTROL_FD [--isolate]
 *
 * The host starts it with the sandbox's stdin and stdout pipes, moves it into a fresh
 * cgroup (on cgroup v1 that move waits for an RCU grace period, several milliseconds
 * after an idle moment: paid here, before any sandbox is asked for), and keeps it
 * waiting. With --isolate it first enters new network, IPC and UTS namespaces of its
 * own (as root: hostname "sandbox", loopback up, nothing else), which bwrap then
 * inherits instead of making them on the create's path; the sandbox's user namespace
 * does not own them, so nothing inside can reconfigure them. To start a sandbox the host writes one instruction to CONTROL_FD and closes
 * it; ulseed then does what ullaunch does, minus the cgroup join: it opens the paths it
 * is given onto the descriptor numbers given (as root, O_PATH: bwrap binds them, so the
 * sandbox uid needs no access to the host's paths), points stderr at the log, drops
 * every group and switches to GID and UID, marks itself dumpable again and execs
 * PROGRAM. The sandbox's processes are then born inside the cgroup.
 *
 * Instruction (NUL-terminated fields, at most 64 KiB, read to EOF):
 *   UID GID LOGPATH N (FD PATH) * N PROGRAM ARGS...
 * UID "-" keeps the current identity (not root: no cgroup, so no seed either).
 *
 * Once set up it writes one byte, "R", to its stdout (the host reads it before counting
 * the launcher ready, so the sandbox's supervisor never sees it).
 *
 * It dies with the host (parent-death signal) and exits 0, doing nothing, when the
 * control descriptor closes without an instruction. Exit codes: 125 for a bad
 * instruction or a setup error (message on stderr), 127 when PROGRAM cannot be
 * executed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_INSTRUCTION 65536
#define MAX_FIELDS 1024
#define MIN_TARGET_FD 10

static char buf[MAX_INSTRUCTION + 1];
static char *field[MAX_FIELDS + 1];

static int parse_uint(const char *text, unsigned long max, unsigned long *out) {
    char *end = NULL;
    errno = 0;
    unsigned long v = strtoul(text, &end, 10);
    if (errno || !end || *end || end == text || v > max) return -1;
    *out = v;
    return 0;
}

static int fail(const char *what) {
    fprintf(stderr, "ulseed: %s: %s\n", what, strerror(errno));
    return 125;
}

/* New network, IPC and UTS namespaces: an empty network with the loopback up. */
static int isolate(void) {
    if (unshare(CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)) return fail("unshare");
    if (sethostname("sandbox", 7)) return fail("sethostname");
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return fail("socket");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    if (ioctl(s, SIOCGIFFLAGS, &ifr)) return fail("reading the loopback's flags");
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr)) return fail("bringing the loopback up");
    close(s);
    return 0;
}

int main(int argc, char **argv) {
    unsigned long control;
    int isolated = argc == 3 && strcmp(argv[2], "--isolate") == 0;
    if ((argc != 2 && !isolated) || parse_uint(argv[1], 1 << 20, &control)) {
        fprintf(stderr, "usage: ulseed CONTROL_FD [--isolate]\n");
        return 125;
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (getppid() == 1) return 0; /* the host is gone already */
    fcntl((int)control, F_SETFD, FD_CLOEXEC);
    if (isolated && isolate()) return 125;
    if (write(1, "R", 1) != 1) return fail("saying ready"); /* the host reads it, then waits */

    size_t len = 0;
    for (;;) {
        if (len == MAX_INSTRUCTION) {
            fprintf(stderr, "ulseed: instruction too long\n");
            return 125;
        }
        ssize_t n = read((int)control, buf + len, MAX_INSTRUCTION - len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail("reading the instruction");
        if (n == 0) break;
        len += (size_t)n;
    }
    if (len == 0) return 0; /* stood down: never used */
    close((int)control);
    buf[len] = '\0';
    size_t count = 0;
    for (size_t at = 0; at < len && count < MAX_FIELDS; count++) {
        field[count] = buf + at;
        at += strlen(buf + at) + 1;
    }
    unsigned long n_open;
    if (count < 5 || parse_uint(field[3], 256, &n_open) || count < 4 + 2 * n_open + 1) {
        fprintf(stderr, "ulseed: malformed instruction\n");
        return 125;
    }
    int log = open(field[2], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (log < 0) return fail("opening the log");
    if (dup2(log, 2) < 0) return fail("redirecting stderr");
    close(log);
    for (unsigned long i = 0; i < n_open; i++) {
        unsigned long target;
        const char *path = field[5 + 2 * i];
        if (parse_uint(field[4 + 2 * i], 1 << 20, &target) || target < MIN_TARGET_FD) {
            fprintf(stderr, "ulseed: bad descriptor number %s\n", field[4 + 2 * i]);
            return 125;
        }
        int fd = open(path, O_PATH | O_CLOEXEC);
        if (fd < 0) return fail(path);
        if ((unsigned long)fd != target) {
            if (dup2(fd, (int)target) < 0) return fail("placing a descriptor");
            close(fd);
        } else {
            fcntl(fd, F_SETFD, 0);
        }
    }
    char **program = &field[4 + 2 * n_open];
    field[count] = NULL;
    if (strcmp(field[0], "-") != 0) {
        unsigned long uid, gid;
        if (parse_uint(field[0], 0xfffffffeUL, &uid) || parse_uint(field[1], 0xfffffffeUL, &gid)) {
            fprintf(stderr, "ulseed: bad uid or gid\n");
            return 125;
        }
        if (setgroups(0, NULL) || setgid((gid_t)gid) || setuid((uid_t)uid)) {
            return fail("dropping privileges");
        }
        if (getuid() != uid || geteuid() != uid) return 125;
        prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
    }
    execvp(program[0], program);
    fprintf(stderr, "ulseed: %s: %s\n", program[0], strerror(errno));
    return 127;
}
