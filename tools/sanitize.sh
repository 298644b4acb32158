#!/usr/bin/env bash
# Build trio_uring's C ring layer (_ring.c through cffi) with AddressSanitizer and
# UndefinedBehaviorSanitizer, run the test suite against that build, report findings.
#
#   tools/sanitize.sh                 # our tests (tests/)
#   tools/sanitize.sh --trio-suite    # ... then Trio's own test suite on io_uring (slow)
#   tools/sanitize.sh -- -k socket    # extra pytest arguments
#
# Nothing in the repository or its .venv is touched: the working tree (tracked and
# untracked files, minus ignored ones such as .venv and built .so files) is copied
# to a throwaway directory, which gets its own venv with an editable install built
# with CFLAGS/LDFLAGS=-fsanitize=address,undefined.
#
# Python itself is not built with ASan, so the ASan runtime is LD_PRELOADed (it
# must come first), leak detection is off (CPython never frees everything), and
# PYTHONMALLOC=malloc sends Python's own allocations through ASan's malloc too, so
# a C write past a Python buffer is caught. Child interpreters started by the tests
# inherit all of it. UBSan reports and continues; ASan stops the process at its
# first error. Reports go to per-process log files, summarised at the end.
#
# Environment: SANITIZE_DIR (default: a new /tmp/trio-uring-sanitize.XXXXXX, kept
# for inspection), PYTHON (the interpreter whose version to use; default
# .venv/bin/python, else python3), KEEP_GOING=1 (do not stop at ASan's first error:
# halt_on_error=0, needs the -fsanitize-recover=address build it gets anyway),
# SANITIZE_TIMEOUT (seconds for each pytest run, default 1800).
#
# Exit status: 0 if the tests passed and no sanitizer said anything, 1 otherwise.

set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TRIO_SUITE=0
PYTEST_ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --trio-suite) TRIO_SUITE=1 ;;
        -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        --) shift; PYTEST_ARGS=("$@"); break ;;
        *) echo "sanitize.sh: unknown option $1 (--help)" >&2; exit 2 ;;
    esac
    shift
done

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
BASE_PYTHON=$("$PYTHON" -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')
CC=${CC:-gcc}
TIMEOUT=${SANITIZE_TIMEOUT:-1800}  # seconds for each test run; a hung test is dumped (faulthandler) at 300 s
LIBASAN=$("$CC" -print-file-name=libasan.so)
if [ ! -e "$LIBASAN" ] || [ "$LIBASAN" = libasan.so ]; then
    echo "sanitize.sh: $CC has no libasan.so (install the compiler's sanitizer runtime, e.g. libasan8)" >&2
    exit 2
fi

WORK=${SANITIZE_DIR:-$(mktemp -d /tmp/trio-uring-sanitize.XXXXXX)}
mkdir -p "$WORK/logs"
SRC=$WORK/src
VENV=$WORK/venv
LOG=$WORK/logs
step() { printf '\n== %s\n' "$*"; }

step "copying the working tree to $SRC"
rm -rf "$SRC"
mkdir -p "$SRC"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 -r sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh \
    | tar --null -T - -cf -) | tar -xf - -C "$SRC"

step "venv ($BASE_PYTHON) and the build tools"
if [ ! -x "$VENV/bin/python" ]; then
    "$BASE_PYTHON" -m venv "$VENV"
fi
VPY=$VENV/bin/python
"$VPY" -m pip install -q --disable-pip-version-check --upgrade pip
"$VPY" -m pip install -q --disable-pip-version-check 'setuptools>=77.0.3' wheel 'cffi>=1.17'  # pyproject.toml's build requirements (SPDX license: 77+)

step "building the ring layer with -fsanitize=address,undefined"
SAN_FLAGS="-fsanitize=address,undefined -fsanitize-recover=address -fno-omit-frame-pointer -g -O1"
(
    cd "$SRC"
    CFLAGS="$SAN_FLAGS" LDFLAGS="-fsanitize=address,undefined" \
        "$VPY" -m pip install -q --disable-pip-version-check --no-build-isolation -e '.[test,lint]'
) > "$LOG/build.log" 2>&1 || { cat "$LOG/build.log"; echo "sanitize.sh: the build failed" >&2; exit 1; }
SO=$(ls "$SRC"/trio_uring/_ring_cffi*.so)
if ! nm -D "$SO" | grep -q '__asan_report\|__asan_init'; then
    echo "sanitize.sh: $SO is not instrumented (CFLAGS did not reach the compiler?)" >&2
    exit 1
fi
if ! nm -D "$SO" | grep -q '__ubsan_handle'; then
    echo "sanitize.sh: $SO has no UBSan checks" >&2
    exit 1
fi
echo "instrumented: $SO"
ldd "$SO" | grep -E 'asan|ubsan' | sed 's/^/  /'

# The sanitizer environment, for every interpreter the tests start.
HALT=1
[ "${KEEP_GOING:-0}" = 1 ] && HALT=0
export LD_PRELOAD=$LIBASAN
# handle_sigill/sigfpe=0: leave those signals to Python (Trio's signal tests use them);
# ASan still catches SIGSEGV and SIGBUS.
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=$HALT:abort_on_error=0:detect_stack_use_after_return=1:strict_string_checks=1:check_initialization_order=1:handle_sigill=0:handle_sigfpe=0:log_path=$LOG/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=0:log_path=$LOG/ubsan"
export PYTHONMALLOC=malloc
# (Not PYTHONFAULTHANDLER: installed before the signal module starts, its handlers
# make signal.getsignal() return None, which Trio's signal tests trip over.)
unset TRIO_URING

step "sanity check: an io_uring echo under the sanitizers"
(cd "$SRC" && "$VPY" -c '
import trio, trio_uring
from trio_uring import _ring_cffi
async def main():
    a, b = trio.socket.socketpair()
    await a.send(b"x" * 100000)
    got = b""
    while len(got) < 100000:
        got += await b.recv(65536)
    return trio.lowlevel.current_statistics().io_statistics.backend, len(got)
print(trio_uring.run(main), _ring_cffi.__file__)
')

step "self-test: a deliberate overflow in the C layer must be reported"
# tu_reap() copies 3 int64 per CQE into the caller's array: give it room for one
# CQE and two ready. If ASan does not say heap-buffer-overflow, nothing it says
# about the real tests can be trusted either.
mkdir -p "$WORK/selftest"
rm -f "$WORK/selftest"/asan.*
set +e
(cd "$SRC" && ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:log_path=$WORK/selftest/asan" "$VPY" -c '
from trio_uring._ring import Ring
from trio_uring._ring_cffi import ffi, lib
r = Ring(8, 16)
r.write.nop(1); r.write.nop(2)
r.wait(1.0)
lib.tu_reap(r._r, ffi.new("int64_t[]", 3), 16)
') > /dev/null 2>&1
set -e
if grep -q 'heap-buffer-overflow' "$WORK"/selftest/asan.* 2>/dev/null; then
    echo "ok: $(grep -h 'SUMMARY' "$WORK"/selftest/asan.* | head -1)"
else
    echo "sanitize.sh: the self-test overflow was NOT reported; the set-up is broken" >&2
    exit 1
fi

status=0
step "our tests: pytest tests/ ${PYTEST_ARGS[*]:-}"
set +e
# Left out: tests that build the package or run make, whose tools ASan (preloaded into
# every child) would judge instead of our C layer (make 4.3 over-reads in strndup);
# and a test that measures peak RSS, which under ASan is its shadow memory and
# allocator (932 MiB for one untouched 2 GiB buffer), not ours. `make test-ours`
# runs them.
NOT_OURS=(--ignore=tests/test_packaging.py
          --deselect tests/test_trio_contract.py::test_dependency_and_make_target_follow_the_oldest_tested_trio
          --deselect tests/test_files_adversarial.py::test_a_huge_read_size_commits_no_memory)
(cd "$SRC" && timeout "$TIMEOUT" "$VPY" -m pytest -q -p no:cacheprovider -o faulthandler_timeout=300 tests/ "${NOT_OURS[@]}" "${PYTEST_ARGS[@]}") 2>&1 | tee "$LOG/pytest.log"
tests_status=${PIPESTATUS[0]}
set -e
[ "$tests_status" -ne 0 ] && status=1

if [ "$TRIO_SUITE" = 1 ]; then
    step "Trio's own test suite on io_uring"
    set +e
    (cd "$SRC" && timeout "$TIMEOUT" "$VPY" tests/trio_suite/run.py -p no:cacheprovider -o faulthandler_timeout=300) 2>&1 | tee "$LOG/trio-suite.log"
    suite_status=${PIPESTATUS[0]}
    set -e
    [ "$suite_status" -ne 0 ] && status=1
fi

step "sanitizer findings"
unset LD_PRELOAD
shopt -s nullglob
asan_logs=("$LOG"/asan.*)
ubsan_logs=("$LOG"/ubsan.*)
asan_errors=0
ubsan_errors=0
for f in "${asan_logs[@]}"; do
    n=$(grep -c 'ERROR: AddressSanitizer' "$f" || true)
    asan_errors=$((asan_errors + n))
done
for f in "${ubsan_logs[@]}"; do
    n=$(grep -c 'runtime error:' "$f" || true)
    ubsan_errors=$((ubsan_errors + n))
done
echo "AddressSanitizer: $asan_errors error(s) in ${#asan_logs[@]} log file(s)"
for f in "${asan_logs[@]}"; do
    echo "--- $f"
    grep -E 'ERROR: AddressSanitizer|^    #[0-9]+ .*(_ring|tu_|_cffi)|SUMMARY' "$f" | head -20 || true
done
echo "UndefinedBehaviorSanitizer: $ubsan_errors report(s) in ${#ubsan_logs[@]} log file(s)"
for f in "${ubsan_logs[@]}"; do
    echo "--- $f"
    { grep -E 'runtime error:' "$f" || true; } | sort | uniq -c | head -20
done
[ $((asan_errors + ubsan_errors)) -ne 0 ] && status=1
# A crash without a report (a signal ASan did not catch) shows in the pytest log.
if grep -qE 'Fatal Python error|Segmentation fault|AddressSanitizer' "$LOG/pytest.log"; then
    echo "the pytest output mentions a crash: see $LOG/pytest.log"
    status=1
fi

echo
echo "tests: $(tail -1 "$LOG/pytest.log")"
[ "$TRIO_SUITE" = 1 ] && echo "Trio's suite: $(tail -1 "$LOG/trio-suite.log")"
echo "logs:  $LOG"
if [ "$status" -eq 0 ]; then echo "sanitize.sh: clean"; else echo "sanitize.sh: FINDINGS (see above)"; fi
exit "$status"
