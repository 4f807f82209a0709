/*
 * ulinit - the supervisor inside every underlay sandbox: it starts commands on
 * request and streams their output back over its stdin (host -> init) and
 * stdout (init -> host). Frame: type u8, id u32 BE, len u32 BE, len bytes.
 *
 * Host -> init
 *   'E' exec; id chosen by the host, unique among live commands. Payload: cwd\0;
 *       u32 argc, argc strings\0; u32 envc, envc "K=V"\0; u8 flags (bit0: stdin
 *       is a pipe, else /dev/null). The child gets setsid() (pgid == pid),
 *       chdir(cwd), execvpe() with exactly that env (argv[0] without '/' is
 *       searched in that env's PATH), stdout and stderr as two pipes and no
 *       other descriptor.
 *   'I' stdin data for id; len 0 closes its stdin after the data queued before.
 *   'K' payload u8 signal, sent to id's process group; ignored after its 'X'.
 *   'P' ping: answered with 'P', same id and payload.
 * Init -> host
 *   'H' id 0, "ulinit 1": once, when ready.     'S' started: u32 pid.
 *   'O' / 'R' a stdout / stderr chunk of 1..64 KiB.
 *   'F' exec failed: text such as "No such file or directory: foo"; no 'S' was
 *       sent and 'X' follows with 126 (EACCES) or 127.
 *   'X' finished: i32 exit code (128+signal if killed), u8 signaled. The last
 *       frame of that id: sent once the command was reaped and both pipes hit
 *       EOF, or DRAIN_MS after reaping if a leftover background process keeps
 *       them open (what is readable then is sent first).
 *
 * Guarantees: frames never interleave (one writer, full blocking writes: a slow
 * host gets backpressure); per id: S, O/R..., X. Writing a command's stdin never
 * blocks init: data is queued; init stops reading fd 0 while more than
 * STDIN_HIGH_WATER bytes are queued. Every child is reaped, orphans too (init is
 * a child subreaper). On EOF/error of fd 0, or SIGTERM/SIGINT/SIGHUP, init
 * SIGKILLs every process group it started that may have members, then exits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNK 65536
#define MAX_FRAME (16u << 20)
#define STDIN_HIGH_WATER (4u << 20)
#define DRAIN_MS 20

extern char **environ;
struct report { int err; char msg[256]; }; /* a failed child's errno and message */

struct proc {
    uint32_t id;
    pid_t pid;                  /* also its process group id */
    int live, reaped, status;   /* status: from waitpid */
    int in_fd, out_fd, err_fd;  /* host ends, -1 once closed */
    int close_in;               /* close stdin once the queue is written */
    int64_t deadline;           /* set when reaped: stop waiting for pipe EOF */
    unsigned char *ibuf;        /* stdin bytes queued: ibuf[ioff..ilen) */
    size_t ioff, ilen;
};

static struct proc *procs;      /* live commands (and finished ones until compacted) */
static pid_t *strays;           /* groups whose leader finished but that had members left */
static unsigned char *inbuf;    /* unparsed bytes from fd 0 */
static size_t nprocs, cap_procs, nstrays, cap_strays, inlen, incap;
static size_t pending_in;       /* stdin bytes queued over all commands */
static unsigned char obuf[9 + CHUNK];
static int sig_pipe[2] = {-1, -1};
static volatile sig_atomic_t stop_signal;
static struct rlimit orig_nofile;

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (24 - 8 * i));
}

static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* SIGKILL every group that may still have members, then exit. */
static _Noreturn void shutdown_all(int code) {
    for (size_t i = 0; i < nprocs; i++)
        if (procs[i].live) kill(-procs[i].pid, SIGKILL);
    for (size_t i = 0; i < nstrays; i++) kill(-strays[i], SIGKILL);
    _exit(code);
}

static _Noreturn void die(const char *msg) {
    fprintf(stderr, "ulinit: %s\n", msg);
    shutdown_all(1);
}

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) die("out of memory");
    return q;
}

static void *grow(void *arr, size_t n, size_t *cap, size_t size) { /* room for arr[n] */
    if (n < *cap) return arr;
    *cap = *cap ? 2 * *cap : 64;
    return xrealloc(arr, *cap * size);
}

static void write_all(const unsigned char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(1, p, n);
        if (w > 0) { p += w; n -= (size_t)w; }
        else if (w < 0 && errno != EINTR) shutdown_all(1); /* the host is gone */
    }
}

/* Sends one frame; a payload already at obuf + 9 is not copied. */
static void send_frame(char type, uint32_t id, const void *payload, size_t len) {
    obuf[0] = (unsigned char)type;
    put_u32(obuf + 1, id);
    put_u32(obuf + 5, (uint32_t)len);
    int in_place = payload == obuf + 9;
    if (!in_place && len <= CHUNK) memcpy(obuf + 9, payload, len);
    if (in_place || len <= CHUNK) write_all(obuf, 9 + len);
    else write_all(obuf, 9), write_all(payload, len);
}

static void send_exit(uint32_t id, int code, int signaled, const char *error) {
    unsigned char x[5] = {0, 0, 0, 0, (unsigned char)signaled};
    put_u32(x, (uint32_t)code);
    if (error) send_frame('F', id, error, strlen(error));
    send_frame('X', id, x, 5);
}

static struct proc *find(uint32_t id) {
    for (size_t i = 0; i < nprocs; i++)
        if (procs[i].live && procs[i].id == id) return &procs[i];
    return NULL;
}

static void close_fd(int *fd) {
    if (*fd >= 0) close(*fd), *fd = -1;
}

static void close_in(struct proc *p) {
    close_fd(&p->in_fd);
    pending_in -= p->ilen - p->ioff;
    free(p->ibuf);
    p->ibuf = NULL, p->ioff = p->ilen = 0;
}

/* Drops groups that have no member left. */
static void prune_strays(void) {
    for (size_t i = 0; i < nstrays;)
        if (kill(-strays[i], 0) < 0 && errno == ESRCH) strays[i] = strays[--nstrays];
        else i++;
}

/* Sends 'X' once the command is reaped and both output pipes are closed. */
static void maybe_finish(struct proc *p) {
    if (!p->live || !p->reaped || p->out_fd >= 0 || p->err_fd >= 0) return;
    close_in(p);
    int sig = WIFSIGNALED(p->status);
    send_exit(p->id, sig ? 128 + WTERMSIG(p->status) : WEXITSTATUS(p->status), sig, NULL);
    p->live = 0;
    if (kill(-p->pid, 0) == 0 || errno == EPERM) { /* members left: remember the group */
        strays = grow(strays, nstrays, &cap_strays, sizeof *strays);
        strays[nstrays++] = p->pid;
    }
}

/* Reads one chunk from an output pipe and forwards it; returns 1 if data came. */
static int pump(struct proc *p, int *fd, char type) {
    ssize_t n = read(*fd, obuf + 9, CHUNK);
    if (n > 0) return send_frame(type, p->id, obuf + 9, (size_t)n), 1;
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return 0;
    close_fd(fd); /* EOF or error */
    maybe_finish(p);
    return 0;
}

/* DRAIN_MS after reaping: forward what is readable now (bounded), then close. */
static void expire(struct proc *p) {
    for (int k = 0; k < 16 && p->out_fd >= 0 && pump(p, &p->out_fd, 'O'); k++) {}
    for (int k = 0; k < 16 && p->err_fd >= 0 && pump(p, &p->err_fd, 'R'); k++) {}
    close_fd(&p->out_fd), close_fd(&p->err_fd);
    maybe_finish(p);
}

/* Writes queued stdin without blocking; closes stdin when asked or on EPIPE. */
static void flush_in(struct proc *p) {
    while (p->in_fd >= 0 && p->ioff < p->ilen) {
        ssize_t w = write(p->in_fd, p->ibuf + p->ioff, p->ilen - p->ioff);
        if (w > 0) { p->ioff += (size_t)w; pending_in -= (size_t)w; continue; }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno == EAGAIN) return;
        close_in(p); /* the command no longer reads its stdin */
    }
    p->ioff = p->ilen = 0;
    if (p->close_in) close_in(p);
}

static void queue_in(struct proc *p, const unsigned char *data, size_t len) {
    if (p->ioff > 0) { /* flush_in left a partly written queue: compact it */
        memmove(p->ibuf, p->ibuf + p->ioff, p->ilen - p->ioff);
        p->ilen -= p->ioff, p->ioff = 0;
    }
    p->ibuf = xrealloc(p->ibuf, p->ilen + len);
    memcpy(p->ibuf + p->ilen, data, len);
    p->ilen += len;
    pending_in += len;
    flush_in(p);
}

/* Bounds-checked reader of an 'E' payload. */
struct cursor { unsigned char *p; size_t n; int bad; };

static uint32_t cur_u32(struct cursor *c) {
    if (c->n < 4) return c->bad = 1, 0;
    c->p += 4, c->n -= 4;
    return get_u32(c->p - 4);
}

static char *cur_str(struct cursor *c) {
    unsigned char *z = c->bad ? NULL : memchr(c->p, 0, c->n);
    if (!z) return c->bad = 1, NULL;
    char *s = (char *)c->p;
    c->n -= (size_t)(z + 1 - c->p), c->p = z + 1;
    return s;
}

/* u32 count then that many strings, as a NULL-terminated vector (to free). */
static char **cur_strv(struct cursor *c) {
    uint32_t k = cur_u32(c);
    if (c->bad || k > c->n) return c->bad = 1, NULL;
    char **v = xrealloc(NULL, ((size_t)k + 1) * sizeof *v);
    for (uint32_t i = 0; i <= k; i++) v[i] = i < k ? cur_str(c) : NULL;
    return v;
}

/* In the forked child: never returns. Reports failure as errno + text on fd 3. */
static _Noreturn void child(const char *cwd, char **argv, char **envp, int fds[3], int ep) {
    struct report rep = {0, ""};
    signal(SIGPIPE, SIG_DFL); /* ignored signals would stay ignored across execve */
    setrlimit(RLIMIT_NOFILE, &orig_nofile);
    setsid();
    if (fds[0] < 0) fds[0] = open("/dev/null", O_RDONLY);
    for (int i = 0; i < 3; i++)
        if (dup2(fds[i], i) < 0) close(i); /* never leave init's own descriptors there */
    dup2(ep, 3), fcntl(3, F_SETFD, FD_CLOEXEC); /* the report pipe, closed by execve */
    if (close_range(4, ~0U, 0) < 0)
        for (int fd = 4; fd < 1024; fd++) close(fd);
    int in_chdir = chdir(cwd) < 0;
    if (!in_chdir) {
        environ = envp;
        execvpe(argv[0], argv, envp);
    }
    rep.err = errno;
    snprintf(rep.msg, sizeof rep.msg, "%s: %s%s", strerror(rep.err), in_chdir ? "chdir " : "",
             in_chdir ? cwd : argv[0]);
    ssize_t w = write(3, &rep, sizeof rep);
    (void)w;
    _exit(127);
}

static int new_pipe(int p[2], int *host_end, int child_end_idx) {
    if (pipe2(p, O_CLOEXEC) < 0) return -1;
    *host_end = p[1 - child_end_idx];
    fcntl(*host_end, F_SETFL, O_NONBLOCK);
    return p[child_end_idx];
}

/* Forks the command; waits only until it called execve (or failed to). */
static void launch(uint32_t id, const char *cwd, char **argv, char **envp, int want_in) {
    int host[3] = {-1, -1, -1}, kid[3] = {-1, -1, -1}, p[2], ep[2] = {-1, -1};
    int ok = (!want_in || (kid[0] = new_pipe(p, &host[0], 0)) >= 0)
             && (kid[1] = new_pipe(p, &host[1], 1)) >= 0
             && (kid[2] = new_pipe(p, &host[2], 1)) >= 0 && pipe2(ep, O_CLOEXEC) == 0;
    pid_t pid = ok ? fork() : -1;
    if (pid == 0) child(cwd, argv, envp, kid, ep[1]);
    struct report rep = {errno, ""};
    for (int i = 0; i < 3; i++) close_fd(&kid[i]);
    close_fd(&ep[1]);
    ssize_t got = 0; /* a failed child wrote one report (< PIPE_BUF: atomic); else EOF */
    while (pid > 0 && (got = read(ep[0], &rep, sizeof rep)) < 0 && errno == EINTR) {}
    close_fd(&ep[0]);
    if (pid > 0 && got <= 0) {
        procs = grow(procs, nprocs, &cap_procs, sizeof *procs);
        procs[nprocs++] = (struct proc){.id = id, .pid = pid, .live = 1, .in_fd = host[0],
                                        .out_fd = host[1], .err_fd = host[2]};
        unsigned char pl[4];
        put_u32(pl, (uint32_t)pid);
        send_frame('S', id, pl, 4);
        return;
    }
    for (int i = 0; i < 3; i++) close_fd(&host[i]);
    if (pid > 0)
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
    else
        snprintf(rep.msg, sizeof rep.msg, "cannot start: %s", strerror(rep.err));
    rep.msg[sizeof rep.msg - 1] = 0;
    send_exit(id, rep.err == EACCES ? 126 : 127, 0, rep.msg);
}

static void do_exec(uint32_t id, unsigned char *payload, size_t len) {
    struct cursor c = {payload, len, 0};
    const char *cwd = cur_str(&c);
    char **argv = cur_strv(&c), **envp = cur_strv(&c);
    int flags = c.n == 1 ? payload[len - 1] : 0; /* exactly one byte must be left */
    if (c.bad || c.n != 1 || !argv[0]) send_exit(id, 127, 0, "malformed exec request");
    else if (find(id)) send_exit(id, 127, 0, "command id already in use");
    else launch(id, cwd, argv, envp, flags & 1);
    free(argv), free(envp);
}

static void dispatch(char type, uint32_t id, unsigned char *payload, size_t len) {
    struct proc *p;
    switch (type) {
    case 'E': do_exec(id, payload, len); break;
    case 'P': send_frame('P', id, payload, len); break;
    case 'K': if (len == 1 && (p = find(id)) != NULL) kill(-p->pid, payload[0]); break;
    case 'I':
        if ((p = find(id)) == NULL || p->in_fd < 0 || p->close_in) break;
        if (len == 0) { p->close_in = 1; flush_in(p); }
        else queue_in(p, payload, len);
        break;
    default: break; /* unknown frames are ignored */
    }
}

/* Handles every complete frame in inbuf, unless too much stdin is queued. */
static void handle_frames(void) {
    size_t off = 0;
    while (pending_in < STDIN_HIGH_WATER && inlen - off >= 9) {
        uint32_t len = get_u32(inbuf + off + 5);
        if (len > MAX_FRAME) die("oversized frame");
        if (inlen - off - 9 < len) break;
        dispatch((char)inbuf[off], get_u32(inbuf + off + 1), inbuf + off + 9, len);
        off += 9 + (size_t)len;
    }
    if (off == 0) return;
    memmove(inbuf, inbuf + off, inlen - off);
    inlen -= off;
}

static void read_input(void) {
    if (incap - inlen < CHUNK) inbuf = xrealloc(inbuf, incap = inlen + 4 * CHUNK);
    ssize_t n = read(0, inbuf + inlen, incap - inlen);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (n <= 0) shutdown_all(0);
    inlen += (size_t)n;
}

static void reap(void) {
    char junk[64];
    int st, pid;
    while (read(sig_pipe[0], junk, sizeof junk) > 0) {}
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0 || (pid < 0 && errno == EINTR))
        for (size_t i = 0; pid > 0 && i < nprocs; i++) /* unknown pids: adopted orphans */
            if (procs[i].live && procs[i].pid == pid) {
                procs[i].reaped = 1, procs[i].status = st, procs[i].deadline = now_ms() + DRAIN_MS;
                maybe_finish(&procs[i]);
            }
    prune_strays();
}

static void on_signal(int sig) {
    int saved = errno;
    if (sig != SIGCHLD) stop_signal = sig;
    ssize_t w = write(sig_pipe[1], "x", 1);
    (void)w;
    errno = saved;
}

static void setup(void) {
    for (int fd = 0; fd < 3; fd++) /* descriptors 0-2 must exist for dup2 logic */
        if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) != fd) die("cannot open /dev/null");
    signal(SIGPIPE, SIG_IGN);
    fcntl(1, F_SETFL, fcntl(1, F_GETFL) & ~O_NONBLOCK); /* write_all blocks */
    if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) < 0) die("pipe2 failed");
    struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART | SA_NOCLDSTOP};
    sigemptyset(&sa.sa_mask);
    int sigs[] = {SIGCHLD, SIGTERM, SIGINT, SIGHUP};
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) sigaction(sigs[i], &sa, NULL);
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    getrlimit(RLIMIT_NOFILE, &orig_nofile); /* raised for us, restored in children */
    struct rlimit raised = {orig_nofile.rlim_max, orig_nofile.rlim_max};
    setrlimit(RLIMIT_NOFILE, &raised);
}

static struct pollfd *pfd; /* the poll set: fd 0, sig_pipe, then command pipes */
static size_t *owner, npfd, cap_pfd, cap_owner; /* owner[k]: index in procs of pfd[k] */

static void add_pollfd(int fd, short events, size_t who) {
    pfd = grow(pfd, npfd, &cap_pfd, sizeof *pfd);
    owner = grow(owner, npfd, &cap_owner, sizeof *owner);
    pfd[npfd] = (struct pollfd){.fd = fd, .events = events};
    owner[npfd++] = who;
}

/* Drops finished commands, builds the poll set, returns the poll timeout. */
static int prepare(void) {
    size_t kept = 0;
    for (size_t i = 0; i < nprocs; i++)
        if (procs[i].live) procs[kept++] = procs[i];
    nprocs = kept, npfd = 0;
    add_pollfd(pending_in < STDIN_HIGH_WATER ? 0 : -1, POLLIN, 0);
    add_pollfd(sig_pipe[0], POLLIN, 0);
    int64_t now = now_ms(), timeout = -1;
    for (size_t i = 0; i < nprocs; i++) {
        struct proc *p = &procs[i];
        if (p->out_fd >= 0) add_pollfd(p->out_fd, POLLIN, i);
        if (p->err_fd >= 0) add_pollfd(p->err_fd, POLLIN, i);
        if (p->in_fd >= 0 && p->ioff < p->ilen) add_pollfd(p->in_fd, POLLOUT, i);
        if (p->reaped && (timeout < 0 || p->deadline - now < timeout))
            timeout = p->deadline > now ? p->deadline - now : 0;
    }
    return (int)timeout;
}

int main(void) {
    setup();
    send_frame('H', 0, "ulinit 1", 8);
    for (;;) {
        int r = poll(pfd, npfd, prepare());
        if (r < 0 && errno != EINTR) die("poll failed");
        for (size_t k = 2; r > 0 && k < npfd; k++) {
            struct proc *p = &procs[owner[k]];
            if (!pfd[k].revents || !p->live) continue;
            if (pfd[k].fd == p->out_fd) pump(p, &p->out_fd, 'O');
            else if (pfd[k].fd == p->err_fd) pump(p, &p->err_fd, 'R');
            else if (pfd[k].fd == p->in_fd) flush_in(p);
        }
        if (stop_signal) shutdown_all(128 + stop_signal);
        if (r > 0 && pfd[1].revents) reap();
        int64_t now = now_ms();
        for (size_t i = 0; i < nprocs; i++)
            if (procs[i].live && procs[i].reaped && procs[i].deadline <= now) expire(&procs[i]);
        if (r > 0 && pfd[0].revents) read_input();
        handle_frames();
    }
}
