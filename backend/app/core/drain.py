"""On SIGTERM, a drain before the shutdown: for DRAIN_PERIOD seconds the server goes on serving,
but /health answers 503, so that load balancers take it out of rotation before it stops.

Without it, uvicorn closes its listener and its idle keep-alive connections at once: a proxy that
sends a request on one of them at that moment gets a reset (a 502, or a POST lost).
"""

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)


class Drain:
    def __init__(self, period: float) -> None:
        self.period = period
        self.draining = False
        self._shutdown: Callable[[int, FrameType | None], Any] | None = None

    def install(self) -> None:
        """Take SIGTERM over from the server's handler, which still ends the server, `period` later.

        Only under a server that handles SIGTERM itself on the main thread, as uvicorn does.
        """
        shutdown = signal.getsignal(signal.SIGTERM)
        if self.period <= 0 or not callable(shutdown) or threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()

        def begin() -> None:
            if self.draining:  # a second SIGTERM: no more waiting
                shutdown(signal.SIGTERM, None)
                return
            self.draining = True
            logger.info("SIGTERM: /health answers 503 for %g s (DRAIN_PERIOD), then the server stops", self.period)
            loop.call_later(self.period, shutdown, signal.SIGTERM, None)

        # Through the loop rather than signal.signal, so that `begin` runs between its callbacks.
        loop.add_signal_handler(signal.SIGTERM, begin)
        self._shutdown = shutdown

    def uninstall(self) -> None:
        if self._shutdown is not None:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)
            signal.signal(signal.SIGTERM, self._shutdown)
            self._shutdown = None
