"""Keeping ``sluice up``'s resident memory flat: glibc's allocator, told to hand freed memory back.

The hour-long soak (bench/soak.py, issue 16) grew the stack's RSS by 73 MiB (+15.6 %) while the
Python objects it held grew by under a tenth of that (tracemalloc): the rest was memory the
process had freed and glibc kept. Two of glibc's habits cause it in a long-lived, threaded
process that runs pandas, pyarrow and onnxruntime work now and then:

- each thread that allocates may get its own arena (up to 8 per core), and memory freed in one
  is reused only by threads that land on it again;
- a freed chunk is returned to the system only when it sits at the top of its heap, so one live
  allocation above a freed run of pages keeps all of them resident.

``limit_arenas`` caps the arenas at ``ARENAS`` (2) for the threads that start after it (call it
before the stack's threads start); ``release`` is ``malloc_trim(0)``, which returns every free
page of every arena, wherever it sits. The stack releases every ``RELEASE_SECONDS`` (30) from its
save loop and after each run. They lowered the soak's RSS after warm-up from 468 to 296 MiB;
the hour still grew 72 MiB, most of it the moto tracking below (docs/reliability.md §9).

Both are glibc functions; elsewhere (musl, macOS) they are absent and both calls do nothing.

``forget_tracked_models`` undoes a habit of moto's: every instance of every moto model class is
appended to its class's ``instances_tracked`` list when it is created, for the moto server's
dashboard, and never removed. That includes the copies a DynamoDB Scan makes of each item it
returns (a 45-item registry scanned by the alarm rounds kept 200 copies a scan), every
CloudWatch datum and every S3 key object, deleted or not. The backends hold what the endpoint
stores; the lists only feed ``/moto-api/``'s dashboard, which ``sluice up`` does not offer. The
stack empties them with every release, as moto's own ``reset_model_data`` does at a reset.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache
from typing import Any

M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h
ARENAS = 2
RELEASE_SECONDS = 30.0


@cache
def _glibc() -> Any | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        library = ctypes.CDLL(name)
    except OSError:
        return None
    if not (hasattr(library, "mallopt") and hasattr(library, "malloc_trim")):
        return None
    return library


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas; True when the allocator took the setting."""
    library = _glibc()
    return library is not None and bool(library.mallopt(M_ARENA_MAX, arenas))


def release() -> bool:
    """Return the allocator's free pages to the system; True when some were returned."""
    library = _glibc()
    return library is not None and bool(library.malloc_trim(0))


def forget_tracked_models() -> int:
    """Empty every moto model class's ``instances_tracked`` list; returns how many entries went.
    What the backends store is untouched."""
    from moto.core.model_instances import model_data

    dropped = 0
    for models in model_data.values():
        for model in models.values():
            tracked = getattr(model, "instances_tracked", None)
            if tracked:
                dropped += len(tracked)
                model.instances_tracked = []  # type: ignore[attr-defined]
    return dropped
