/*
 * fanout_reader.c -- read what a fan-out server writes, as fast as possible, and check it.
 *
 *   fanout_reader -p PORT -c CONNS -m MSGS -s SIZE [--server-pid PID] [--perf-ctl FIFO]
 *                 [--timeout SECONDS] [--json]
 *
 * Opens CONNS connections, sends one byte ("go") on each once all are connected, then
 * only reads (epoll, 256 KiB reads) until each connection has delivered MSGS messages
 * of SIZE bytes and been closed by the server. Message k of a connection is: k as a
 * 32-bit little-endian sequence number, then SIZE - 4 bytes of a pattern starting at
 * offset k % 251 (see benchmarks/servers/fanout_server.py). Every byte is checked, so a
 * lost, repeated, reordered or corrupted message is counted as a mismatch; bytes after
 * the last message are "extra"; a close before it is "short".
 *
 * Timing: from the first byte received to the last expected byte (all connections):
 * messages/s = CONNS * MSGS / that. The server's CPU (/proc/PID/stat) and, with
 * --perf-ctl, the perf counters (the FIFO gets "enable" after the go bytes and "disable"
 * at the last byte) cover the window from the go bytes to the last byte.
 * Exit status: 0 ok, 1 errors, 2 bad usage. Loopback only.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
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

#define PERIOD 251
#define RBUF (256 * 1024)
#define MAXEV 1024
#define MAXCPU 64

struct conn {
    int fd, connected, done;
    uint64_t msgs;      /* complete messages received */
    size_t pos;         /* bytes of the current message received */
};

static int nconns = 64, port = 0, json = 0, perf_ctl_fd = -1;
static long server_pid = 0;
static uint64_t nmsgs = 100000;
static size_t size = 64;
static double timeout_s = 300;
static unsigned char pat[PERIOD + (1 << 20)];
static unsigned char rbuf[RBUF];
static uint64_t e_connect, e_reset, e_mismatch, e_extra, e_short, e_timeout, e_other;

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}
static void die(const char *m) { fprintf(stderr, "fanout_reader: %s\n", m); exit(2); }

/* Check n received bytes against what message c->msgs (at c->pos) must hold; advance. */
static int check(struct conn *c, const unsigned char *p, size_t n) {
    while (n) {
        if (c->msgs >= nmsgs) { e_extra++; return 0; }
        uint32_t k = (uint32_t)c->msgs;
        size_t take;
        if (c->pos < 4) {
            take = 4 - c->pos < n ? 4 - c->pos : n;
            for (size_t i = 0; i < take; i++)
                if (p[i] != (unsigned char)(k >> (8 * (c->pos + i)))) { e_mismatch++; return 0; }
        } else {
            take = size - c->pos < n ? size - c->pos : n;
            if (memcmp(p, pat + k % PERIOD + (c->pos - 4), take) != 0) { e_mismatch++; return 0; }
        }
        p += take;
        n -= take;
        c->pos += take;
        if (c->pos == size) { c->pos = 0; c->msgs++; }
    }
    return 1;
}

struct cpusnap { double self, srv; int ncpu; unsigned long long busy[MAXCPU], steal[MAXCPU], total[MAXCPU]; };
static double server_cpu_s(void) {
    if (server_pid <= 0) return -1;
    char p[64], buf[1024];
    snprintf(p, sizeof p, "/proc/%ld/stat", server_pid);
    FILE *f = fopen(p, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *q = strrchr(buf, ')');
    unsigned long ut, st;
    if (!q || sscanf(q + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}
static void snap(struct cpusnap *s) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    s->self = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    s->srv = server_cpu_s();
    s->ncpu = 0;
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f) && s->ncpu < MAXCPU) {
        int id;
        unsigned long long v[8] = {0};
        if (sscanf(line, "cpu%d %llu %llu %llu %llu %llu %llu %llu %llu", &id, &v[0], &v[1], &v[2], &v[3], &v[4],
                   &v[5], &v[6], &v[7]) == 9 && id == s->ncpu) {
            unsigned long long tot = 0;
            for (int i = 0; i < 8; i++) tot += v[i];
            s->total[s->ncpu] = tot;
            s->busy[s->ncpu] = v[0] + v[1] + v[2] + v[5] + v[6];
            s->steal[s->ncpu] = v[7];
            s->ncpu++;
        }
    }
    fclose(f);
}
static void perf_ctl(const char *cmd) {
    if (perf_ctl_fd >= 0 && write(perf_ctl_fd, cmd, strlen(cmd)) < 0) { perror("fanout_reader: --perf-ctl"); exit(2); }
}

static void usage(void) {
    fprintf(stderr, "usage: fanout_reader -p PORT -c CONNS -m MSGS -s SIZE [--server-pid PID] [--perf-ctl FIFO]\n"
                    "                     [--timeout SECONDS] [--json]\n");
    exit(2);
}

int main(int argc, char **argv) {
    static const struct option opts[] = {
        {"port", 1, 0, 'p'}, {"conns", 1, 0, 'c'}, {"msgs", 1, 0, 'm'}, {"size", 1, 0, 's'},
        {"server-pid", 1, 0, 'S'}, {"perf-ctl", 1, 0, 'F'}, {"timeout", 1, 0, 'T'}, {"json", 0, 0, 'j'},
        {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "p:c:m:s:h", opts, NULL)) != -1) {
        switch (o) {
        case 'p': port = atoi(optarg); break;
        case 'c': nconns = atoi(optarg); break;
        case 'm': nmsgs = strtoull(optarg, NULL, 10); break;
        case 's': size = (size_t)strtoull(optarg, NULL, 10); break;
        case 'S': server_pid = atol(optarg); break;
        case 'F':
            alarm(30);  /* opening blocks until perf has its end open */
            perf_ctl_fd = open(optarg, O_WRONLY | O_CLOEXEC);
            alarm(0);
            if (perf_ctl_fd < 0) { perror("fanout_reader: --perf-ctl"); return 2; }
            break;
        case 'T': timeout_s = atof(optarg); break;
        case 'j': json = 1; break;
        default: usage();
        }
    }
    if (optind != argc || port <= 0 || port > 65535) usage();
    if (nconns < 1 || nconns > 10000) die("conns must be 1..10000");
    if (size < 8 || size > (1 << 20)) die("size must be 8..1MiB");
    if (nmsgs < 1 || nmsgs > 0xffffffffull) die("msgs must be 1..2^32-1");
    if (!(timeout_s > 0)) die("bad timeout");
    signal(SIGPIPE, SIG_IGN);
    alarm((unsigned)timeout_s + 30);
    uint32_t x = 2463534242u;
    unsigned char tbl[PERIOD];
    for (int i = 0; i < PERIOD; i++) { x ^= x << 13; x ^= x >> 17; x ^= x << 5; tbl[i] = (unsigned char)x; }
    for (size_t i = 0; i < sizeof pat; i++) pat[i] = tbl[i % PERIOD];

    struct conn *conns = calloc((size_t)nconns, sizeof *conns);
    if (!conns) die("out of memory");
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    dst.sin_addr.s_addr = htonl(0x7f000001u);
    int pending = 0;
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0) { perror("socket"); return 2; }
        if (connect(c->fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS) {
            e_connect++; close(c->fd); c->fd = -1; c->done = 1; continue;
        }
        struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &e);
        pending++;
    }
    struct epoll_event evs[MAXEV];
    uint64_t t_start = now_ns(), deadline = t_start + (uint64_t)(timeout_s * 1e9);
    while (pending > 0 && now_ns() < deadline) {   /* every connection connected */
        int n = epoll_wait(epfd, evs, MAXEV, 100);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->connected || c->done) continue;
            int err = 0;
            socklen_t l = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
            pending--;
            if (err) { e_connect++; epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL); close(c->fd); c->fd = -1; c->done = 1; continue; }
            c->connected = 1;
            struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
            epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e);
        }
    }
    if (pending > 0) { e_timeout++; }
    struct cpusnap s0, s1;
    snap(&s0);
    perf_ctl("enable\n");
    uint64_t t_go = now_ns();
    for (int i = 0; i < nconns; i++)
        if (conns[i].connected && send(conns[i].fd, "g", 1, MSG_NOSIGNAL) != 1) { e_other++; conns[i].done = 1; }
    int open_conns = 0;
    for (int i = 0; i < nconns; i++) open_conns += !conns[i].done;
    uint64_t t_first = 0, t_last = 0, total_msgs = 0, total_bytes = 0, want = (uint64_t)nconns * nmsgs;
    int stopped = 0;
    while (open_conns > 0) {
        uint64_t t = now_ns();
        if (t > deadline) { e_timeout++; break; }
        int n = epoll_wait(epfd, evs, MAXEV, 100);
        if (n < 0 && errno != EINTR) { perror("epoll_wait"); return 2; }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->done) continue;
            ssize_t r = read(c->fd, rbuf, RBUF);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (r <= 0) {
                if (r < 0) { if (errno == ECONNRESET) e_reset++; else e_other++; }
                else if (c->msgs < nmsgs || c->pos) e_short++;
                c->done = 1;
                open_conns--;
                epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
                continue;
            }
            if (!t_first) t_first = now_ns();
            uint64_t before = c->msgs;
            if (!check(c, rbuf, (size_t)r)) {
                c->done = 1;
                open_conns--;
                epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
                continue;
            }
            total_bytes += (uint64_t)r;
            total_msgs += c->msgs - before;
            if (total_msgs == want && !stopped) {   /* the last expected byte */
                t_last = now_ns();
                snap(&s1);
                perf_ctl("disable\n");
                stopped = 1;
            }
        }
    }
    if (!stopped) { t_last = now_ns(); snap(&s1); perf_ctl("disable\n"); }
    for (int i = 0; i < nconns; i++) if (conns[i].fd >= 0) close(conns[i].fd);
    uint64_t errs = e_connect + e_reset + e_mismatch + e_extra + e_short + e_timeout + e_other;
    double secs = t_first && t_last > t_first ? (double)(t_last - t_first) / 1e9 : 0;
    double win = (double)(t_last - t_go) / 1e9;
    double mps = secs > 0 ? (double)total_msgs / secs : 0;
    double ccpu = win > 0 ? (s1.self - s0.self) / win : 0;
    double scpu_s = (s0.srv >= 0 && s1.srv >= 0) ? s1.srv - s0.srv : -1;
    printf("fanout c=%d m=%llu s=%zu: %llu msgs in %.3f s: %.0f msg/s %.1f MB/s | errors %llu", nconns,
           (unsigned long long)nmsgs, size, (unsigned long long)total_msgs, secs, mps,
           secs > 0 ? (double)total_bytes / secs / 1e6 : 0, (unsigned long long)errs);
    if (errs)
        printf(" (connect %llu reset %llu mismatch %llu extra %llu short %llu timeout %llu other %llu)",
               (unsigned long long)e_connect, (unsigned long long)e_reset, (unsigned long long)e_mismatch,
               (unsigned long long)e_extra, (unsigned long long)e_short, (unsigned long long)e_timeout,
               (unsigned long long)e_other);
    printf(" | cpu reader %.0f%%", ccpu * 100);
    if (scpu_s >= 0 && win > 0) printf(" server %.0f%%", scpu_s / win * 100);
    printf("\n");
    if (json) {
        int ncpu = s0.ncpu < s1.ncpu ? s0.ncpu : s1.ncpu;
        printf("{\"mode\":\"fanout\",\"conns\":%d,\"msgs_per_conn\":%llu,\"size\":%zu,\"messages\":%llu,\"bytes\":%llu,"
               "\"seconds\":%.6f,\"window_s\":%.6f,\"msgs_per_s\":%.1f,\"mbps\":%.3f,", nconns,
               (unsigned long long)nmsgs, size, (unsigned long long)total_msgs, (unsigned long long)total_bytes, secs,
               win, mps, secs > 0 ? (double)total_bytes / secs / 1e6 : 0);
        printf("\"errors\":{\"total\":%llu,\"connect\":%llu,\"reset\":%llu,\"mismatch\":%llu,\"extra\":%llu,"
               "\"short\":%llu,\"timeout\":%llu,\"other\":%llu},", (unsigned long long)errs,
               (unsigned long long)e_connect, (unsigned long long)e_reset, (unsigned long long)e_mismatch,
               (unsigned long long)e_extra, (unsigned long long)e_short, (unsigned long long)e_timeout,
               (unsigned long long)e_other);
        printf("\"client_cpu\":%.3f,", ccpu);
        if (scpu_s >= 0 && win > 0) printf("\"server_cpu\":%.3f,\"server_cpu_s\":%.3f,", scpu_s / win, scpu_s);
        else printf("\"server_cpu\":null,\"server_cpu_s\":null,");
        printf("\"cpu_busy\":[");
        for (int i = 0; i < ncpu; i++) {
            unsigned long long dt = s1.total[i] - s0.total[i];
            printf("%s%.3f", i ? "," : "", dt ? (double)(s1.busy[i] - s0.busy[i]) / (double)dt : 0);
        }
        printf("],\"cpu_steal\":[");
        for (int i = 0; i < ncpu; i++) {
            unsigned long long dt = s1.total[i] - s0.total[i];
            printf("%s%.3f", i ? "," : "", dt ? (double)(s1.steal[i] - s0.steal[i]) / (double)dt : 0);
        }
        printf("]}\n");
    }
    return errs ? 1 : 0;
}
