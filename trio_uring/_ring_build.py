"""cffi (API mode) builder for trio_uring's C ring layer, ``trio_uring._ring_cffi``.

Run at install time through setup.py's ``cffi_modules``; it compiles ``_ring.c``
(raw syscalls, no liburing) with the machine's gcc and Python headers.
"""

from __future__ import annotations

import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))

CDEF = """
typedef int... socklen_t;
struct iovec { void *iov_base; size_t iov_len; };
struct msghdr {
    void *msg_name;
    socklen_t msg_namelen;
    struct iovec *msg_iov;
    size_t msg_iovlen;
    void *msg_control;
    size_t msg_controllen;
    int msg_flags;
    ...;
};
struct sockaddr_storage { ...; };

#define TU_ERR_FORKED ...
#define TU_ERR_NOT_SUBMITTED ...
#define TU_MAX_OPCODES ...
#define TU_SYNC_USER_DATA ...

struct tu_ring {
    int fd;
    unsigned features;
    unsigned setup_flags;
    unsigned sq_entries;
    unsigned cq_entries;
    int forked;
    int cqe_skip;
    uint64_t ops_submitted[256];
    ...;
};

struct tu_pbuf {
    char *bufs;
    unsigned entries;
    unsigned buf_size;
    unsigned bgid;
    ...;
};
int tu_pbuf_setup(struct tu_ring *r, struct tu_pbuf *pb, unsigned bgid, unsigned entries,
                  unsigned buf_size);
void tu_pbuf_teardown(struct tu_ring *r, struct tu_pbuf *pb);
void tu_pbuf_recycle(struct tu_pbuf *pb, unsigned bid);
int tu_prep_recv_select(struct tu_ring *r, int fd, unsigned len, int flags, unsigned bgid,
                        int multishot, uint64_t ud);

int tu_ring_setup(struct tu_ring *r, unsigned entries, unsigned cq_entries, unsigned flags);
void tu_ring_teardown(struct tu_ring *r);
void tu_ring_mark_forked(struct tu_ring *r);
int tu_ring_probe(struct tu_ring *r, uint8_t *supported, unsigned n);

int tu_submit(struct tu_ring *r);
int tu_submit_sync(struct tu_ring *r);
int tu_send_now(struct tu_ring *r, int fd, const void *buf, unsigned len, int flags);
int tu_recv_now(struct tu_ring *r, int fd, void *buf, unsigned len, int flags);
int tu_enter_wait(struct tu_ring *r, int submit, int64_t timeout_ns);
unsigned tu_cq_ready(struct tu_ring *r);
int tu_reap(struct tu_ring *r, int64_t *out, unsigned max);

int tu_prep_nop(struct tu_ring *r, uint64_t ud);
int tu_prep_poll_add(struct tu_ring *r, int fd, unsigned events, int multishot, uint64_t ud);
int tu_prep_cancel(struct tu_ring *r, uint64_t target_ud, unsigned flags, uint64_t ud);
int tu_prep_read(struct tu_ring *r, int fd, void *buf, unsigned len, uint64_t offset, uint64_t ud);
int tu_prep_socket(struct tu_ring *r, int domain, int type, int protocol, uint64_t ud);
int tu_prep_connect(struct tu_ring *r, int fd, const void *addr, unsigned addrlen, uint64_t ud);
int tu_prep_accept(struct tu_ring *r, int fd, void *addr, void *addrlen, int flags,
                   int multishot, uint64_t ud);
int tu_prep_send(struct tu_ring *r, int fd, const void *buf, unsigned len, int flags,
                 const void *addr, unsigned addrlen, uint64_t ud);
int tu_prep_recv(struct tu_ring *r, int fd, void *buf, unsigned len, int flags, uint64_t ud);
int tu_prep_sendmsg(struct tu_ring *r, int fd, const void *msghdr, int flags, uint64_t ud);
int tu_prep_recvmsg(struct tu_ring *r, int fd, void *msghdr, int flags, uint64_t ud);
int tu_prep_shutdown(struct tu_ring *r, int fd, int how, uint64_t ud);
int tu_prep_close(struct tu_ring *r, int fd, uint64_t ud);

/* Raw access: io_uring_register(2), and an SQE to fill in from Python. Only the
   fields declared here are reachable (cffi checks their offsets against the
   kernel header); the unions around them are left out. */
struct io_uring_sqe {
    uint8_t opcode;
    uint8_t flags;
    uint16_t ioprio;
    int32_t fd;
    uint64_t off;
    uint64_t addr;
    uint32_t len;
    uint64_t user_data;
    ...;
};
struct io_uring_restriction {
    uint16_t opcode;
    union { uint8_t register_op; uint8_t sqe_op; uint8_t sqe_flags; };
    ...;
};
int tu_register(struct tu_ring *r, unsigned opcode, void *arg, unsigned nr_args);
struct io_uring_sqe *tu_get_sqe(struct tu_ring *r);
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "trio_uring._ring_cffi",
    '#include "_ring.h"',
    sources=[os.path.relpath(os.path.join(HERE, "_ring.c"))],
    include_dirs=[HERE],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=gnu11"],
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=os.path.dirname(HERE), verbose=True)
