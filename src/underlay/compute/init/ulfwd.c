/*
 * ulfwd: the sandbox end of opt-in network egress.
 *
 *   ulfwd PORT SOCKET
 *
 * A sandbox has no network interface but loopback. When its owner allows egress, the
 * host runs an HTTP proxy (with the domain allow-list and the audit trail) on a unix
 * socket bound into the sandbox at SOCKET, and ulfwd listens on 127.0.0.1:PORT inside
 * the sandbox and relays every TCP connection to that socket, byte for byte. Programs
 * reach the proxy through HTTP_PROXY / HTTPS_PROXY. One child process per connection;
 * children are reaped automatically (SIGCHLD ignored).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int pump(int from, int to) {
    char buf[65536];
    ssize_t n = read(from, buf, sizeof buf);
    if (n <= 0) return -1;
    for (ssize_t off = 0; off < n;) {
        ssize_t w = write(to, buf + off, (size_t)(n - off));
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        off += w;
    }
    return 0;
}

static void relay(int client, const char *path) {
    int up = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strncpy(addr.sun_path, path, sizeof addr.sun_path - 1);
    if (up < 0 || connect(up, (struct sockaddr *)&addr, sizeof addr) < 0) _exit(1);
    struct pollfd fds[2] = {{.fd = client, .events = POLLIN}, {.fd = up, .events = POLLIN}};
    int open_dirs = 2;
    while (open_dirs > 0) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            int other = i == 0 ? up : client;
            if (pump(fds[i].fd, other) < 0) {
                shutdown(other, SHUT_WR);
                fds[i].fd = -1;
                open_dirs--;
            }
        }
    }
    _exit(0);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: ulfwd PORT SOCKET\n");
        return 2;
    }
    signal(SIGCHLD, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    int lsock = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lsock, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lsock, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lsock, 128) < 0) {
        perror("ulfwd: listen");
        return 1;
    }
    for (;;) {
        int client = accept4(lsock, NULL, NULL, SOCK_CLOEXEC);
        if (client < 0) continue;
        pid_t pid = fork();
        if (pid == 0) {
            close(lsock);
            relay(client, argv[2]);
        }
        close(client);
    }
}
