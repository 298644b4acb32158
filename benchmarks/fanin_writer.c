/*
 * fanin_writer.c -- many connections streaming messages to one server, as fast as it reads.
 *
 *   fanin_writer -p PORT -c CONNS -m MSGS -s SIZE [--pause-us N] [--timeout SECONDS]
 *
 * Opens CONNS connections to 127.0.0.1:PORT, then writes MSGS messages of SIZE bytes
 * on each, one write(2) per message (so small messages leave as small segments),
 * round-robin over the connections that have room (epoll, edge-triggered), and
 * shuts each connection down (SHUT_WR) after its last message; exits once the
 * server has closed every connection (it reads to EOF, then closes). Message k of
 * a connection is SIZE bytes of (k + offset) & 0xff, so a reader could check them.
 * --pause-us N paces it instead: each round writes one message on every connection
 * (what fits; the rest next round), then sleeps N microseconds, so a server that
 * keeps up waits for every message.
 * Prints one JSON line: {"bytes": N, "seconds": S}. Exit status: 0 ok, 1 error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
    int fd;
    long sent_msgs;
    long off;  /* bytes of the current message already written */
    int done;  /* 1: shut down for writing; 2: the server closed */
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    int port = 0, conns = 64, timeout = 120, pause_us = 0;
    long msgs = 1000, size = 64;
    static const struct option longopts[] = {{"timeout", required_argument, NULL, 't'},
                                           {"pause-us", required_argument, NULL, 'u'}, {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "p:c:m:s:", longopts, NULL)) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'c': conns = atoi(optarg); break;
        case 'm': msgs = atol(optarg); break;
        case 's': size = atol(optarg); break;
        case 't': timeout = atoi(optarg); break;
        case 'u': pause_us = atoi(optarg); break;
        default: fprintf(stderr, "usage: fanin_writer -p PORT -c CONNS -m MSGS -s SIZE\n"); return 2;
        }
    }
    if (!port || conns < 1 || msgs < 1 || size < 1) {
        fprintf(stderr, "fanin_writer: bad arguments\n");
        return 2;
    }
    char *msg = malloc(size + 256);
    for (long i = 0; i < size + 256; i++)
        msg[i] = (char)i;
    struct conn *cs = calloc(conns, sizeof(*cs));
    int ep = epoll_create1(0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < conns; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
            perror("connect");
            return 1;
        }
        cs[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP | EPOLLET, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    long long total = 0;
    int open_conns = conns;
    double t0 = now(), deadline = t0 + timeout;
    struct epoll_event evs[256];
    /* Paced: one message per connection per round, then a pause. */
    int writing = pause_us > 0 ? conns : 0;
    while (writing > 0) {
        if (now() > deadline) {
            fprintf(stderr, "fanin_writer: timeout while writing\n");
            return 1;
        }
        for (int i = 0; i < conns; i++) {
            struct conn *c = &cs[i];
            if (c->done)
                continue;
            long target = c->sent_msgs + 1;
            while (c->sent_msgs < target) {
                ssize_t w = write(c->fd, msg + (c->sent_msgs & 0xff) + c->off, size - c->off);
                if (w < 0) {
                    if (errno == EAGAIN || errno == ENOTCONN)
                        break;
                    perror("write");
                    return 1;
                }
                total += w;
                c->off += w;
                if (c->off == size) {
                    c->off = 0;
                    c->sent_msgs++;
                }
            }
            if (c->sent_msgs == msgs) {
                shutdown(c->fd, SHUT_WR);
                c->done = 1;
                writing--;
            }
        }
        struct timespec ts = {pause_us / 1000000, (pause_us % 1000000) * 1000L};
        nanosleep(&ts, NULL);
    }
    while (open_conns > 0) {
        if (now() > deadline) {
            fprintf(stderr, "fanin_writer: timeout with %d connections open\n", open_conns);
            return 1;
        }
        int n = epoll_wait(ep, evs, 256, 1000);
        for (int e = 0; e < n; e++) {
            struct conn *c = &cs[evs[e].data.u32];
            if (evs[e].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
                char sink[64];
                ssize_t r = read(c->fd, sink, sizeof(sink));
                if (r == 0 || (r < 0 && errno != EAGAIN)) {
                    if (c->done != 2) {
                        if (c->sent_msgs < msgs) {
                            fprintf(stderr, "fanin_writer: the server closed a connection early\n");
                            return 1;
                        }
                        c->done = 2;
                        close(c->fd);
                        open_conns--;
                    }
                    continue;
                }
            }
            if (c->done || !(evs[e].events & EPOLLOUT))
                continue;
            /* Write until the socket is full (edge-triggered). */
            while (c->sent_msgs < msgs) {
                const char *p = msg + (c->sent_msgs & 0xff) + c->off;
                ssize_t w = write(c->fd, p, size - c->off);
                if (w < 0) {
                    if (errno == EAGAIN)
                        break;
                    perror("write");
                    return 1;
                }
                total += w;
                c->off += w;
                if (c->off == size) {
                    c->off = 0;
                    c->sent_msgs++;
                }
            }
            if (c->sent_msgs == msgs && !c->done) {
                shutdown(c->fd, SHUT_WR);
                c->done = 1;
            }
        }
    }
    printf("{\"bytes\": %lld, \"seconds\": %.6f}\n", total, now() - t0);
    return 0;
}
