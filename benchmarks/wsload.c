/*
 * wsload.c -- single-threaded epoll WebSocket load generator (echo ping-pong).
 *
 *   wsload -p PORT [-c 64] [-s 64] [-d 2] [-w 0.5] [--path /] [--server-pid PID]
 *          [--perf-ctl FIFO] [--setup-timeout 10] [--json]
 *
 * C connections, each: the HTTP/1.1 upgrade handshake (RFC 6455, the RFC's own example
 * key, so the Sec-WebSocket-Accept it must get back is a constant), then one binary
 * message of S bytes at a time, masked as a client must, waiting for the server to echo
 * it back before sending the next. Like the shared harness's loadgen: the load and the
 * clock start only once every connection has done its handshake and one probe message
 * (setup), then W seconds of warm-up, then the measured window of D seconds, in which
 * messages/s, latency (log-linear histogram) and the server's CPU (/proc/PID/stat) are
 * counted. Every echoed payload is compared with what was sent: the byte at offset o of
 * a connection's message stream is pat[(o + seed) % PERIOD], PERIOD prime.
 *
 * Errors are counted over the whole run, by kind (connect, handshake, reset, eof,
 * mismatch, protocol: a frame that is not a binary echo, stalled, setup). Exit status:
 * 0 ok, 1 errors seen, 2 bad usage. Loopback (127.0.0.0/8) targets only.
 * --perf-ctl FIFO: write "enable" / "disable" to a `perf stat --control fifo:FIFO`
 * control FIFO at the window's edges, as benchmarks/loadgen.c does.
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

#define PERIOD 251
#define RBUF (256 * 1024)
#define MAXEV 1024
#define MAXCPU 64
#define STALL_NS 1000000000ull
#define WS_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define WS_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="   /* RFC 6455 section 1.3, for WS_KEY */

enum { S_CONNECTING, S_HANDSHAKE, S_OPEN, S_DEAD };

struct conn {
    int fd, state, ready;
    unsigned seed;
    uint32_t events;
    unsigned char *out;          /* bytes to send: a handshake or one masked frame */
    size_t out_len, out_off;
    unsigned char *in;           /* received bytes not yet parsed */
    size_t in_len;
    unsigned char *msg;          /* payload of the message being received (fragments joined) */
    size_t msg_len;
    uint64_t sent_off;           /* payload bytes sent so far (offset into the pattern) */
    uint64_t t_sent;             /* when the outstanding message went out */
    uint64_t last_progress;
    int outstanding;
};

static int nconns = 64, port = 0, json = 0;
static size_t size = 64;
static double duration = 2.0, warmup = 0.5, setup_timeout = 10.0;
static long server_pid = 0;
static int perf_ctl_fd = -1;
static char path[256] = "/";
static struct sockaddr_in dst;

static struct conn *conns;
static int epfd, alive, n_ready;
static unsigned char pat[PERIOD + 65536];  /* pat_at(c, off) + size stays inside */
enum { P_SETUP, P_WARMUP, P_MEASURE, P_DONE };
static int phase;
static uint64_t t_ms = UINT64_MAX, t_me = UINT64_MAX;
static uint64_t w_msgs, lat_max, lat_sum;
static uint64_t e_connect, e_handshake, e_reset, e_eof, e_mismatch, e_protocol, e_stalled, e_setup, e_other;

/* ---- latency histogram (as in loadgen.c): log-linear, 64 sub-buckets per power of two ---- */
#define HBUCKETS (64 * 64)
static uint64_t hist[HBUCKETS], hist_n;
static int hidx(uint64_t v) {
    if (v < 128) return (int)v;
    int e = 63 - __builtin_clzll(v);
    int shift = e - 6;
    int i = shift * 64 + (int)(v >> shift);
    return i < HBUCKETS ? i : HBUCKETS - 1;
}
static double hval(int i) {
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
static double hist_pct(double q) {
    if (!hist_n) return 0;
    uint64_t want = (uint64_t)(q * (double)hist_n + 0.999999), cum = 0;
    if (want < 1) want = 1;
    for (int i = 0; i < HBUCKETS; i++) {
        cum += hist[i];
        if (cum >= want) { double v = hval(i); return v > (double)lat_max ? (double)lat_max : v; }
    }
    return (double)lat_max;
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}
static void die(const char *m) { fprintf(stderr, "wsload: %s\n", m); exit(2); }

static void ep_set(struct conn *c, uint32_t ev) {
    if (c->events == ev) return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    if (epoll_ctl(epfd, c->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &e) < 0) { perror("epoll_ctl"); exit(2); }
    c->events = ev;
}

static void kill_conn(struct conn *c) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->events = 0;
    if (c->state != S_DEAD) { alive--; if (c->ready) n_ready--; }
    c->state = S_DEAD;
}

static void io_error(struct conn *c, int err) {
    if (err == ECONNRESET || err == EPIPE) e_reset++; else e_other++;
    kill_conn(c);
}

/* ---- frames ---- */
static const unsigned char *pat_at(const struct conn *c, uint64_t off) { return pat + (off + c->seed) % PERIOD; }

/* one masked binary frame carrying the next S bytes of the connection's pattern */
static void queue_message(struct conn *c, uint64_t t) {
    unsigned char *p = c->out;
    size_t h = 0;
    p[h++] = 0x82;                                   /* FIN, binary */
    if (size < 126) p[h++] = 0x80 | (unsigned char)size;
    else if (size < 65536) { p[h++] = 0x80 | 126; p[h++] = (unsigned char)(size >> 8); p[h++] = (unsigned char)size; }
    else { p[h++] = 0x80 | 127; for (int i = 7; i >= 0; i--) p[h++] = (unsigned char)((uint64_t)size >> (8 * i)); }
    unsigned char mask[4] = {(unsigned char)(c->sent_off * 7 + 1), 0x5a, 0xa5, (unsigned char)c->seed};
    memcpy(p + h, mask, 4);
    h += 4;
    const unsigned char *src = pat_at(c, c->sent_off);
    for (size_t i = 0; i < size; i++) p[h + i] = src[i] ^ mask[i & 3];
    c->out_len = h + size;
    c->out_off = 0;
    c->t_sent = t;
    c->outstanding = 1;
}

static int flush_out(struct conn *c) {  /* 0 or the errno that broke the connection */
    while (c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (w > 0) { c->out_off += (size_t)w; continue; }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno == EAGAIN) break;
        return w < 0 ? errno : EPIPE;
    }
    return 0;
}

static void set_interest(struct conn *c) {
    ep_set(c, EPOLLIN | (c->out_off < c->out_len ? EPOLLOUT : 0));
}

static void start_load(struct conn *c, uint64_t t) {
    queue_message(c, t);
    int err = flush_out(c);
    if (err) { io_error(c, err); return; }
    set_interest(c);
}

/* A complete echoed message arrived: check it, count it, send the next one. */
static int message_done(struct conn *c, uint64_t t) {
    if (!c->outstanding || c->msg_len != size) { e_protocol++; kill_conn(c); return 0; }
    if (memcmp(c->msg, pat_at(c, c->sent_off), size) != 0) { e_mismatch++; kill_conn(c); return 0; }
    c->sent_off += size;
    c->outstanding = 0;
    c->msg_len = 0;
    c->last_progress = t;
    if (t >= t_ms && t < t_me) { w_msgs++; hist_add(t - c->t_sent); }
    if (!c->ready) {
        c->ready = 1;
        n_ready++;
        if (phase == P_SETUP) return 1;   /* the load starts when every connection is ready */
    }
    queue_message(c, t);
    return 1;
}

/* Parse whole frames from c->in; 0 if the connection died. */
static int parse_frames(struct conn *c, uint64_t t) {
    size_t off = 0;
    while (c->in_len - off >= 2) {
        unsigned char *f = c->in + off;
        int fin = f[0] & 0x80, op = f[0] & 0x0f;
        if (f[1] & 0x80) { e_protocol++; kill_conn(c); return 0; }   /* servers never mask */
        uint64_t len = f[1] & 0x7f;
        size_t h = 2;
        if (len == 126) {
            if (c->in_len - off < 4) break;
            len = ((uint64_t)f[2] << 8) | f[3];
            h = 4;
        } else if (len == 127) {
            if (c->in_len - off < 10) break;
            len = 0;
            for (int i = 0; i < 8; i++) len = (len << 8) | f[2 + i];
            h = 10;
        }
        if (len > size || (op != 0x2 && op != 0x0)) { e_protocol++; kill_conn(c); return 0; }
        if (c->in_len - off < h + len) break;
        if (c->msg_len + len > size) { e_protocol++; kill_conn(c); return 0; }
        memcpy(c->msg + c->msg_len, f + h, len);
        c->msg_len += len;
        off += h + len;
        if (fin && !message_done(c, t)) return 0;
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
    return 1;
}

static int handshake_done(struct conn *c) {  /* 1 done, 0 need more, -1 failed */
    c->in[c->in_len] = 0;
    char *end = strstr((char *)c->in, "\r\n\r\n");
    if (!end) return c->in_len >= 4096 ? -1 : 0;
    if (strncmp((char *)c->in, "HTTP/1.1 101", 12) != 0 || !strstr((char *)c->in, WS_ACCEPT)) return -1;
    size_t used = (size_t)(end + 4 - (char *)c->in);
    memmove(c->in, c->in + used, c->in_len - used);
    c->in_len -= used;
    return 1;
}

static void on_event(struct conn *c, uint32_t ev) {
    uint64_t t = now_ns();
    if (c->state == S_CONNECTING) {
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) { e_connect++; kill_conn(c); return; }
        c->state = S_HANDSHAKE;
        c->out_len = (size_t)snprintf((char *)c->out, 1024,
            "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: " WS_KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n", path, port);
        c->out_off = 0;
        c->last_progress = t;
    }
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        size_t cap = (c->state == S_HANDSHAKE ? 4096 : RBUF) - c->in_len - 1;
        ssize_t n = recv(c->fd, c->in + c->in_len, cap, 0);
        if (n == 0) { e_eof++; kill_conn(c); return; }
        if (n < 0 && errno != EAGAIN && errno != EINTR) { io_error(c, errno); return; }
        if (n > 0) {
            c->in_len += (size_t)n;
            if (c->state == S_HANDSHAKE) {
                int r = handshake_done(c);
                if (r < 0) { e_handshake++; kill_conn(c); return; }
                if (r > 0) { c->state = S_OPEN; queue_message(c, t); }  /* the probe */
            }
            if (c->state == S_OPEN && !parse_frames(c, t)) return;
        }
    }
    int err = flush_out(c);
    if (err) { io_error(c, err); return; }
    set_interest(c);
}

/* ---- CPU accounting (as in loadgen.c) ---- */
struct cpusnap { uint64_t t; double self, srv; int ncpu; unsigned long long busy[MAXCPU], steal[MAXCPU], total[MAXCPU]; };
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
    s->t = now_ns();
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
static void window_edge(const char *cmd) {
    if (perf_ctl_fd >= 0 && write(perf_ctl_fd, cmd, strlen(cmd)) < 0) { perror("wsload: --perf-ctl"); exit(2); }
}

static void usage(void) {
    fprintf(stderr, "usage: wsload -p PORT [-c CONNS] [-s BYTES] [-d SECONDS] [-w SECONDS] [--path /]\n"
                    "              [--server-pid PID] [--perf-ctl FIFO] [--setup-timeout S] [--json]\n");
    exit(2);
}

int main(int argc, char **argv) {
    static const struct option opts[] = {
        {"port", 1, 0, 'p'}, {"conns", 1, 0, 'c'}, {"size", 1, 0, 's'}, {"duration", 1, 0, 'd'},
        {"warmup", 1, 0, 'w'}, {"path", 1, 0, 'P'}, {"server-pid", 1, 0, 'S'}, {"perf-ctl", 1, 0, 'F'},
        {"setup-timeout", 1, 0, 'T'}, {"json", 0, 0, 'j'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "p:c:s:d:w:h", opts, NULL)) != -1) {
        switch (o) {
        case 'p': port = atoi(optarg); break;
        case 'c': nconns = atoi(optarg); break;
        case 's': size = (size_t)strtoull(optarg, NULL, 10); break;
        case 'd': duration = atof(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 'P': snprintf(path, sizeof path, "%s", optarg); break;
        case 'S': server_pid = atol(optarg); break;
        case 'F':
            alarm(30);  /* opening blocks until perf has its end open */
            perf_ctl_fd = open(optarg, O_WRONLY | O_CLOEXEC);
            alarm(0);
            if (perf_ctl_fd < 0) { perror("wsload: --perf-ctl"); return 2; }
            break;
        case 'T': setup_timeout = atof(optarg); break;
        case 'j': json = 1; break;
        default: usage();
        }
    }
    if (optind != argc || port <= 0 || port > 65535) usage();
    if (nconns < 1 || nconns > 100000) die("conns must be 1..100000");
    if (size < 1 || size > 65536) die("size must be 1..65536");
    if (!(duration > 0 && duration <= 3600) || !(warmup >= 0 && warmup <= 3600) || !(setup_timeout > 0)) die("bad times");
    dst.sin_family = AF_INET;
    dst.sin_port = htons((uint16_t)port);
    dst.sin_addr.s_addr = htonl(0x7f000001u);

    signal(SIGPIPE, SIG_IGN);
    alarm((unsigned)(setup_timeout + warmup + duration) + 20);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)nconns + 64) { rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl); }

    uint32_t x = 2463534242u;
    unsigned char tbl[PERIOD];
    for (int i = 0; i < PERIOD; i++) { x ^= x << 13; x ^= x >> 17; x ^= x << 5; tbl[i] = (unsigned char)x; }
    for (size_t i = 0; i < sizeof pat; i++) pat[i] = tbl[i % PERIOD];
    conns = calloc((size_t)nconns, sizeof *conns);
    if (!conns) die("out of memory");
    epfd = epoll_create1(EPOLL_CLOEXEC);
    uint64_t t_begin = now_ns(), t_setup_end = t_begin + (uint64_t)(setup_timeout * 1e9), t_load = 0;
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        c->seed = (unsigned)((uint64_t)i * 37 % PERIOD);
        c->out = malloc(size + 1024);
        c->in = malloc(RBUF + 1);
        c->msg = malloc(size);
        if (!c->out || !c->in || !c->msg) die("out of memory");
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0) { perror("socket"); return 2; }
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        alive++;
        c->state = S_CONNECTING;
        if (connect(c->fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS) { e_connect++; kill_conn(c); continue; }
        ep_set(c, EPOLLOUT);
    }

    struct epoll_event evs[MAXEV];
    struct cpusnap s0 = {0}, s1 = {0};
    for (;;) {
        uint64_t t = now_ns();
        if (phase == P_SETUP && (n_ready == alive || t >= t_setup_end)) {
            phase = P_WARMUP;
            t_load = t;
            t_ms = t + (uint64_t)(warmup * 1e9);
            t_me = t_ms + (uint64_t)(duration * 1e9);
            alarm((unsigned)(warmup + duration) + 20);
            for (int i = 0; i < nconns; i++) {
                struct conn *c = &conns[i];
                if (c->state == S_OPEN && c->ready) start_load(c, t);
                else if (c->state != S_DEAD) e_setup++;
            }
        }
        if (phase == P_WARMUP && t >= t_ms) { window_edge("enable\n"); snap(&s0); phase = P_MEASURE; }
        if (phase == P_MEASURE && t >= t_me) { snap(&s1); window_edge("disable\n"); phase = P_DONE; break; }
        if (alive == 0) break;
        uint64_t next = phase == P_SETUP ? t_setup_end : phase == P_WARMUP ? t_ms : t_me;
        int timeout = (int)((next - t + 999999) / 1000000);
        if (timeout > 100) timeout = 100;
        int n = epoll_wait(epfd, evs, MAXEV, timeout);
        if (n < 0 && errno != EINTR) { perror("epoll_wait"); return 2; }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->fd >= 0) on_event(c, evs[i].events);
        }
    }
    if (phase != P_DONE) { snap(&s1); if (!s0.t) s0 = s1; }
    double setup_ms = (double)((t_load ? t_load : now_ns()) - t_begin) / 1e6;
    uint64_t tend = now_ns();
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        if (c->state == S_OPEN && c->ready && c->outstanding && tend - c->last_progress > STALL_NS) e_stalled++;
        if (c->fd >= 0) close(c->fd);
    }
    uint64_t errs = e_connect + e_handshake + e_reset + e_eof + e_mismatch + e_protocol + e_stalled + e_setup + e_other;
    double wall = s1.t > s0.t ? (double)(s1.t - s0.t) / 1e9 : 0;
    double rps = (double)w_msgs / duration;
    double ccpu = wall > 0 ? (s1.self - s0.self) / wall : 0;
    double scpu = (wall > 0 && s0.srv >= 0 && s1.srv >= 0) ? (s1.srv - s0.srv) / wall : -1;
    double p50 = hist_pct(0.5) / 1e3, p90 = hist_pct(0.9) / 1e3, p99 = hist_pct(0.99) / 1e3, p999 = hist_pct(0.999) / 1e3;
    printf("ws c=%d s=%zu: %.0f msg/s | lat us p50 %.1f p99 %.1f p99.9 %.1f max %.1f | setup %.0f ms | errors %llu",
           nconns, size, rps, p50, p99, p999, (double)lat_max / 1e3, setup_ms, (unsigned long long)errs);
    if (errs)
        printf(" (connect %llu handshake %llu reset %llu eof %llu mismatch %llu protocol %llu stalled %llu setup %llu other %llu)",
               (unsigned long long)e_connect, (unsigned long long)e_handshake, (unsigned long long)e_reset,
               (unsigned long long)e_eof, (unsigned long long)e_mismatch, (unsigned long long)e_protocol,
               (unsigned long long)e_stalled, (unsigned long long)e_setup, (unsigned long long)e_other);
    printf(" | cpu wsload %.0f%%", ccpu * 100);
    if (scpu >= 0) printf(" server %.0f%%", scpu * 100);
    printf("\n");
    if (json) {
        int ncpu = s0.ncpu < s1.ncpu ? s0.ncpu : s1.ncpu;
        printf("{\"mode\":\"ws\",\"conns\":%d,\"size\":%zu,\"duration_s\":%g,\"warmup_s\":%g,\"requests\":%llu,"
               "\"rps\":%.1f,", nconns, size, duration, warmup, (unsigned long long)w_msgs, rps);
        if (hist_n)
            printf("\"lat_us\":{\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f,\"mean\":%.1f},", p50, p90,
                   p99, p999, (double)lat_max / 1e3, (double)lat_sum / (double)hist_n / 1e3);
        else printf("\"lat_us\":null,");
        printf("\"errors\":{\"total\":%llu,\"connect\":%llu,\"handshake\":%llu,\"reset\":%llu,\"eof\":%llu,\"mismatch\":%llu,"
               "\"protocol\":%llu,\"stalled\":%llu,\"setup\":%llu,\"other\":%llu},", (unsigned long long)errs,
               (unsigned long long)e_connect, (unsigned long long)e_handshake, (unsigned long long)e_reset,
               (unsigned long long)e_eof, (unsigned long long)e_mismatch, (unsigned long long)e_protocol,
               (unsigned long long)e_stalled, (unsigned long long)e_setup, (unsigned long long)e_other);
        printf("\"client_cpu\":%.3f,", ccpu);
        if (scpu >= 0) printf("\"server_cpu\":%.3f,", scpu); else printf("\"server_cpu\":null,");
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
        printf("],\"setup_ms\":%.1f}\n", setup_ms);
    }
    return errs ? 1 : 0;
}
