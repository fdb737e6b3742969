"""Scheduling priority of the helper threads around the pose call (capture, detector, output).

The pose call is what a latency budget bounds and what the frame rate waits for; the helpers keep the
machine busy beside it. On a small machine the helpers and the pose call compete for the same cores, so
each helper lowers its own priority when it starts: it then takes the CPU the pose call leaves idle
instead of slowing it (measured in ``docs/speed.md``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

HELPER_NICENESS = 10
"""How much lower (Linux niceness) a helper thread's priority is than the pose thread's."""


def lower_thread_priority(niceness: int = HELPER_NICENESS) -> None:
    """Lower the calling thread's priority by ``niceness`` where the OS schedules threads by niceness
    (Linux); elsewhere, or where it is refused, nothing changes."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + niceness)
