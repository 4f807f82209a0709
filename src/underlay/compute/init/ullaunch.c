/*
 * ullaunch: starts bubblewrap for one sandbox, on the host side.
 *
 *   ullaunch UID GID [CGROUP_PROCS_FILE ...] -- PROGRAM [ARGS ...]
 *
 * Writes its own pid into each cgroup.procs file (so the sandbox is inside its cgroups
 * before any of its code runs), then, unless UID is "-", drops every group and switches
 * to GID and UID, marks itself dumpable again (a uid change clears that flag, and bwrap
 * reaches the descriptors it is given through /proc/self/fd), and execs PROGRAM.
 *
 * Why a program and not Python code between fork and exec: with no Python in the child,
 * the parent can spawn with vfork, which costs microseconds instead of copying the page
 * tables of a large interpreter process.
 *
 * Exit codes: 125 for a usage or setup error (with a message on stderr), 127 when
 * PROGRAM cannot be executed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

static int join_cgroup(const char *procs, const char *pid, size_t len) {
    int fd = open(procs, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t w = write(fd, pid, len);
    int saved = errno;
    close(fd);
    errno = saved;
    return w == (ssize_t)len ? 0 : -1;
}

static int parse_id(const char *text, unsigned *out) {
    char *end = NULL;
    errno = 0;
    unsigned long v = strtoul(text, &end, 10);
    if (errno || !end || *end || v > 0xfffffffeUL) return -1;
    *out = (unsigned)v;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: ullaunch UID GID [CGROUP_PROCS ...] -- PROGRAM [ARGS ...]\n");
        return 125;
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%d", (int)getpid());
    int i = 3;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (join_cgroup(argv[i], pid, (size_t)len) < 0) {
            fprintf(stderr, "ullaunch: joining %s: %s\n", argv[i], strerror(errno));
            return 125;
        }
    }
    if (i + 1 >= argc) {
        fprintf(stderr, "ullaunch: no program after --\n");
        return 125;
    }
    if (strcmp(argv[1], "-") != 0) {
        unsigned uid, gid;
        if (parse_id(argv[1], &uid) || parse_id(argv[2], &gid)) {
            fprintf(stderr, "ullaunch: bad uid or gid\n");
            return 125;
        }
        if (setgroups(0, NULL) || setgid(gid) || setuid(uid)) {
            fprintf(stderr, "ullaunch: dropping to %u:%u: %s\n", uid, gid, strerror(errno));
            return 125;
        }
        if (getuid() != uid || geteuid() != uid) return 125;
        prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
    }
    execvp(argv[i + 1], &argv[i + 1]);
    fprintf(stderr, "ullaunch: %s: %s\n", argv[i + 1], strerror(errno));
    return 127;
}
