"""How pool workers take the signals a batch system sends to the whole process group.

``timeout``, Slurm and systemd send SIGTERM (Ctrl-C sends SIGINT) to every process of the job,
workers included. A worker that died of it broke its pool under the parent's feet: the pool's
manager thread then failed the parent's pending futures, racing the parent's own cancelling of
them (CPython 3.11's ``terminate_broken`` raises InvalidStateError on a cancelled future and
prints it from its thread). The parent receives the same signal and shuts the pool down in order,
so a worker leaves both signals to it, except a SIGTERM its parent sends itself: that is how a
process pool stops workers (``Process.terminate``), and it must still work.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

_TERM = {signal.SIGTERM}
_INTERRUPTS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM in the main thread for a step that must not be cut in half.

    Forking a pool worker (a KeyboardInterrupt raised inside fork's at-fork hooks is swallowed,
    "Exception ignored", so the interrupt would be half lost), or writing a result to the
    journal and counting it (an interrupt in between would report it as unfinished). Held here,
    the interrupt is delivered right after, in our code.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPTS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _INTERRUPTS)


def shield_worker(parent: int) -> None:
    """In a worker process (a pool initializer): ignore SIGINT, and end on a SIGTERM only when
    ``parent`` sent it. Call before starting any thread of the worker's own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # Blocked here, so in every thread started later: only the waiting thread takes SIGTERM.
    signal.pthread_sigmask(signal.SIG_BLOCK, _TERM)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    threading.Thread(
        target=_take_sigterm, args=(parent,), daemon=True, name="svsicc-sigterm"
    ).start()


def _take_sigterm(parent: int) -> None:
    while True:
        info = signal.sigwaitinfo(_TERM)
        if info.si_pid == parent or os.getppid() != parent:
            os._exit(128 + signal.SIGTERM)
