"""The host allocator policy: keep freed memory for the next allocation instead of returning it to the kernel.

torch's CPU tensors come from the C library's malloc. glibc serves a large block (above a threshold that
starts at 128 KiB and adapts up to 32 MiB) with a fresh mmap, and gives it back with munmap when freed; it
also trims the heap's free top back to the kernel. Every fresh page is then faulted in and zeroed again on
first touch. A barrier's BatchNorm re-estimation allocates and frees tens of MB per layer and per t (the
demo CNN: 20 MB a layer output at 4,000 calibration rows), so a point spent a third of its time in page
faults on this development machine (a VM), and by how much swung from run to run with glibc's adaptive
threshold: 262-329 ms a point against 193-225 ms with the policy below (benchmarks/bench_conv_floor.py);
the straightforward loop it is compared with gained as much (benchmarks/bench_barrier.py --malloc-default).

`apply()` sets glibc's mmap threshold to its maximum (32 MiB: blocks below it come from the heap and are
reused) and the trim threshold to 256 MiB (the heap keeps up to that much free memory for reuse), in this
process through mallopt and in every process it starts through the environment (MALLOC_*_ that glibc reads
at start-up). Where the C library is not glibc, nothing happens. Only where memory comes from changes, never
what is computed: results are the same bits either way (tests/test_allocator.py). The cost is resident
memory: a process (each allocation arena, one per busy thread) keeps up to 256 MiB of freed memory
instead of returning it.

Torch-free (ctypes only), like the thread policy it is applied beside.
"""

from __future__ import annotations

import ctypes
import os

# mallopt's parameter numbers (malloc.h) and the values the policy sets.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's maximum on 64-bit (HEAP_MAX_SIZE / 2); mallopt refuses more
TRIM_THRESHOLD = 256 << 20
ENV = {"MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD, "MALLOC_TRIM_THRESHOLD_": TRIM_THRESHOLD}
# $STARLIGHT_MALLOC=default leaves glibc's adaptive behaviour alone (to compare, or where memory is tight);
# unset or "policy": the policy. Anything else is refused rather than read as one of the two.
SWITCH = "STARLIGHT_MALLOC"
CHOICES = ("policy", "default")

_applied: bool | None = None


def _glibc():
    """The process's C library when it is glibc (it has mallopt and gnu_get_libc_version), else None.
    CDLL(None): the symbols already loaded into this process, so no library search (find_library would
    run ldconfig)."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
        libc.mallopt  # noqa: B018
        return libc
    except (OSError, AttributeError, TypeError):
        return None


def apply() -> bool:
    """Apply the policy to this process and the processes it starts; True where it took effect. Idempotent."""
    global _applied
    if _applied is not None:
        return _applied
    choice = os.environ.get(SWITCH, "").strip().lower() or "policy"
    if choice not in CHOICES:
        from starcli.errors import UsageError

        raise UsageError(f"${SWITCH} must be policy or default (glibc's own behaviour), got {os.environ[SWITCH]!r}")
    if choice == "default":
        _applied = False
        return False
    libc = _glibc()
    if libc is None:
        _applied = False
        return False
    ok = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if ok:
        for name, value in ENV.items():
            os.environ.setdefault(name, str(value))
    _applied = ok
    return ok
