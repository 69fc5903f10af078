"""Every signal that ends a command cleans up as Ctrl-C does.

Python turns SIGINT into `KeyboardInterrupt`, so the staged writes and the
directories a command created (`keras_bn.staging`) are removed on Ctrl-C. SIGTERM
(what `timeout`, `docker stop` and job schedulers send) and SIGHUP (a closed
terminal) would kill the process where it stands, leaving a hidden `.partial`
file and half-made directories. While a command runs, they raise `Terminated`,
a `KeyboardInterrupt`, so the same clean-up runs; the command then exits
128 + the signal's number, as a shell reports a process killed by it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["CLEANED_UP_SIGNALS", "Terminated", "signals_as_interrupts"]

CLEANED_UP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class Terminated(KeyboardInterrupt):
    """A signal asked the command to end (SIGTERM, SIGHUP).

    Args:
        signum: The signal's number.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"terminated by {signal.Signals(self.signum).name}"


def raise_terminated(signum: int, frame) -> None:
    """The handler: ends the command through the `KeyboardInterrupt` path.

    Further SIGTERM and SIGHUP are ignored from here on, so that a second
    signal (`docker stop` and some schedulers repeat theirs) cannot cut the
    clean-up short; `signals_as_interrupts` restores the handlers after it.
    """
    for other in CLEANED_UP_SIGNALS:
        signal.signal(other, signal.SIG_IGN)
    raise Terminated(signum)


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP raise `Terminated`.

    The previous handlers are restored afterwards. A signal the parent
    process ignores (`nohup` ignores SIGHUP) stays ignored. Off the main
    thread, where Python cannot install handlers, nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for signum in CLEANED_UP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, raise_terminated)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
