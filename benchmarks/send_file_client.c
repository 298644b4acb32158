/* send_file_client: N connections, each asking for a file again and again.
 *
 *   send_file_client HOST PORT SIZE CONNS SECONDS [FILE]
 *
 * A request is one byte ('G'); the response is exactly SIZE bytes, read and
 * dropped (the first response of each connection is compared with FILE, if given).
 * One blocking thread per connection. Prints "requests N seconds S" on stdout.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in addr;
static long size;
static atomic_int stop;
static atomic_long total;
static char *expected;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *worker(void *unused) {
    (void)unused;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror("connect");
        exit(2);
    }
    size_t cap = 1 << 20;
    char *buf = malloc(cap);
    int first = 1;
    long done = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        if (write(fd, "G", 1) != 1) {
            perror("write");
            exit(2);
        }
        long got = 0;
        while (got < size) {
            size_t want = (size_t)(size - got) < cap ? (size_t)(size - got) : cap;
            ssize_t n = read(fd, buf, want);
            if (n <= 0) {
                fprintf(stderr, "read: %s after %ld of %ld bytes\n", n ? strerror(errno) : "EOF", got, size);
                exit(2);
            }
            if (first && expected && memcmp(buf, expected + got, (size_t)n) != 0) {
                fprintf(stderr, "response differs from the file near byte %ld\n", got);
                exit(3);
            }
            got += n;
        }
        first = 0;
        done++;
    }
    atomic_fetch_add(&total, done);
    close(fd);
    free(buf);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s HOST PORT SIZE CONNS SECONDS [FILE]\n", argv[0]);
        return 1;
    }
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &addr.sin_addr);
    size = atol(argv[3]);
    int conns = atoi(argv[4]);
    double seconds = atof(argv[5]);
    if (argc > 6) {
        FILE *f = fopen(argv[6], "rb");
        if (!f) {
            perror("fopen");
            return 1;
        }
        expected = malloc((size_t)size + 1);
        if (fread(expected, 1, (size_t)size, f) != (size_t)size) {
            fprintf(stderr, "short file\n");
            return 1;
        }
        fclose(f);
    }
    pthread_t *threads = calloc((size_t)conns, sizeof *threads);
    double t0 = now();
    for (int i = 0; i < conns; i++)
        pthread_create(&threads[i], NULL, worker, NULL);
    struct timespec ts = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
    nanosleep(&ts, NULL);
    atomic_store(&stop, 1);
    for (int i = 0; i < conns; i++)
        pthread_join(threads[i], NULL);
    printf("requests %ld seconds %.6f\n", atomic_load(&total), now() - t0);
    return 0;
}
