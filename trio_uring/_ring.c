/*
 * _ring.c - see _ring.h.  The ring protocol (io_uring_setup(2),
 * io_uring_enter(2)):
 *
 *   submit: write SQEs at sqes[tail & mask], store-release the shared SQ
 *           tail, call io_uring_enter(to_submit).  The kernel advances the
 *           SQ head as it consumes SQEs and keeps its own copy of each.
 *   reap:   load-acquire the CQ tail, copy CQEs out from head to tail, then
 *           store-release the CQ head (the slots may be reused after that).
 *
 * Plain loads and stores through cffi carry no ordering, which is why these
 * few lines are C and not Python.
 */
#define _GNU_SOURCE
#include "_ring.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#endif
#ifndef __NR_io_uring_enter
#define __NR_io_uring_enter 426
#endif
#ifndef __NR_io_uring_register
#define __NR_io_uring_register 427
#endif

#ifndef IORING_REGISTER_RING_FDS
#define IORING_REGISTER_RING_FDS 20
#define IORING_UNREGISTER_RING_FDS 21
#endif
#ifndef IORING_ENTER_REGISTERED_RING
#define IORING_ENTER_REGISTERED_RING (1U << 4)
#endif

#define load_acquire(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)

/* SQ flags saying CQEs are waiting in the kernel: overflowed ones (NODROP), or
 * completions whose task work has not run yet (COOP_TASKRUN|TASKRUN_FLAG rings
 * run it only when we enter the kernel). An enter with GETEVENTS moves them in. */
#define NEEDS_FLUSH (IORING_SQ_CQ_OVERFLOW | IORING_SQ_TASKRUN)
#define store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

/* 0 if the ring can be used; else why not (a fork() child, or torn down). */
static int unusable(const struct tu_ring *r)
{
    if (r->forked)
        return TU_ERR_FORKED;
    return r->sq_map ? 0 : -EBADF;
}

static int sys_setup(unsigned entries, struct io_uring_params *p)
{
    long ret = syscall(__NR_io_uring_setup, entries, p);
    return ret < 0 ? -errno : (int)ret;
}

/* io_uring_enter(2) on r: through its registered index when the calling thread
 * registered one (tu_register_ring_fd), which spares the kernel the fd lookup. */
static int sys_enter(const struct tu_ring *r, unsigned to_submit, unsigned min_complete,
                     unsigned flags, void *arg, size_t argsz)
{
    long ret = syscall(__NR_io_uring_enter, r->enter_fd, to_submit, min_complete,
                       flags | r->enter_flags, arg, argsz);
    return ret < 0 ? -errno : (int)ret;
}

static int sys_register(int fd, unsigned opcode, void *arg, unsigned nr_args)
{
    long ret = syscall(__NR_io_uring_register, fd, opcode, arg, nr_args);
    return ret < 0 ? -errno : (int)ret;
}

/* ------------------------------------------------------------ setup */

int tu_ring_setup(struct tu_ring *r, unsigned entries, unsigned cq_entries,
                  unsigned flags)
{
    struct io_uring_params p;
    int ret;

    memset(r, 0, sizeof(*r));
    r->fd = r->enter_fd = -1;
    memset(&p, 0, sizeof(p));
    p.flags = flags;
    if (cq_entries) {
        p.flags |= IORING_SETUP_CQSIZE;
        p.cq_entries = cq_entries;
    }
    ret = sys_setup(entries, &p);
    if (ret < 0)
        return ret;
    r->fd = r->enter_fd = ret;
    r->features = p.features;
    r->setup_flags = p.flags;
    r->sq_entries = p.sq_entries;
    r->cq_entries = p.cq_entries;

    r->sq_map_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    r->cq_map_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (p.features & IORING_FEAT_SINGLE_MMAP) {
        if (r->cq_map_len > r->sq_map_len)
            r->sq_map_len = r->cq_map_len;
        r->cq_map_len = 0;
    }
    r->sq_map = mmap(NULL, r->sq_map_len, PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
    if (r->sq_map == MAP_FAILED) {
        r->sq_map = NULL;
        goto fail;
    }
    if (r->cq_map_len) {
        r->cq_map = mmap(NULL, r->cq_map_len, PROT_READ | PROT_WRITE,
                         MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_CQ_RING);
        if (r->cq_map == MAP_FAILED) {
            r->cq_map = NULL;
            goto fail;
        }
    } else {
        r->cq_map = r->sq_map;
    }
    r->sqes_map_len = p.sq_entries * sizeof(struct io_uring_sqe);
    r->sqes = mmap(NULL, r->sqes_map_len, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
    if (r->sqes == MAP_FAILED) {
        r->sqes = NULL;
        goto fail;
    }
    /* A fork() child gets no copy of the rings: it must not submit on ours
     * (and cannot corrupt our SQ tail by trying). */
    if (madvise(r->sq_map, r->sq_map_len, MADV_DONTFORK) ||
        (r->cq_map_len && madvise(r->cq_map, r->cq_map_len, MADV_DONTFORK)) ||
        madvise(r->sqes, r->sqes_map_len, MADV_DONTFORK))
        goto fail;

    char *sq = r->sq_map, *cq = r->cq_map;
    r->sq_khead = (unsigned *)(sq + p.sq_off.head);
    r->sq_ktail = (unsigned *)(sq + p.sq_off.tail);
    r->sq_kflags = (unsigned *)(sq + p.sq_off.flags);
    r->sq_array = (unsigned *)(sq + p.sq_off.array);
    r->sq_mask = *(unsigned *)(sq + p.sq_off.ring_mask);
    r->cq_khead = (unsigned *)(cq + p.cq_off.head);
    r->cq_ktail = (unsigned *)(cq + p.cq_off.tail);
    r->cq_koverflow = (unsigned *)(cq + p.cq_off.overflow);
    r->cq_mask = *(unsigned *)(cq + p.cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    r->sqe_tail = *r->sq_ktail;
    /* SQE slot i is always array entry i, as liburing does. */
    for (unsigned i = 0; i <= r->sq_mask; i++)
        r->sq_array[i] = i;
    return 0;

fail:
    ret = -errno;
    tu_ring_teardown(r);
    return ret;
}

int tu_register_ring_fd(struct tu_ring *r)
{
    struct io_uring_rsrc_update up;
    int ret;

    if ((ret = unusable(r)))
        return ret;
    if (r->enter_flags)
        return 0;
    memset(&up, 0, sizeof(up));
    up.offset = -1U;  /* any free index */
    up.data = (uint64_t)r->fd;
    ret = sys_register(r->fd, IORING_REGISTER_RING_FDS, &up, 1);
    if (ret != 1)
        return ret < 0 ? ret : -EINVAL;
    r->enter_fd = (int)up.offset;
    r->enter_flags = IORING_ENTER_REGISTERED_RING;
    return 0;
}

void tu_ring_teardown(struct tu_ring *r)
{
    /* The registration holds a reference to the ring: without this, a closed
     * ring would live on until the registering thread exits. */
    if (r->enter_flags && !r->forked) {
        struct io_uring_rsrc_update up;
        memset(&up, 0, sizeof(up));
        up.offset = (unsigned)r->enter_fd;
        sys_register(r->fd, IORING_UNREGISTER_RING_FDS, &up, 1);
    }
    r->enter_flags = 0;
    r->enter_fd = -1;
    free(r->stash);
    r->stash = NULL;
    r->stash_head = r->stash_len = r->stash_cap = 0;
    if (r->sqes)
        munmap(r->sqes, r->sqes_map_len);
    if (r->cq_map && r->cq_map != r->sq_map)
        munmap(r->cq_map, r->cq_map_len);
    if (r->sq_map)
        munmap(r->sq_map, r->sq_map_len);
    r->sqes = NULL;
    r->cq_map = r->sq_map = NULL;
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
}

void tu_ring_mark_forked(struct tu_ring *r)
{
    /* The child's copy of the mappings is gone (MADV_DONTFORK): forget them
     * without touching them. */
    r->forked = 1;
    r->sqes = NULL;
    r->cq_map = r->sq_map = NULL;
}

int tu_ring_probe(struct tu_ring *r, uint8_t *supported, unsigned n)
{
    size_t len = sizeof(struct io_uring_probe) +
                 TU_MAX_OPCODES * sizeof(struct io_uring_probe_op);
    struct io_uring_probe *probe;
    int ret;

    if ((ret = unusable(r)))
        return ret;
    probe = calloc(1, len);
    if (!probe)
        return -ENOMEM;
    ret = sys_register(r->fd, IORING_REGISTER_PROBE, probe, TU_MAX_OPCODES);
    if (ret >= 0) {
        for (unsigned i = 0; i < probe->ops_len && i < TU_MAX_OPCODES; i++) {
            unsigned op = probe->ops[i].op;
            if (op < n && (probe->ops[i].flags & IO_URING_OP_SUPPORTED))
                supported[op] = 1;
        }
        ret = 0;
    }
    free(probe);
    return ret;
}

/* ------------------------------------------------------------ provided buffers */

/* IOU_PBUF_RING_INC (6.12): the 6.1 header lacks it. trio_uring passes flags 0
 * (it has no incremental mode: a CQE does not say where in a shared buffer its
 * bytes are); a kernel without the flag refuses it with -EINVAL. */
#ifndef IOU_PBUF_RING_INC
#define IOU_PBUF_RING_INC 2
#endif

int tu_pbuf_setup(struct tu_ring *r, struct tu_pbuf *pb, unsigned bgid,
                  unsigned entries, unsigned buf_size, unsigned flags)
{
    struct io_uring_buf_reg reg;
    uint16_t reg_flags;
    int ret;

    memset(pb, 0, sizeof(*pb));
    if ((ret = unusable(r)))
        return ret;
    if (!entries || (entries & (entries - 1)) || entries > 32768)
        return -EINVAL;
    pb->ring_len = entries * sizeof(struct io_uring_buf);
    pb->bufs_len = (size_t)entries * buf_size;
    /* Page-aligned, as the kernel requires; MADV_DONTFORK like the rings. */
    pb->br = mmap(NULL, pb->ring_len, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (pb->br == MAP_FAILED) {
        pb->br = NULL;
        return -errno;
    }
    /* buf_size 0: a send ring, whose entries point at the caller's memory. */
    pb->bufs = !buf_size ? NULL : mmap(NULL, pb->bufs_len, PROT_READ | PROT_WRITE,
                                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (pb->bufs == MAP_FAILED) {
        pb->bufs = NULL;
        ret = -errno;
        goto fail;
    }
    madvise(pb->br, pb->ring_len, MADV_DONTFORK);
    if (pb->bufs)
        madvise(pb->bufs, pb->bufs_len, MADV_DONTFORK);
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)pb->br;
    reg.ring_entries = entries;
    reg.bgid = (uint16_t)bgid;
    /* The u16 after bgid is `pad` in the 6.1 header, `flags` in newer ones. */
    reg_flags = (uint16_t)(flags & IOU_PBUF_RING_INC);
    memcpy((char *)&reg + offsetof(struct io_uring_buf_reg, bgid) + sizeof(reg.bgid),
           &reg_flags, sizeof(reg_flags));
    ret = sys_register(r->fd, IORING_REGISTER_PBUF_RING, &reg, 1);
    if (ret < 0)
        goto fail;
    pb->entries = entries;
    pb->mask = entries - 1;
    pb->buf_size = buf_size;
    pb->bgid = bgid;
    if (pb->bufs)
        for (unsigned bid = 0; bid < entries; bid++)
            tu_pbuf_recycle(pb, bid);
    return 0;

fail:
    if (pb->bufs)
        munmap(pb->bufs, pb->bufs_len);
    munmap(pb->br, pb->ring_len);
    memset(pb, 0, sizeof(*pb));
    return ret;
}

void tu_pbuf_teardown(struct tu_ring *r, struct tu_pbuf *pb)
{
    struct io_uring_buf_reg reg;

    if (!pb->br)
        return;
    if (!unusable(r)) {
        memset(&reg, 0, sizeof(reg));
        reg.bgid = (uint16_t)pb->bgid;
        sys_register(r->fd, IORING_UNREGISTER_PBUF_RING, &reg, 1);
    }
    if (pb->bufs)
        munmap(pb->bufs, pb->bufs_len);
    munmap(pb->br, pb->ring_len);
    memset(pb, 0, sizeof(*pb));
}

void tu_pbuf_recycle(struct tu_pbuf *pb, unsigned bid)
{
    struct io_uring_buf *buf = &pb->br->bufs[pb->tail & pb->mask];

    buf->addr = (uint64_t)(uintptr_t)(pb->bufs + (size_t)bid * pb->buf_size);
    buf->len = pb->buf_size;
    buf->bid = (uint16_t)bid;
    pb->tail++;
    /* The tail overlays bufs[0].resv; publishing it hands the buffer over. */
    store_release(&pb->br->tail, pb->tail);
}

unsigned tu_pbuf_left(struct tu_pbuf *pb, unsigned pos)
{
    /* The length in the entry: a receive bundle's kernel may cut the last entry
     * it looked at short, and that cut stays in the entry. */
    return load_acquire(&pb->br->bufs[pos & pb->mask].len);
}

unsigned tu_pbuf_bid(struct tu_pbuf *pb, unsigned pos)
{
    return pb->br->bufs[pos & pb->mask].bid;
}

/* IORING_REGISTER_PBUF_STATUS (6.8): the 6.1 header lacks it. */
#define TU_REGISTER_PBUF_STATUS 26
#ifndef IORING_REGISTER_PBUF_STATUS
#define IORING_REGISTER_PBUF_STATUS TU_REGISTER_PBUF_STATUS
#endif

int tu_pbuf_head(struct tu_ring *r, struct tu_pbuf *pb)
{
    /* struct io_uring_buf_status: buf_group, head, resv[8]. */
    uint32_t status[10];
    int ret;

    if ((ret = unusable(r)))
        return ret;
    memset(status, 0, sizeof(status));
    status[0] = pb->bgid;
    ret = sys_register(r->fd, IORING_REGISTER_PBUF_STATUS, status, 1);
    return ret < 0 ? ret : (int)(status[1] & 0xFFFF);
}

void tu_pbuf_push(struct tu_pbuf *pb, const void *addr, unsigned len)
{
    struct io_uring_buf *buf = &pb->br->bufs[pb->tail & pb->mask];

    buf->addr = (uint64_t)(uintptr_t)addr;
    buf->len = len;
    buf->bid = (uint16_t)(pb->tail & pb->mask);
    pb->tail++;
    store_release(&pb->br->tail, pb->tail);
}

void tu_pbuf_set_tail(struct tu_pbuf *pb, unsigned tail)
{
    pb->tail = (uint16_t)tail;
    store_release(&pb->br->tail, pb->tail);
}

/* ------------------------------------------------------------ submit / wait / reap */

/* Publish our tail; return how many SQEs the kernel has not consumed yet. */
static unsigned publish(struct tu_ring *r)
{
    store_release(r->sq_ktail, r->sqe_tail);
    return r->sqe_tail - load_acquire(r->sq_khead);
}

int tu_submit(struct tu_ring *r)
{
    unsigned to_submit;
    int ret;

    if ((ret = unusable(r)))
        return ret;
    to_submit = publish(r);
    if (!to_submit)
        return 0;
    return sys_enter(r, to_submit, 0, 0, NULL, 0);
}

unsigned tu_cq_ready(struct tu_ring *r)
{
    unsigned ready;

    if (unusable(r))
        return 0;
    ready = (r->stash_len - r->stash_head) + (load_acquire(r->cq_ktail) - *r->cq_khead);
    if (!ready && (load_acquire(r->sq_kflags) & NEEDS_FLUSH))
        ready = 1;  /* the kernel holds CQEs (or their task work): tu_reap flushes */
    return ready;
}

int tu_enter_wait(struct tu_ring *r, int submit, int64_t timeout_ns)
{
    struct io_uring_getevents_arg arg;
    struct __kernel_timespec ts;
    unsigned to_submit = 0, min_complete = 0, flags = 0;
    void *argp = NULL;
    size_t argsz = 0;
    int ret;

    if ((ret = unusable(r)))
        return ret;
    if (submit)
        to_submit = publish(r);
    if (timeout_ns != 0 && tu_cq_ready(r) == 0) {  /* counts the stash too */
        flags = IORING_ENTER_GETEVENTS;
        min_complete = 1;
        if (timeout_ns > 0) {
            ts.tv_sec = timeout_ns / 1000000000;
            ts.tv_nsec = timeout_ns % 1000000000;
            memset(&arg, 0, sizeof(arg));
            arg.sigmask_sz = 8;  /* _NSIG / 8; no sigmask is passed */
            arg.ts = (uint64_t)(uintptr_t)&ts;
            flags |= IORING_ENTER_EXT_ARG;
            argp = &arg;
            argsz = sizeof(arg);
        }
    } else if (load_acquire(r->sq_kflags) & NEEDS_FLUSH) {
        flags = IORING_ENTER_GETEVENTS;  /* don't wait, but move them into the CQ */
    }
    if (to_submit || flags) {
        ret = sys_enter(r, to_submit, min_complete, flags, argp, argsz);
        if (ret < 0 && ret != -ETIME && !(ret == -EINTR && tu_cq_ready(r)))
            return ret;
    }
    return (int)tu_cq_ready(r);
}

static int stash_push(struct tu_ring *r, const struct io_uring_cqe *cqe)
{
    if (r->stash_head == r->stash_len)
        r->stash_head = r->stash_len = 0;
    if (r->stash_len == r->stash_cap) {
        unsigned cap = r->stash_cap ? 2 * r->stash_cap : 64;
        struct tu_cqe_rec *grown = realloc(r->stash, cap * sizeof(*grown));
        if (!grown)
            return -ENOMEM;
        r->stash = grown;
        r->stash_cap = cap;
    }
    r->stash[r->stash_len].user_data = cqe->user_data;
    r->stash[r->stash_len].res = cqe->res;
    r->stash[r->stash_len].flags = cqe->flags;
    r->stash_len++;
    return 0;
}

int tu_submit_sync(struct tu_ring *r)
{
    struct io_uring_sqe *sqe;
    unsigned idx, head, tail;
    int ret;

    if ((ret = unusable(r)))
        return ret;
    idx = r->sqe_tail - 1;
    sqe = &r->sqes[idx & r->sq_mask];
    ret = tu_submit(r);
    if (ret < 0 && (int)(idx - load_acquire(r->sq_khead)) >= 0) {
        /* Not consumed: it must not run later, when its buffer may be gone. */
        sqe->opcode = IORING_OP_NOP;
        sqe->flags = 0;
        sqe->user_data = 0;
        return TU_ERR_NOT_SUBMITTED;
    }
    for (;;) {
        head = *r->cq_khead;
        tail = load_acquire(r->cq_ktail);
        while (head != tail) {
            struct io_uring_cqe *cqe = &r->cqes[head & r->cq_mask];
            if (cqe->user_data == TU_SYNC_USER_DATA) {
                ret = cqe->res;
                store_release(r->cq_khead, head + 1);
                return ret;
            }
            if (stash_push(r, cqe) < 0)
                break;  /* out of memory: leave the rest in the CQ */
            head++;
        }
        store_release(r->cq_khead, head);
        /* Posted during submission, so it is in the CQ, or in the kernel's
         * overflow list when the CQ was full: wait (GETEVENTS flushes). */
        ret = sys_enter(r, 0, 1, IORING_ENTER_GETEVENTS, NULL, 0);
        if (ret < 0 && ret != -EINTR)
            return ret;
    }
}

int tu_reap(struct tu_ring *r, int64_t *out, unsigned max)
{
    unsigned n = 0, head, tail;
    int ret;

    if ((ret = unusable(r)))
        return ret;
    while (r->stash_head != r->stash_len && n < max) {
        struct tu_cqe_rec *rec = &r->stash[r->stash_head++];
        out[3 * n] = (int64_t)rec->user_data;
        out[3 * n + 1] = rec->res;
        out[3 * n + 2] = rec->flags;
        n++;
    }
    for (;;) {
        head = *r->cq_khead;
        tail = load_acquire(r->cq_ktail);
        while (head != tail && n < max) {
            struct io_uring_cqe *cqe = &r->cqes[head & r->cq_mask];
            out[3 * n] = (int64_t)cqe->user_data;
            out[3 * n + 1] = cqe->res;
            out[3 * n + 2] = cqe->flags;
            head++;
            n++;
        }
        store_release(r->cq_khead, head);
        if (n == max || !(load_acquire(r->sq_kflags) & NEEDS_FLUSH))
            break;
        /* The CQ ran dry but the kernel holds more: CQEs that did not fit
         * (NODROP) or completions waiting for their task work. */
        if (sys_enter(r, 0, 0, IORING_ENTER_GETEVENTS, NULL, 0) < 0 ||
            load_acquire(r->cq_ktail) == head)
            break;
    }
    return (int)n;
}

/* ------------------------------------------------------------ SQE writers */

struct io_uring_sqe *tu_get_sqe(struct tu_ring *r)
{
    if (unusable(r))
        return NULL;
    if (r->sqe_tail - load_acquire(r->sq_khead) >= r->sq_entries) {
        /* Full: hand what we have to the kernel, which frees the slots. */
        tu_submit(r);
        if (r->sqe_tail - load_acquire(r->sq_khead) >= r->sq_entries)
            return NULL;
    }
    struct io_uring_sqe *sqe = &r->sqes[r->sqe_tail & r->sq_mask];
    r->sqe_tail++;
    memset(sqe, 0, sizeof(*sqe));
    return sqe;
}

int tu_no_sqe(const struct tu_ring *r)
{
    return unusable(r) ? unusable(r) : -EBUSY;
}

int tu_send_now(struct tu_ring *r, int fd, const void *buf, unsigned len, int flags)
{
    int ret = tu_prep_send(r, fd, buf, len, (unsigned)flags | MSG_DONTWAIT, TU_SYNC_USER_DATA);
    return ret ? ret : tu_submit_sync(r);
}

int tu_recv_now(struct tu_ring *r, int fd, void *buf, unsigned len, int flags)
{
    int ret = tu_prep_recv(r, fd, buf, len, (unsigned)flags | MSG_DONTWAIT, 0, 0, 0, TU_SYNC_USER_DATA);
    return ret ? ret : tu_submit_sync(r);
}

/* The same on a direct descriptor: ``slot`` indexes the ring's registered file
 * table (IOSQE_FIXED_FILE), so the kernel skips the fd-table lookup. */
int tu_send_now_fixed(struct tu_ring *r, int slot, const void *buf, unsigned len, int flags)
{
    int ret = tu_prep_send(r, slot, buf, len, (unsigned)flags | MSG_DONTWAIT, TU_SYNC_USER_DATA);
    if (ret)
        return ret;
    r->sqes[(r->sqe_tail - 1) & r->sq_mask].flags |= IOSQE_FIXED_FILE;
    return tu_submit_sync(r);
}

int tu_recv_now_fixed(struct tu_ring *r, int slot, void *buf, unsigned len, int flags)
{
    int ret = tu_prep_recv(r, slot, buf, len, (unsigned)flags | MSG_DONTWAIT, IOSQE_FIXED_FILE, 0, 0, TU_SYNC_USER_DATA);
    return ret ? ret : tu_submit_sync(r);
}

/* ------------------------------------------------------------ direct descriptors */

/* A sparse table of ``nr`` empty slots for direct descriptors
 * (IORING_REGISTER_FILES2 with IORING_RSRC_REGISTER_SPARSE, 5.19): SOCKET and
 * ACCEPT put files in it, IOSQE_FIXED_FILE ops name them by slot. 0 or -errno
 * (EBUSY: the ring has a table already; EMFILE: nr exceeds RLIMIT_NOFILE). */
int tu_files_sparse(struct tu_ring *r, unsigned nr)
{
    struct io_uring_rsrc_register reg;
    int ret;

    if ((ret = unusable(r)))
        return ret;
    memset(&reg, 0, sizeof(reg));
    reg.nr = nr;
    reg.flags = IORING_RSRC_REGISTER_SPARSE;
    return sys_register(r->fd, IORING_REGISTER_FILES2, &reg, sizeof(reg));
}

/* ------------------------------------------------------------ raw access */

/* io_uring_register(2) as is: the caller (Python: trio_uring/_restrict.py)
 * builds the argument and decides what the result means. */
int tu_register(struct tu_ring *r, unsigned opcode, void *arg, unsigned nr_args)
{
    int ret;

    if ((ret = unusable(r)))
        return ret;
    return sys_register(r->fd, opcode, arg, nr_args);
}
