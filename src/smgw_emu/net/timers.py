"""Timers on the gateway's clock for asyncio code.

With a `RealClock` they are the event loop's own timers; with a `VirtualClock` they fire when the
clock is advanced (by a test or the control plane), so nothing waits for real hours.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Protocol

from smgw_emu.core.clock import Clock, VirtualClock


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Timers:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def call_later(self, delay: float, callback: Callable[[], None]) -> Cancellable:
        if isinstance(self.clock, VirtualClock):
            return self.clock.call_later(delay, callback)
        return asyncio.get_running_loop().call_later(max(0.0, delay), callback)

    def call_at(self, deadline: float, callback: Callable[[], None]) -> Cancellable:
        """`deadline` in the clock's monotonic seconds."""
        return self.call_later(deadline - self.clock.monotonic(), callback)

    async def sleep(self, delay: float) -> None:
        if not isinstance(self.clock, VirtualClock):
            await asyncio.sleep(delay)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        timer = self.clock.call_later(delay, wake)
        try:
            await future
        finally:
            timer.cancel()
