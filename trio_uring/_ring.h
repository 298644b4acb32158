/*
 * _ring.h - trio_uring's io_uring ring: raw syscalls, mmap, SQ/CQ indices.
 *
 * Mechanics only.  This layer never decides anything: it writes SQEs it is
 * told to write, publishes them, waits when asked, and copies CQEs out in
 * batches.  Which op to submit, when to cancel and what a result means are
 * decided in Python (trio_uring/_lifecycle.py, _iomanager.py).
 *
 * Every function returns 0 (or a count) on success and a negated errno on
 * failure, like the kernel's own CQE res (-EBADF once the ring is torn
 * down).  TU_ERR_FORKED means the ring belongs to the parent of a fork()
 * (the mappings are MADV_DONTFORK, so the child must not touch them).
 *
 * The SQE writers (tu_prep_*, generated from _ring_api.py) are named after
 * liburing's io_uring_prep_*(3): their man pages document the fields.
 */
#ifndef TRIO_URING_RING_H
#define TRIO_URING_RING_H

#include <stdint.h>
#include <sys/socket.h>
#include <linux/io_uring.h>

#define TU_ERR_FORKED (-100000)
#define TU_ERR_NOT_SUBMITTED (-100001)
#define TU_MAX_OPCODES 256
/* The user_data of the one SQE tu_submit_sync waits for. */
#define TU_SYNC_USER_DATA 1

struct tu_cqe_rec {
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
};

struct tu_ring {
    /* Read by Python. */
    int fd;
    unsigned features;      /* io_uring_params.features */
    unsigned setup_flags;   /* the flags the ring was created with */
    unsigned sq_entries;
    unsigned cq_entries;
    int forked;             /* set in a fork() child: every call refuses */
    uint64_t ops_submitted[TU_MAX_OPCODES];  /* SQEs written, by opcode */

    /* Private: how io_uring_enter names the ring (fd, or registered index). */
    int enter_fd;
    unsigned enter_flags;
    /* Private: the mapped rings. */
    unsigned *sq_khead, *sq_ktail, *sq_kflags, *sq_array;
    unsigned sq_mask;
    unsigned sqe_tail;      /* our tail; published to *sq_ktail on submit */
    struct io_uring_sqe *sqes;
    unsigned *cq_khead, *cq_ktail, *cq_koverflow;
    unsigned cq_mask;
    struct io_uring_cqe *cqes;
    void *sq_map, *cq_map;
    size_t sq_map_len, cq_map_len, sqes_map_len;
    /* CQEs taken off the CQ by tu_submit_sync that were not its own: tu_reap
     * hands them out first, in order. */
    struct tu_cqe_rec *stash;
    unsigned stash_head, stash_len, stash_cap;
};

/* A provided-buffer ring (IORING_REGISTER_PBUF_RING, 5.19): ``entries``
 * buffers of ``buf_size`` bytes the kernel picks from when data arrives for an
 * op with IOSQE_BUFFER_SELECT, so a waiting receive holds no memory. */
struct tu_pbuf {
    char *bufs;             /* entries * buf_size bytes; buffer bid at bid * buf_size */
    unsigned entries;
    unsigned buf_size;
    unsigned bgid;
    /* Private. */
    struct io_uring_buf_ring *br;
    size_t ring_len, bufs_len;
    unsigned mask;
    uint16_t tail;
};

int tu_ring_setup(struct tu_ring *r, unsigned entries, unsigned cq_entries,
                  unsigned flags);
void tu_ring_teardown(struct tu_ring *r);
void tu_ring_mark_forked(struct tu_ring *r);
int tu_ring_probe(struct tu_ring *r, uint8_t *supported, unsigned n);
/* IORING_REGISTER_RING_FDS: later enters name the ring by its registered index.
 * Registrations belong to the calling thread: only for a ring that thread alone
 * enters (not a guest run's). 0, or -errno (the ring then goes on by its fd). */
int tu_register_ring_fd(struct tu_ring *r);

/* Publish every written SQE and hand them to the kernel (no waiting). */
int tu_submit(struct tu_ring *r);
/* Publish + submit, then wait until >= 1 CQE is ready or timeout_ns passes
 * (timeout_ns < 0: no limit; 0: don't wait).  Returns the number of ready
 * CQEs (0 on timeout) or -errno (-EINTR: a signal arrived; the caller
 * returns to Python so the handler runs, then calls again).  With submit=0
 * it only waits (used from Trio's guest-mode worker thread, which must not
 * touch the SQ). */
int tu_enter_wait(struct tu_ring *r, int submit, int64_t timeout_ns);
/* Submit every written SQE; the last one must carry TU_SYNC_USER_DATA and be
 * one that completes during submission (a MSG_DONTWAIT send or recv). Returns
 * its res. Other CQEs found meanwhile are kept for tu_reap. If the kernel
 * could not take it, the SQE is turned into a NOP and TU_ERR_NOT_SUBMITTED is
 * returned (the caller then does the op the waiting way). */
int tu_submit_sync(struct tu_ring *r);
/* tu_prep_send / tu_prep_recv with MSG_DONTWAIT and TU_SYNC_USER_DATA, then
 * tu_submit_sync: one call for the common "do it now if it won't block" case. */
int tu_send_now(struct tu_ring *r, int fd, const void *buf, unsigned len, int flags);
int tu_recv_now(struct tu_ring *r, int fd, void *buf, unsigned len, int flags);
int tu_send_now_fixed(struct tu_ring *r, int slot, const void *buf, unsigned len, int flags);
int tu_recv_now_fixed(struct tu_ring *r, int slot, void *buf, unsigned len, int flags);
int tu_files_sparse(struct tu_ring *r, unsigned nr);
/* Number of CQEs ready (stashed + in the CQ, plus 1 if the kernel holds
 * overflowed ones). */
unsigned tu_cq_ready(struct tu_ring *r);
/* Copy up to max CQEs out as (user_data, res, flags) triples and release
 * their slots; flushes the kernel's overflow list when the CQ has run dry. */
int tu_reap(struct tu_ring *r, int64_t *out, unsigned max);

int tu_pbuf_setup(struct tu_ring *r, struct tu_pbuf *pb, unsigned bgid,
                  unsigned entries, unsigned buf_size, unsigned flags);
unsigned tu_pbuf_left(struct tu_pbuf *pb, unsigned pos);
unsigned tu_pbuf_bid(struct tu_pbuf *pb, unsigned pos);
void tu_pbuf_teardown(struct tu_ring *r, struct tu_pbuf *pb);
/* Give buffer ``bid`` back to the kernel. */
void tu_pbuf_recycle(struct tu_pbuf *pb, unsigned bid);
void tu_pbuf_push(struct tu_pbuf *pb, const void *addr, unsigned len);
int tu_pbuf_head(struct tu_ring *r, struct tu_pbuf *pb);
void tu_pbuf_set_tail(struct tu_pbuf *pb, unsigned tail);

/* SQE writers.  tu_get_sqe hands out the next free SQE, zeroed (flushing the SQ
 * to the kernel when it is full), or NULL: then tu_no_sqe says why (-EBUSY, the
 * SQ stayed full; -EBADF, closed; TU_ERR_FORKED).  The writers themselves,
 * tu_prep_<op>(r, <fields>, user_data), are generated from the table in
 * _ring_api.py into _ring_writers.h. */
struct io_uring_sqe *tu_get_sqe(struct tu_ring *r);
int tu_no_sqe(const struct tu_ring *r);

/* poll32_events is stored in little-endian halfword order on every machine. */
static inline unsigned tu_poll32(unsigned events)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return (events << 16) | (events >> 16);
#else
    return events;
#endif
}

/* io_uring_register(2) on this ring: its result, or a negated errno. */
int tu_register(struct tu_ring *r, unsigned opcode, void *arg, unsigned nr_args);

#include "_ring_writers.h"

#endif
