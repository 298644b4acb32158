/*
 * loadgen.c -- single-threaded epoll TCP load generator for echo servers.
 *
 * Modes (see README.md for the full description):
 *   echo     C connections, request/response ping-pong of S bytes, P requests
 *            outstanding per connection; reports req/s, MB/s, latency.
 *   stream   C connections each write S-byte chunks continuously and read the
 *            echo back; reports MB/s (bytes echoed back and verified).
 *   connect  C workers loop: connect, send S bytes, read the echo, close;
 *            reports connections/s and latency of the whole transaction.
 *
 * Every byte that comes back is compared with what was sent.  The byte at
 * offset o of a connection's stream is pat[(o + seed) % PERIOD] where PERIOD
 * is prime, so consecutive requests differ and lost, duplicated, reordered or
 * corrupted bytes are detected (unless the error is a multiple of PERIOD long).
 *
 * Timeline: connect (echo/stream: and one probe exchange on every connection,
 * see "setup" below), warm-up W seconds, measurement window D seconds, exit.
 * Only events whose timestamp falls inside the window are counted.  Errors are
 * counted over the whole run.  Exit status: 0 ok, 1 errors seen, 2 bad usage.
 * Plain libc, Linux only, IPv4 loopback targets only.
 *
 * This is a copy of the shared harness's loadgen.c (/work/shared/bench, read-only)
 * with two options added for counting what the server does inside the
 * measured window only (benchmarks/compare.py's counting pass):
 *   --perf-ctl FIFO      write "enable" / "disable" to a `perf stat --control
 *                        fifo:FIFO` control FIFO at the window's start and end
 *   --window-signal SIG  send signal SIG to --server-pid at the window's start
 *                        and end (the server snapshots its statistics)
 * Without them it behaves exactly like the shared one.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

enum { M_ECHO, M_STREAM, M_CONNECT };
static const char *mode_names[] = {"echo", "stream", "connect"};

enum { S_IDLE, S_CONNECTING, S_ACTIVE, S_DEAD, S_BACKOFF };

#define PERIOD 251              /* pattern period, prime */
#define RBUF (256 * 1024)       /* read buffer */
#define MAXEV 1024
#define STALL_NS 1000000000ull  /* outstanding work older than this at the end = stalled */
#define BACKOFF_NS 10000000ull  /* connect mode: retry delay after a failed connect */
#define MAXCPU 64

struct conn {
    int fd, id, state;
    uint32_t events;            /* current epoll interest set */
    uint64_t sent, recvd;       /* stream offsets in bytes */
    uint64_t target;            /* bytes that should have been sent by now */
    uint64_t issued, done;      /* requests issued / completed (echo mode) */
    uint64_t *ts;               /* ring of P issue timestamps (echo mode) */
    uint64_t t0;                /* connect: transaction start; backoff: retry time */
    uint64_t last_progress;
    unsigned seed;
    int ready;                  /* echo/stream: probe exchange done */
};

/* ---- configuration ---- */
static int mode = M_ECHO, nconns = 64, pipeline = 1, port = 0, json = 0;
static int verify = 1, linger0 = 0, nsrc = 16;
static long server_pid = 0;
static int perf_ctl_fd = -1, window_signal = 0;
static size_t size = 64;
static double duration = 5.0, warmup = 1.0, setup_timeout = 10.0;
static char host[64] = "127.0.0.1";
static struct sockaddr_in dst;

/* ---- state ---- */
static struct conn *conns;
static int epfd, alive, n_backoff;
static unsigned char *pat, *rbuf;
static size_t patlen;
enum { P_SETUP, P_WARMUP, P_MEASURE, P_DONE };
static int phase;
static uint64_t t_ms = UINT64_MAX, t_me = UINT64_MAX;  /* measurement window [t_ms, t_me) */
static int n_ready;             /* echo/stream: live connections whose probe was echoed */
static uint64_t txn_counter;

/* counters inside the window */
static uint64_t w_reqs, w_bytes, lat_max, lat_sum;
/* errors over the whole run */
static uint64_t e_connect, e_addr, e_reset, e_eof, e_mismatch, e_extra, e_other, e_stalled, e_setup;

/* ---- latency histogram: log-linear, 64 sub-buckets per power of two (<1.6% error) ---- */
#define HBUCKETS (64 * 64)
static uint64_t hist[HBUCKETS], hist_n;

static int hidx(uint64_t v) {
    if (v < 128) return (int)v;
    int e = 63 - __builtin_clzll(v);
    int shift = e - 6;
    int i = shift * 64 + (int)(v >> shift);
    return i < HBUCKETS ? i : HBUCKETS - 1;
}
static double hval(int i) {  /* midpoint of bucket i */
    if (i < 128) return i;
    int shift = i / 64 - 1;
    uint64_t m = (uint64_t)(i % 64 + 64);
    return ((double)(m << shift) + (double)(((m + 1) << shift) - 1)) / 2.0;
}
static void hist_add(uint64_t v) {
    hist[hidx(v)]++;
    hist_n++;
    lat_sum += v;
    if (v > lat_max) lat_max = v;
}
static double hist_pct(double q) {  /* ns */
    if (!hist_n) return 0;
    uint64_t want = (uint64_t)(q * (double)hist_n + 0.999999);
    if (want < 1) want = 1;
    if (want > hist_n) want = hist_n;
    uint64_t cum = 0;
    for (int i = 0; i < HBUCKETS; i++) {
        cum += hist[i];
        if (cum >= want) {
            double v = hval(i);
            return v > (double)lat_max ? (double)lat_max : v;
        }
    }
    return (double)lat_max;
}

/* ---- helpers ---- */
static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}
static int in_window(uint64_t t) { return t >= t_ms && t < t_me; }

static void die(const char *msg) {
    fprintf(stderr, "loadgen: %s\n", msg);
    exit(2);
}

static void ep_set(struct conn *c, uint32_t ev) {
    if (c->events == ev) return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    if (epoll_ctl(epfd, c->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &e) < 0) {
        perror("loadgen: epoll_ctl");
        exit(2);
    }
    c->events = ev;
}

static void close_conn(struct conn *c) {
    if (c->fd >= 0) close(c->fd);  /* close() also removes it from the epoll set */
    c->fd = -1;
    c->events = 0;
}

/* echo/stream: a failed connection stays dead (no reconnect) */
static void kill_conn(struct conn *c) {
    close_conn(c);
    if (c->state != S_DEAD) {
        alive--;
        if (c->ready) n_ready--;  /* n_ready counts live ready connections */
    }
    c->state = S_DEAD;
}

static void count_io_error(int err) {
    if (err == ECONNRESET || err == EPIPE) e_reset++;
    else e_other++;
}

static int sock_error(int fd) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return errno;
    return err;
}

static const unsigned char *pat_at(const struct conn *c, uint64_t off) {
    return pat + (off + c->seed) % PERIOD;
}

/* Check n freshly read bytes against what was sent; returns 0 and counts
 * the error if they are wrong. */
static int check_data(struct conn *c, size_t n) {
    if (c->recvd + n > c->sent) { e_extra++; return 0; }
    if (verify && memcmp(rbuf, pat_at(c, c->recvd), n) != 0) { e_mismatch++; return 0; }
    return 1;
}

/* Write pending bytes [sent, target).  Returns 0, or the errno that broke
 * the connection (the caller counts it). */
static int flush(struct conn *c) {
    while (c->sent < c->target) {
        ssize_t w = send(c->fd, pat_at(c, c->sent), c->target - c->sent, MSG_NOSIGNAL);
        if (w > 0) { c->sent += (uint64_t)w; continue; }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno == EAGAIN) break;
        return w < 0 ? errno : EPIPE;
    }
    return 0;
}

/* ---- echo and stream modes ----
 * Setup: each new connection first does one probe exchange of S bytes.  The
 * load (and the warm-up clock) starts only when every live connection has
 * been served once, so a server that is slow to accept under load is still
 * measured with all C connections active; the time this took is reported
 * as setup_ms.  A connection not served within --setup-timeout counts as an
 * error and joins the load whenever its probe completes.
 */
static void mark_ready(struct conn *c) {
    c->ready = 1;
    n_ready++;
}

static void echo_issue(struct conn *c, uint64_t t) {
    c->ts[c->issued % (uint64_t)pipeline] = t;
    c->issued++;
    c->target += size;
}

/* write what is pending and set the epoll interest; 0 if the connection died */
static int echo_flush(struct conn *c) {
    int err = flush(c);
    if (err) { count_io_error(err); kill_conn(c); return 0; }
    ep_set(c, EPOLLIN | (c->sent < c->target ? EPOLLOUT : 0));
    return 1;
}

static void echo_kick(struct conn *c, uint64_t t) {  /* start the load: P requests */
    for (int i = 0; i < pipeline; i++) echo_issue(c, t);
    echo_flush(c);
}

static void echo_event(struct conn *c, uint32_t ev) {
    if (c->state == S_CONNECTING) {
        int err = sock_error(c->fd);
        if (err) { e_connect++; kill_conn(c); return; }
        c->state = S_ACTIVE;
        uint64_t t = now_ns();
        c->last_progress = t;
        echo_issue(c, t);  /* the probe */
    } else if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        ssize_t n = read(c->fd, rbuf, RBUF);
        if (n == 0) { e_eof++; kill_conn(c); return; }
        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR) { count_io_error(errno); kill_conn(c); return; }
        } else {
            if (!check_data(c, (size_t)n)) { kill_conn(c); return; }
            c->recvd += (uint64_t)n;
            uint64_t t = now_ns();
            c->last_progress = t;
            int win = in_window(t);
            if (win) w_bytes += (uint64_t)n;
            while (c->recvd >= (c->done + 1) * size) {
                uint64_t lat = t - c->ts[c->done % (uint64_t)pipeline];
                c->done++;
                if (win) { w_reqs++; hist_add(lat); }
                if (c->ready) { echo_issue(c, t); continue; }
                mark_ready(c);  /* probe done */
                if (phase != P_SETUP) { echo_kick(c, t); return; }
            }
        }
    }
    echo_flush(c);
}

/* stream: keep writing S-byte chunks until the socket is full */
static void stream_write(struct conn *c) {
    while (phase != P_DONE) {
        if (c->target == c->sent) c->target += size;   /* next chunk */
        uint64_t before = c->sent;
        int err = flush(c);
        if (err) { count_io_error(err); kill_conn(c); return; }
        if (c->sent < c->target || c->sent == before) break;  /* EAGAIN */
    }
}

/* edge-triggered: read and write until EAGAIN */
static void stream_event(struct conn *c, uint32_t ev) {
    (void)ev;
    if (c->state == S_CONNECTING) {
        int err = sock_error(c->fd);
        if (err) { e_connect++; kill_conn(c); return; }
        c->state = S_ACTIVE;
        c->last_progress = now_ns();
        c->target = size;  /* the probe */
    }
    for (;;) {
        ssize_t n = read(c->fd, rbuf, RBUF);
        if (n == 0) { e_eof++; kill_conn(c); return; }
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            count_io_error(errno); kill_conn(c); return;
        }
        if (!check_data(c, (size_t)n)) { kill_conn(c); return; }
        c->recvd += (uint64_t)n;
        uint64_t t = now_ns();
        c->last_progress = t;
        if (in_window(t)) w_bytes += (uint64_t)n;
        if (!c->ready && c->recvd >= size) mark_ready(c);
    }
    if (c->ready && phase != P_SETUP) {
        stream_write(c);
    } else {
        int err = flush(c);  /* rest of the probe */
        if (err) { count_io_error(err); kill_conn(c); }
    }
}

/* ---- connect mode ---- */
static struct sockaddr_in src_addr(uint64_t k) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    /* 127.0.0.1 .. 127.0.0.nsrc */
    a.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(k % (uint64_t)nsrc));
    return a;
}

static void backoff(struct conn *c) {
    close_conn(c);
    c->state = S_BACKOFF;
    c->t0 = now_ns() + BACKOFF_NS;
    n_backoff++;
}

static void connect_start(struct conn *c) {
    c->t0 = now_ns();
    c->sent = c->recvd = 0;
    c->target = size;
    c->seed = (unsigned)(txn_counter % PERIOD);
    c->events = 0;
    uint64_t k = txn_counter++;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) { e_other++; backoff(c); return; }
    if (linger0) {
        struct linger l = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    if (nsrc > 0) {
        /* Spread connections over several source addresses; the port is only
         * chosen at connect() time, per 4-tuple (IP_BIND_ADDRESS_NO_PORT). */
        struct sockaddr_in s = src_addr(k);
        int one = 1;
        setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(c->fd, (struct sockaddr *)&s, sizeof s) < 0) {
            if (errno == EADDRINUSE || errno == EADDRNOTAVAIL) e_addr++; else e_other++;
            backoff(c);
            return;
        }
    }
    if (connect(c->fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS) {
        if (errno == EADDRNOTAVAIL || errno == EADDRINUSE) e_addr++;
        else if (errno == ECONNREFUSED) e_connect++;
        else e_other++;
        backoff(c);
        return;
    }
    c->state = S_CONNECTING;
    /* edge-triggered, registered once: OUT edge = connected, IN edge = echo */
    ep_set(c, EPOLLIN | EPOLLOUT | EPOLLET);
}

static void connect_fail(struct conn *c, int err) {
    if (err == EADDRNOTAVAIL) e_addr++;
    else if (err == ECONNREFUSED) e_connect++;
    else count_io_error(err);
    backoff(c);
}

static void connect_event(struct conn *c, uint32_t ev) {
    if (c->state == S_CONNECTING) {
        if (ev & EPOLLERR) { connect_fail(c, sock_error(c->fd)); return; }
        if (!(ev & (EPOLLOUT | EPOLLHUP))) return;
        c->state = S_ACTIVE;   /* a failed connect also shows up as a send error */
    }
    if (c->sent < c->target) {
        int err = flush(c);
        if (err) { connect_fail(c, err); return; }
        if (!(ev & (EPOLLIN | EPOLLERR | EPOLLHUP))) return;  /* echo not there yet */
    }
    for (;;) {
        ssize_t n = read(c->fd, rbuf, RBUF);
        if (n > 0) {
            if (!check_data(c, (size_t)n)) { close_conn(c); connect_start(c); return; }
            c->recvd += (uint64_t)n;
            if (c->recvd == size) {
                uint64_t t = now_ns();
                if (in_window(t)) { w_reqs++; w_bytes += size; hist_add(t - c->t0); }
                close_conn(c);
                connect_start(c);
                return;
            }
            continue;
        }
        if (n == 0) { e_eof++; close_conn(c); connect_start(c); return; }
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return;
        count_io_error(errno);
        close_conn(c);
        connect_start(c);
        return;
    }
}

/* ---- window hooks: tell perf and the server where the measured window is ---- */
static void window_edge(const char *perf_cmd) {
    if (perf_ctl_fd >= 0 && write(perf_ctl_fd, perf_cmd, strlen(perf_cmd)) < 0) {
        perror("loadgen: --perf-ctl write");
        exit(2);
    }
    if (window_signal && server_pid > 0 && kill((pid_t)server_pid, window_signal) < 0) {
        perror("loadgen: --window-signal");
        exit(2);
    }
}

/* ---- CPU accounting ---- */
struct cpusnap {
    uint64_t t;                 /* ns */
    double self;                /* loadgen user+sys seconds */
    double srv;                 /* server user+sys seconds, <0 if unknown */
    int ncpu;
    unsigned long long busy[MAXCPU], steal[MAXCPU], total[MAXCPU];
};

static double server_cpu_s(void) {
    if (server_pid <= 0) return -1;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", server_pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    unsigned long ut, st;
    if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void snap(struct cpusnap *s) {
    struct rusage ru;
    s->t = now_ns();
    getrusage(RUSAGE_SELF, &ru);
    s->self = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
              (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    s->srv = server_cpu_s();
    s->ncpu = 0;
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f) && s->ncpu < MAXCPU) {
        int id;
        unsigned long long v[8] = {0};
        if (sscanf(line, "cpu%d %llu %llu %llu %llu %llu %llu %llu %llu", &id, &v[0], &v[1], &v[2],
                   &v[3], &v[4], &v[5], &v[6], &v[7]) == 9 && id == s->ncpu) {
            unsigned long long tot = 0;
            for (int i = 0; i < 8; i++) tot += v[i];
            s->total[s->ncpu] = tot;
            s->busy[s->ncpu] = v[0] + v[1] + v[2] + v[5] + v[6];  /* user nice system irq softirq */
            s->steal[s->ncpu] = v[7];                             /* taken by the hypervisor */
            s->ncpu++;
        }
    }
    fclose(f);
}

/* ---- main ---- */
static void usage(void) {
    fprintf(stderr,
        "usage: loadgen -m echo|stream|connect -p PORT [options]\n"
        "  -H, --host ADDR        IPv4 loopback address (default 127.0.0.1)\n"
        "  -p, --port PORT        server port (required)\n"
        "  -c, --conns C          connections / workers (default 64)\n"
        "  -s, --size S           payload / chunk bytes (default 64)\n"
        "  -P, --pipeline P       echo: requests outstanding per connection (default 1)\n"
        "  -d, --duration D       measurement seconds (default 5)\n"
        "  -w, --warmup W         warm-up seconds before measuring (default 1)\n"
        "      --setup-timeout T  echo/stream: max seconds to get every connection served once (10)\n"
        "      --src-addrs N      connect: spread over 127.0.0.1..N as sources (default 16, 0 = off)\n"
        "      --linger0          connect: close with SO_LINGER 0 (RST) instead of FIN\n"
        "      --server-pid PID   report that process's CPU use in the window\n"
        "      --no-verify        do not compare echoed bytes (counts are still checked)\n"
        "      --perf-ctl FIFO    write enable/disable to this perf stat control FIFO at the window's edges\n"
        "      --window-signal N  send signal N to --server-pid at the window's start and end\n"
        "      --json             also print one JSON line\n");
    exit(2);
}

int main(int argc, char **argv) {
    static const struct option opts[] = {
        {"mode", 1, 0, 'm'}, {"host", 1, 0, 'H'}, {"port", 1, 0, 'p'}, {"conns", 1, 0, 'c'},
        {"size", 1, 0, 's'}, {"pipeline", 1, 0, 'P'}, {"duration", 1, 0, 'd'},
        {"warmup", 1, 0, 'w'}, {"json", 0, 0, 'j'}, {"server-pid", 1, 0, 'S'},
        {"src-addrs", 1, 0, 'A'}, {"linger0", 0, 0, 'L'}, {"no-verify", 0, 0, 'V'},
        {"setup-timeout", 1, 0, 'T'}, {"help", 0, 0, 'h'}, {"perf-ctl", 1, 0, 'F'},
        {"window-signal", 1, 0, 'G'}, {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "m:H:p:c:s:P:d:w:h", opts, NULL)) != -1) {
        switch (o) {
        case 'm':
            if (!strcmp(optarg, "echo")) mode = M_ECHO;
            else if (!strcmp(optarg, "stream")) mode = M_STREAM;
            else if (!strcmp(optarg, "connect")) mode = M_CONNECT;
            else die("unknown mode");
            break;
        case 'H': snprintf(host, sizeof host, "%s", optarg); break;
        case 'p': port = atoi(optarg); break;
        case 'c': nconns = atoi(optarg); break;
        case 's': size = (size_t)strtoull(optarg, NULL, 10); break;
        case 'P': pipeline = atoi(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 'j': json = 1; break;
        case 'S': server_pid = atol(optarg); break;
        case 'A': nsrc = atoi(optarg); break;
        case 'L': linger0 = 1; break;
        case 'V': verify = 0; break;
        case 'T': setup_timeout = atof(optarg); break;
        case 'F':
            /* blocks until perf has opened its end: bounded by an alarm */
            alarm(30);
            perf_ctl_fd = open(optarg, O_WRONLY | O_CLOEXEC);
            alarm(0);
            if (perf_ctl_fd < 0) { perror("loadgen: --perf-ctl"); return 2; }
            break;
        case 'G': window_signal = atoi(optarg); break;
        default: usage();
        }
    }
    if (optind != argc || port <= 0 || port > 65535) usage();
    if (nconns < 1 || nconns > 100000) die("conns must be 1..100000");
    if (size < 1 || size > (64u << 20)) die("size must be 1..64MiB");
    if (pipeline < 1 || pipeline > 4096) die("pipeline must be 1..4096");
    if (!(duration > 0 && duration <= 3600) || !(warmup >= 0 && warmup <= 3600) ||
        !(setup_timeout > 0 && setup_timeout <= 3600))
        die("bad duration/warmup/setup-timeout");
    if (nsrc < 0 || nsrc > 254) die("src-addrs must be 0..254");
    if (window_signal && (window_signal < 1 || window_signal > 64 || server_pid <= 0))
        die("--window-signal needs a signal number 1..64 and --server-pid");
    if (!strcmp(host, "localhost")) strcpy(host, "127.0.0.1");
    dst.sin_family = AF_INET;
    dst.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &dst.sin_addr) != 1) die("host must be an IPv4 address");
    if ((ntohl(dst.sin_addr.s_addr) >> 24) != 127) die("refusing non-loopback target (127.0.0.0/8 only)");

    signal(SIGPIPE, SIG_IGN);
    /* watchdog: never outlive the planned run by much */
    alarm((unsigned)(setup_timeout + warmup + duration) + 20);

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)nconns + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    /* pattern long enough for the largest single send or read, plus one period */
    size_t need = RBUF;
    if (size * (size_t)pipeline > need) need = size * (size_t)pipeline;
    patlen = need + PERIOD;
    pat = malloc(patlen);
    rbuf = malloc(RBUF);
    conns = calloc((size_t)nconns, sizeof *conns);
    if (!pat || !rbuf || !conns) die("out of memory");
    unsigned char tbl[PERIOD];
    uint32_t x = 2463534242u;
    for (int i = 0; i < PERIOD; i++) { x ^= x << 13; x ^= x >> 17; x ^= x << 5; tbl[i] = (unsigned char)x; }
    for (size_t i = 0; i < patlen; i++) pat[i] = tbl[i % PERIOD];

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) { perror("epoll_create1"); return 2; }

    uint64_t t_begin = now_ns(), t_setup_end = t_begin + (uint64_t)(setup_timeout * 1e9), t_load = 0;

    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        c->id = i;
        c->fd = -1;
        if (mode == M_CONNECT) continue;
        c->seed = (unsigned)((uint64_t)i * 37 % PERIOD);
        if (mode == M_ECHO && !(c->ts = calloc((size_t)pipeline, sizeof *c->ts))) die("out of memory");
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0) { perror("loadgen: socket"); return 2; }
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        alive++;
        if (connect(c->fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS) {
            if (errno == EADDRNOTAVAIL) e_addr++; else e_connect++;
            kill_conn(c);
            continue;
        }
        c->state = S_CONNECTING;
        ep_set(c, mode == M_STREAM ? (EPOLLIN | EPOLLOUT | EPOLLET) : EPOLLOUT);
    }

    struct epoll_event evs[MAXEV];
    struct cpusnap s0 = {0}, s1 = {0};
    for (;;) {
        uint64_t t = now_ns();
        if (phase == P_SETUP && (mode == M_CONNECT || n_ready == alive || t >= t_setup_end)) {
            /* every live connection has been served once (or we gave up waiting): start the load */
            phase = P_WARMUP;
            t_load = t;
            t_ms = t + (uint64_t)(warmup * 1e9);
            t_me = t_ms + (uint64_t)(duration * 1e9);
            alarm((unsigned)(warmup + duration) + 20);
            for (int i = 0; i < nconns; i++) {
                struct conn *c = &conns[i];
                if (mode == M_CONNECT) connect_start(c);
                else if (c->state == S_ACTIVE && c->ready) {
                    if (mode == M_ECHO) echo_kick(c, t); else stream_write(c);
                } else if (c->state == S_CONNECTING || c->state == S_ACTIVE) {
                    e_setup++;  /* not served within the setup timeout */
                }
            }
        }
        if (phase == P_WARMUP && t >= t_ms) { window_edge("enable\n"); snap(&s0); phase = P_MEASURE; }
        if (phase == P_MEASURE && t >= t_me) { snap(&s1); window_edge("disable\n"); phase = P_DONE; break; }
        if (mode != M_CONNECT && alive == 0) break;  /* every connection failed */
        uint64_t next = phase == P_SETUP ? t_setup_end : phase == P_WARMUP ? t_ms : t_me;
        int timeout = (int)((next - t + 999999) / 1000000);
        if (timeout > 100) timeout = 100;
        if (n_backoff && timeout > 2) timeout = 2;
        int n = epoll_wait(epfd, evs, MAXEV, timeout);
        if (n < 0 && errno != EINTR) { perror("epoll_wait"); return 2; }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->fd < 0) continue;
            if (mode == M_ECHO) echo_event(c, evs[i].events);
            else if (mode == M_STREAM) stream_event(c, evs[i].events);
            else connect_event(c, evs[i].events);
        }
        if (n_backoff) {
            uint64_t now = now_ns();
            for (int i = 0; i < nconns; i++) {
                struct conn *c = &conns[i];
                if (c->state == S_BACKOFF && now >= c->t0) { n_backoff--; connect_start(c); }
            }
        }
    }
    if (phase != P_DONE) { snap(&s1); if (!s0.t) s0 = s1; }  /* ended early: all connections failed */
    double setup_ms = t_load ? (double)(t_load - t_begin) / 1e6 : (double)(now_ns() - t_begin) / 1e6;

    /* stalled: work outstanding for more than STALL_NS at the end */
    uint64_t tend = now_ns();
    int nalive = 0;
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        if (c->state == S_CONNECTING || c->state == S_ACTIVE) {
            nalive++;
            uint64_t since = mode == M_CONNECT ? c->t0 : c->last_progress;
            if (c->state == S_CONNECTING && mode != M_CONNECT) since = t_begin;  /* never connected */
            int pending = c->state == S_CONNECTING || c->recvd < c->target;
            /* echo/stream connections never served were already counted in e_setup */
            if (mode != M_CONNECT && !c->ready) pending = 0;
            if (pending && tend - since > STALL_NS) e_stalled++;
        }
        close_conn(c);
    }

    double win = duration;
    double wall = s1.t > s0.t ? (double)(s1.t - s0.t) / 1e9 : 0;
    double rps = (double)w_reqs / win;
    double mbps = (double)w_bytes / win / 1e6;
    double ccpu = wall > 0 ? (s1.self - s0.self) / wall : 0;
    double scpu = (wall > 0 && s0.srv >= 0 && s1.srv >= 0) ? (s1.srv - s0.srv) / wall : -1;
    uint64_t errs = e_connect + e_addr + e_reset + e_eof + e_mismatch + e_extra + e_other + e_stalled + e_setup;
    double p50 = hist_pct(0.50) / 1e3, p90 = hist_pct(0.90) / 1e3, p99 = hist_pct(0.99) / 1e3,
           p999 = hist_pct(0.999) / 1e3, mx = (double)lat_max / 1e3,
           mean = hist_n ? (double)lat_sum / (double)hist_n / 1e3 : 0;
    int ncpu = s0.ncpu < s1.ncpu ? s0.ncpu : s1.ncpu;
    double busy[MAXCPU], steal[MAXCPU];
    for (int i = 0; i < ncpu; i++) {
        unsigned long long dt = s1.total[i] - s0.total[i];
        busy[i] = dt ? (double)(s1.busy[i] - s0.busy[i]) / (double)dt : 0;
        steal[i] = dt ? (double)(s1.steal[i] - s0.steal[i]) / (double)dt : 0;
    }

    /* human line */
    printf("%s c=%d s=%zu", mode_names[mode], nconns, size);
    if (mode == M_ECHO) printf(" p=%d", pipeline);
    if (mode == M_ECHO) printf(": %.0f req/s %.2f MB/s", rps, mbps);
    else if (mode == M_CONNECT) printf(": %.0f conn/s", rps);
    else printf(": %.2f MB/s", mbps);
    if (mode != M_STREAM)
        printf(" | lat us p50 %.1f p99 %.1f p99.9 %.1f max %.1f", p50, p99, p999, mx);
    if (mode != M_CONNECT) printf(" | setup %.0f ms", setup_ms);
    printf(" | errors %llu", (unsigned long long)errs);
    if (errs)
        printf(" (connect %llu addr %llu reset %llu eof %llu mismatch %llu extra %llu other %llu stalled %llu setup %llu)",
               (unsigned long long)e_connect, (unsigned long long)e_addr, (unsigned long long)e_reset,
               (unsigned long long)e_eof, (unsigned long long)e_mismatch, (unsigned long long)e_extra,
               (unsigned long long)e_other, (unsigned long long)e_stalled, (unsigned long long)e_setup);
    printf(" | cpu loadgen %.0f%%", ccpu * 100);
    if (scpu >= 0) printf(" server %.0f%%", scpu * 100);
    for (int i = 0; i < ncpu; i++) printf(" cpu%d %.0f%% (steal %.0f%%)", i, busy[i] * 100, steal[i] * 100);
    printf("\n");

    if (json) {
        printf("{\"mode\":\"%s\",\"host\":\"%s\",\"port\":%d,\"conns\":%d,\"size\":%zu,\"pipeline\":%d,"
               "\"duration_s\":%g,\"warmup_s\":%g,\"verify\":%s,",
               mode_names[mode], host, port, nconns, size, pipeline, duration, warmup,
               verify ? "true" : "false");
        if (mode == M_CONNECT) printf("\"src_addrs\":%d,\"linger0\":%s,", nsrc, linger0 ? "true" : "false");
        printf("\"requests\":%llu,\"rps\":%.1f,\"mbps\":%.3f,", (unsigned long long)w_reqs, rps, mbps);
        if (mode != M_STREAM && hist_n)
            printf("\"lat_us\":{\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f,\"mean\":%.1f},",
                   p50, p90, p99, p999, mx, mean);
        else printf("\"lat_us\":null,");
        printf("\"errors\":{\"total\":%llu,\"connect\":%llu,\"addrnotavail\":%llu,\"reset\":%llu,\"eof\":%llu,"
               "\"mismatch\":%llu,\"extra\":%llu,\"other\":%llu,\"stalled\":%llu,\"setup\":%llu},",
               (unsigned long long)errs, (unsigned long long)e_connect, (unsigned long long)e_addr,
               (unsigned long long)e_reset, (unsigned long long)e_eof, (unsigned long long)e_mismatch,
               (unsigned long long)e_extra, (unsigned long long)e_other, (unsigned long long)e_stalled,
               (unsigned long long)e_setup);
        printf("\"conns_alive\":%d,\"loadgen_cpu\":%.3f,", nalive, ccpu);
        if (scpu >= 0) printf("\"server_cpu\":%.3f,", scpu); else printf("\"server_cpu\":null,");
        printf("\"cpu_busy\":[");
        for (int i = 0; i < ncpu; i++) printf("%s%.3f", i ? "," : "", busy[i]);
        printf("],\"cpu_steal\":[");
        for (int i = 0; i < ncpu; i++) printf("%s%.3f", i ? "," : "", steal[i]);
        printf("],\"setup_ms\":%.1f}\n", setup_ms);
    }
    return errs ? 1 : 0;
}
