"""Ctrl-C during training: finish the batch, stop cleanly, keep the weights.

The first SIGINT only sets the learner's stop flag (with the reason); the loop finishes the
batch and ends the fit, so the model can still be used, saved or trained further. A second
Ctrl-C raises KeyboardInterrupt at once. Outside the main thread signals cannot be caught, and
nothing is installed.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lrkit.learner import Learner


@contextlib.contextmanager
def stop_on_interrupt(learn: Learner) -> Iterator[None]:
    """Ctrl-C sets `learn.stop` (the batch finishes); a second Ctrl-C raises at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is None:  # installed outside Python; fall back to the usual behaviour
        previous = signal.default_int_handler

    def handler(signum: int, frame: Any) -> None:
        if learn.interrupted:
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        learn.stop, learn.interrupted = True, True
        learn.stop_reason = (
            f"interrupted (Ctrl-C) at epoch {learn.epoch}, batch {learn.iter}; the model "
            "keeps the weights after that batch and can be used, saved or trained further"
        )

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
