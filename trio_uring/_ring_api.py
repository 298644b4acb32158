"""The C/Python boundary of the ring layer, declared once.

Every C function Python calls, and every SQE writer, is listed here and nowhere
else. What is made from this table:

* the cffi declarations (`cdef`), at build time by ``_ring_build.py``;
* committed, by ``tools/gen_ring.py``: the C code of the SQE writers
  (``_ring_writers.h``, `c_writers_header`), the type stub ``_ring_cffi.pyi`` and
  the ring's bound writers (``_ring_writers.py``). ``tools/gen_ring.py --check``
  fails when they drift from this table; the test suite runs it, as Trio's CI runs
  ``gen_exports.py --test``.

An SQE writer is named after the opcode it writes, like liburing's
``io_uring_prep_*(3)``, whose man pages document the fields. Each takes the SQE
fields it sets, in order, then ``user_data``; it returns 0, or a negated errno (-EBUSY:
the SQ stayed full after a flush; -EBADF: the ring is closed; TU_ERR_FORKED). Writers
set fields and nothing else: which op to write, when and why is decided in Python
(``_ops.py`` says what each op is, ``_lifecycle.py`` when it is written).

This module imports nothing from the package: the build runs it before the package
exists.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "CONSTANTS",
    "FUNCTIONS",
    "STRUCTS",
    "WRITERS",
    "Field",
    "Function",
    "Writer",
    "c_writers_header",
    "cdef",
]


class Field(NamedTuple):
    """One SQE field a writer sets from one parameter."""

    sqe: str  # the member of struct io_uring_sqe
    ctype: str  # the parameter's C type
    param: str  # the parameter's name


class Writer(NamedTuple):
    """``int tu_prep_<name>(struct tu_ring *r, <fields...>, uint64_t user_data)``."""

    name: str
    opcode: str | None  # IORING_OP_<opcode>; None: the opcode is the first field
    fields: tuple[Field, ...]
    doc: str


class Function(NamedTuple):
    """A hand-written function of ``_ring.c``: ``<ret> <name>(<params>)``."""

    name: str
    ret: str
    params: tuple[tuple[str, str], ...]  # (C type, name)
    doc: str


def _f(sqe: str, ctype: str, param: str | None = None) -> Field:
    return Field(sqe, ctype, param or sqe)


_FD = _f("fd", "int")
_BUF = _f("addr", "const void *", "buf")
_LEN = _f("len", "unsigned")
_MSG_FLAGS = _f("msg_flags", "unsigned")
_SQE_FLAGS = _f("flags", "unsigned", "sqe_flags")  # IOSQE_*
_IOPRIO = _f("ioprio", "unsigned")  # per-op flags: multishot, POLL_FIRST, BUNDLE
_OFF = _f("off", "uint64_t")

WRITERS: tuple[Writer, ...] = (
    Writer("nop", "NOP", (), "Does nothing; completes with res 0."),
    Writer(
        "poll_add",
        "POLL_ADD",
        (_FD, _f("poll32_events", "unsigned", "events"), _f("len", "unsigned", "poll_flags")),
        "Waits for poll ``events`` on ``fd``; ``poll_flags`` IORING_POLL_ADD_MULTI: one CQE per wake-up.",
    ),
    Writer(
        "cancel",
        "ASYNC_CANCEL",
        (_f("addr", "uint64_t", "target"), _f("cancel_flags", "unsigned"), _SQE_FLAGS),
        "Asks the kernel to cancel the op whose user_data is ``target`` (or, by ``cancel_flags``, any/all).",
    ),
    Writer(
        "read",
        "READ",
        (_FD, _f("addr", "void *", "buf"), _LEN, _OFF),
        "read(2) / pread(2) into ``buf`` (``off`` -1: the file position).",
    ),
    Writer(
        "socket",
        "SOCKET",
        (_f("fd", "int", "domain"), _f("off", "uint64_t", "type"), _f("len", "unsigned", "protocol")),
        "socket(2); the CQE's res is the new fd.",
    ),
    Writer(
        "connect",
        "CONNECT",
        (_FD, _f("addr", "const void *", "sockaddr"), _f("off", "uint64_t", "addrlen")),
        "connect(2); the kernel copies ``sockaddr`` at submission.",
    ),
    Writer(
        "accept",
        "ACCEPT",
        (_FD, _f("accept_flags", "unsigned"), _IOPRIO),
        "accept4(2) without the peer's address (``ioprio`` IORING_ACCEPT_MULTISHOT: one CQE per connection).",
    ),
    Writer(
        "send",
        "SEND",
        (_FD, _BUF, _LEN, _MSG_FLAGS),
        "send(2) from ``buf``, which the kernel reads until the CQE.",
    ),
    Writer(
        "recv",
        "RECV",
        (_FD, _f("addr", "void *", "buf"), _LEN, _MSG_FLAGS, _SQE_FLAGS, _f("buf_group", "unsigned"), _IOPRIO),
        "recv(2) into ``buf``, or (``sqe_flags`` IOSQE_BUFFER_SELECT, ``buf`` NULL) into a buffer the kernel"
        " picks from ``buf_group`` when data arrives.",
    ),
    Writer(
        "sendmsg",
        "SENDMSG",
        (_FD, _f("addr", "const void *", "msghdr"), _MSG_FLAGS),
        "sendmsg(2); the data buffers are read until the CQE.",
    ),
    Writer(
        "recvmsg",
        "RECVMSG",
        (_FD, _f("addr", "void *", "msghdr"), _MSG_FLAGS),
        "recvmsg(2); the data, name and control buffers are written until the CQE.",
    ),
    Writer(
        "send_select",
        "SEND",
        (_FD, _LEN, _MSG_FLAGS, _SQE_FLAGS, _f("buf_group", "unsigned"), _IOPRIO),
        "send(2) from buffers the kernel takes from ``buf_group`` (``sqe_flags`` IOSQE_BUFFER_SELECT); ``ioprio``"
        " IORING_RECVSEND_BUNDLE: as many as are there, in ring order (``len`` 0).",
    ),
    Writer(
        "sqe",
        None,
        (
            _f("opcode", "unsigned"),
            _SQE_FLAGS,
            _IOPRIO,
            _FD,
            _OFF,
            _f("addr", "uint64_t"),
            _LEN,
            _f("rw_flags", "unsigned", "op_flags"),  # the per-opcode flags union (msg_flags, timeout_flags, ...)
            _f("buf_index", "unsigned"),
            _f("file_index", "unsigned"),
            _f("addr3", "uint64_t"),
        ),
        "Any SQE, field by field (trio_uring.lowlevel.Operation): the writer for ops declared outside the"
        " package.",
    ),
    Writer(
        "splice",
        "SPLICE",
        (
            _f("fd", "int", "fd_out"),
            _f("off", "uint64_t", "off_out"),
            _f("splice_fd_in", "int", "fd_in"),
            _f("splice_off_in", "uint64_t", "off_in"),
            _LEN,
            _f("splice_flags", "unsigned"),
        ),
        "splice(2) of up to ``len`` bytes from ``fd_in`` to ``fd_out``, one of them a pipe (an offset of -1:"
        " none, as a pipe needs; else the file is read at that offset and its position left alone).",
    ),
)

# Writers whose op needs a struct that only newer kernels' headers define are not
# here; structures are declared to cffi as far as Python touches them.
STRUCTS = """
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

struct tu_ring {
    int fd;
    unsigned features;
    unsigned setup_flags;
    unsigned sq_entries;
    unsigned cq_entries;
    int forked;
    uint64_t ops_submitted[256];
    unsigned enter_flags;
    ...;
};

struct tu_pbuf {
    char *bufs;
    unsigned entries;
    unsigned buf_size;
    unsigned bgid;
    ...;
};

/* For callers that fill an SQE or a register argument in Python: only the fields
   declared here are reachable (cffi checks their offsets against the header). */
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
"""

CONSTANTS: tuple[str, ...] = ("TU_ERR_FORKED", "TU_ERR_NOT_SUBMITTED", "TU_MAX_OPCODES", "TU_SYNC_USER_DATA")

_RING = ("struct tu_ring *", "r")
_PBUF = ("struct tu_pbuf *", "pb")

FUNCTIONS: tuple[Function, ...] = (
    Function(
        "tu_ring_setup",
        "int",
        (_RING, ("unsigned", "entries"), ("unsigned", "cq_entries"), ("unsigned", "flags")),
        "io_uring_setup(2) and the mmaps.",
    ),
    Function("tu_ring_teardown", "void", (_RING,), "Unmap and close (idempotent)."),
    Function(
        "tu_register_ring_fd",
        "int",
        (_RING,),
        "IORING_REGISTER_RING_FDS: this thread's enters name the ring by index. 0 or -errno.",
    ),
    Function("tu_ring_mark_forked", "void", (_RING,), "In a fork() child: forget the parent's mappings."),
    Function(
        "tu_ring_probe",
        "int",
        (_RING, ("uint8_t *", "supported"), ("unsigned", "n")),
        "IORING_REGISTER_PROBE: supported[op] = 1 for each supported opcode.",
    ),
    Function("tu_submit", "int", (_RING,), "Hand every written SQE to the kernel."),
    Function(
        "tu_submit_sync",
        "int",
        (_RING,),
        "Submit; return the res of the last SQE (TU_SYNC_USER_DATA), which completes during submission.",
    ),
    Function(
        "tu_send_now",
        "int",
        (_RING, ("int", "fd"), ("const void *", "buf"), ("unsigned", "len"), ("int", "flags")),
        "A MSG_DONTWAIT SEND, submitted and completed in one call: its res (-EAGAIN if it would block).",
    ),
    Function(
        "tu_recv_now",
        "int",
        (_RING, ("int", "fd"), ("void *", "buf"), ("unsigned", "len"), ("int", "flags")),
        "A MSG_DONTWAIT RECV, submitted and completed in one call: its res (-EAGAIN if nothing is there).",
    ),
    Function(
        "tu_enter_wait",
        "int",
        (_RING, ("int", "submit"), ("int64_t", "timeout_ns")),
        "Submit (if asked), then wait for a CQE up to timeout_ns: the number ready, or -errno.",
    ),
    Function("tu_cq_ready", "unsigned", (_RING,), "CQEs ready to reap (1 if only the kernel holds some)."),
    Function(
        "tu_reap",
        "int",
        (_RING, ("int64_t *", "out"), ("unsigned", "max")),
        "Copy up to max CQEs out as (user_data, res, flags) triples.",
    ),
    Function(
        "tu_pbuf_setup",
        "int",
        (_RING, _PBUF, ("unsigned", "bgid"), ("unsigned", "entries"), ("unsigned", "buf_size"), ("unsigned", "flags")),
        "Register a provided-buffer ring (IORING_REGISTER_PBUF_RING). ``flags``: 0 from trio_uring"
        " (the C layer also accepts IOU_PBUF_RING_INC, 2, which trio_uring does not use).",
    ),
    Function(
        "tu_pbuf_left",
        "unsigned",
        (_PBUF, ("unsigned", "pos")),
        "The length in the ring entry at position ``pos`` (a receive bundle's kernel may cut it short).",
    ),
    Function(
        "tu_pbuf_bid",
        "unsigned",
        (_PBUF, ("unsigned", "pos")),
        "The buffer id in the ring entry at position ``pos`` (what the kernel will hand out there).",
    ),
    Function("tu_pbuf_teardown", "void", (_RING, _PBUF), "Unregister and unmap it."),
    Function("tu_pbuf_recycle", "void", (_PBUF, ("unsigned", "bid")), "Give buffer ``bid`` back to the kernel."),
    Function(
        "tu_pbuf_push",
        "void",
        (_PBUF, ("const void *", "addr"), ("unsigned", "len")),
        "A send ring's next entry: ``len`` bytes at ``addr`` (the caller keeps them alive), buffer id tail & mask.",
    ),
    Function("tu_pbuf_set_tail", "void", (_PBUF, ("unsigned", "tail")), "Set and publish the ring's tail."),
    Function(
        "tu_pbuf_head",
        "int",
        (_RING, _PBUF),
        "The kernel's head of the ring (IORING_REGISTER_PBUF_STATUS, 6.8), or a negated errno.",
    ),
    Function(
        "tu_register",
        "int",
        (_RING, ("unsigned", "opcode"), ("void *", "arg"), ("unsigned", "nr_args")),
        "io_uring_register(2) as is: its result, or a negated errno.",
    ),
    Function(
        "tu_get_sqe",
        "struct io_uring_sqe *",
        (_RING,),
        "The next free SQE, zeroed, to fill in (NULL: the SQ stayed full, or the ring is unusable).",
    ),
    Function(
        "tu_send_now_fixed",
        "int",
        (_RING, ("int", "slot"), ("const void *", "buf"), ("unsigned", "len"), ("int", "flags")),
        "tu_send_now on a direct descriptor (IOSQE_FIXED_FILE: ``slot`` in the registered file table).",
    ),
    Function(
        "tu_recv_now_fixed",
        "int",
        (_RING, ("int", "slot"), ("void *", "buf"), ("unsigned", "len"), ("int", "flags")),
        "tu_recv_now on a direct descriptor (IOSQE_FIXED_FILE: ``slot`` in the registered file table).",
    ),
    Function(
        "tu_files_sparse",
        "int",
        (_RING, ("unsigned", "nr")),
        "Register a sparse file table of ``nr`` slots for direct descriptors (IORING_REGISTER_FILES2).",
    ),
)


# ---------------------------------------------------------------- generated text


def _params(params: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(f"{ctype}{'' if ctype.endswith('*') else ' '}{name}" for ctype, name in params)


def writer_params(writer: Writer) -> tuple[tuple[str, str], ...]:
    return (("struct tu_ring *", "r"), *((f.ctype, f.param) for f in writer.fields), ("uint64_t", "user_data"))


def _writer_signature(writer: Writer) -> str:
    return f"int tu_prep_{writer.name}({_params(writer_params(writer))})"


def _assignment(field: Field) -> str:
    if field.ctype.endswith("*"):
        value = f"(uint64_t)(uintptr_t){field.param}"
    elif field.sqe == "poll32_events":
        value = f"tu_poll32({field.param})"
    else:
        value = field.param
    return f"    sqe->{field.sqe} = {value};"


def _writer_definition(writer: Writer) -> str:
    if writer.opcode is None:
        set_opcode, op = [], "sqe->opcode"
    else:
        op = f"IORING_OP_{writer.opcode}"
        set_opcode = [f"    sqe->opcode = {op};"]
    return "\n".join(
        [
            f"/* {writer.doc} */",
            "static inline " + _writer_signature(writer),
            "{",
            "    struct io_uring_sqe *sqe = tu_get_sqe(r);",
            "    if (!sqe)",
            "        return tu_no_sqe(r);",
            *set_opcode,
            *(_assignment(field) for field in writer.fields),
            "    sqe->user_data = user_data;",
            f"    r->ops_submitted[{op}]++;",
            "    return 0;",
            "}",
        ]
    )


def c_writers_header() -> str:
    """``_ring_writers.h``: the SQE writers, included by ``_ring.h``."""
    return "\n\n".join(
        [
            "/* AUTOGENERATED from _ring_api.py by tools/gen_ring.py: edits will be lost. */\n"
            "#ifndef TRIO_URING_RING_WRITERS_H\n#define TRIO_URING_RING_WRITERS_H",
            *(_writer_definition(w) for w in WRITERS),
            "#endif",
        ]
    ) + "\n"


def cdef() -> str:
    """The declarations cffi needs: structs, constants, functions, writers."""
    lines = [STRUCTS]
    lines += [f"#define {name} ..." for name in CONSTANTS]
    lines += [f"{fn.ret} {fn.name}({_params(fn.params)});" for fn in FUNCTIONS]
    lines += [_writer_signature(w) + ";" for w in WRITERS]
    return "\n".join(lines)
