/*
 * demo_client.c - the echo client of `python -m trio_uring demo`.
 *
 * A Python client would be as slow as the Python server it measures, so the
 * demo compiles this (with the gcc trio_uring's install needs anyway) and runs
 * it on the other CPU. One thread, epoll, N connections each sending SIZE
 * bytes and waiting for their echo before the next request; every echoed byte
 * is checked. Prints "<round trips> <errors>" after DURATION seconds.
 *
 *   demo_client PORT CONNECTIONS SIZE DURATION
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
    int fd;
    size_t got;  /* bytes of the current echo received */
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s PORT CONNECTIONS SIZE DURATION\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]), nconn = atoi(argv[2]);
    size_t size = (size_t)atol(argv[3]);
    double duration = atof(argv[4]);
    char *msg = malloc(size), *buf = malloc(size);
    struct conn *conns = calloc((size_t)nconn, sizeof(*conns));
    int ep = epoll_create1(EPOLL_CLOEXEC);
    long done = 0, errors = 0;
    struct sockaddr_in sa;

    if (!msg || !buf || !conns || ep < 0)
        return 1;
    for (size_t i = 0; i < size; i++)
        msg[i] = (char)('a' + i % 26);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < nconn; i++) {
        int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
            perror("connect");
            return 1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        conns[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        if (send(fd, msg, size, 0) != (ssize_t)size)
            errors++;
    }
    double end = now() + duration;
    struct epoll_event events[256];
    while (now() < end) {
        int n = epoll_wait(ep, events, 256, 100);
        for (int e = 0; e < n; e++) {
            struct conn *c = &conns[events[e].data.u32];
            ssize_t r = recv(c->fd, buf + c->got, size - c->got, MSG_DONTWAIT);
            if (r <= 0) {
                if (r < 0 && (errno == EAGAIN || errno == EINTR))
                    continue;
                errors++;  /* the server closed or reset: stop using it */
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                continue;
            }
            if (memcmp(buf + c->got, msg + c->got, (size_t)r) != 0)
                errors++;
            c->got += (size_t)r;
            if (c->got == size) {
                c->got = 0;
                done++;
                if (send(c->fd, msg, size, 0) != (ssize_t)size)
                    errors++;
            }
        }
    }
    printf("%ld %ld\n", done, errors);
    return 0;
}
