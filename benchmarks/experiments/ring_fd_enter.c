/* What a registered ring fd (IORING_REGISTER_RING_FDS + IORING_ENTER_REGISTERED_RING)
 * saves per io_uring_enter: N enters, each submitting one NOP and waiting for its CQE,
 * with the ring's normal fd and with its registered index, alternated in rounds.
 * Raw syscalls, no liburing (as the project's C layer).
 *
 *     gcc -O2 -o /tmp/ring_fd_enter benchmarks/experiments/ring_fd_enter.c -lpthread
 *     /tmp/ring_fd_enter [N] [--thread]   # --thread: a second thread exists (shared fd table)
 */
#define _GNU_SOURCE
#include <linux/io_uring.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef IORING_REGISTER_RING_FDS
#define IORING_REGISTER_RING_FDS 20
#endif
#ifndef IORING_ENTER_REGISTERED_RING
#define IORING_ENTER_REGISTERED_RING (1U << 4)
#endif

static unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail;
static struct io_uring_sqe *sqes;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *idle(void *arg) { (void)arg; pause(); return NULL; }

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    if (argc > 2 && strcmp(argv[2], "--thread") == 0) {
        pthread_t t;
        pthread_create(&t, NULL, idle, NULL);
    }
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    int fd = syscall(__NR_io_uring_setup, 8, &p);
    if (fd < 0) { perror("io_uring_setup"); return 1; }
    size_t sq_sz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_sz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (cq_sz > sq_sz) sq_sz = cq_sz;  /* IORING_FEAT_SINGLE_MMAP */
    char *sq = mmap(0, sq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
    sqes = mmap(0, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                fd, IORING_OFF_SQES);
    sq_tail = (unsigned *)(sq + p.sq_off.tail);
    sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    sq_array = (unsigned *)(sq + p.sq_off.array);
    cq_head = (unsigned *)(sq + p.cq_off.head);
    cq_tail = (unsigned *)(sq + p.cq_off.tail);

    struct io_uring_rsrc_update up = {.offset = -1U, .data = (uint64_t)fd};
    int reg = syscall(__NR_io_uring_register, fd, IORING_REGISTER_RING_FDS, &up, 1);
    if (reg != 1) { perror("IORING_REGISTER_RING_FDS"); return 1; }
    int index = up.offset;

    for (int round = 0; round < 6; round++) {
        int registered = round % 2;
        double t0 = now();
        for (long i = 0; i < n; i++) {
            unsigned tail = *sq_tail, slot = tail & *sq_mask;
            memset(&sqes[slot], 0, sizeof sqes[slot]);
            sqes[slot].opcode = IORING_OP_NOP;
            sq_array[slot] = slot;
            __atomic_store_n(sq_tail, tail + 1, __ATOMIC_RELEASE);
            int ret = syscall(__NR_io_uring_enter, registered ? index : fd, 1, 1,
                              IORING_ENTER_GETEVENTS | (registered ? IORING_ENTER_REGISTERED_RING : 0), NULL, 0);
            if (ret != 1) { perror("io_uring_enter"); return 1; }
            __atomic_store_n(cq_head, __atomic_load_n(cq_tail, __ATOMIC_ACQUIRE), __ATOMIC_RELEASE);
        }
        double dt = now() - t0;
        printf("round %d  %-10s  %.1f ns per enter\n", round, registered ? "registered" : "fd", dt / n * 1e9);
    }
    return 0;
}
