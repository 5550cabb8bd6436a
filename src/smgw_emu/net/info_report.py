"""The INFO-REPORT channel (Lastenheft 5.6, 5.7, 5.14): the gateway pushes events and reports.

Reports wait in the state store's outbox (written in the same transaction as the change they
report) and leave it only when the GWA has answered 2xx. A failed delivery is retried with
exponential backoff on the gateway's clock; nothing is lost across restarts because the outbox is
the queue. One channel (TLS connection + HTTP session) is opened per batch and closed when the
outbox is empty (5.6 aufbauen, 5.7 abbauen).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Callable

import aiohttp

from smgw_emu.net.timers import Timers
from smgw_emu.net.tls import PeerCheck
from smgw_emu.net.wanclient import PeerRejected, wan_session
from smgw_emu.store import StateStore

log = logging.getLogger("smgw_emu.info_report")

CHANNEL = "info-report"


class InfoReportChannel:
    def __init__(
        self, *, store: StateStore, url: str, ssl_context: ssl.SSLContext, peer_check: PeerCheck,
        timers: Timers, journal: Callable[..., object], retry_initial: float, retry_max: float,
        timeout: float = 30.0,
    ) -> None:
        self.store = store
        self.url = url
        self._ssl = ssl_context
        self._peer_check = peer_check
        self._timers = timers
        self._journal = journal
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._timeout = timeout
        self._wake = asyncio.Event()
        self.delivered = 0
        self.failed_attempts = 0
        self.idle = asyncio.Event()

    def retarget(self, *, url: str | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        """Deliver to another GWA URL, or with another TLS context, from the next batch on (a GWA
        change, new trust anchors). The pinned peer follows the PeerCheck passed at start."""
        if url is not None:
            self.url = url
        if ssl_context is not None:
            self._ssl = ssl_context

    def notify(self) -> None:
        """New reports are in the outbox."""
        self._wake.set()

    async def run(self) -> None:
        failures = 0
        self._wake.set()  # deliver whatever survived the last run
        while True:
            await self._wake.wait()
            self._wake.clear()
            self.idle.clear()
            if await self.deliver_pending():
                failures = 0
                if not self._wake.is_set():
                    self.idle.set()
                continue
            failures += 1
            delay = min(self.retry_max, self.retry_initial * 2 ** (failures - 1))
            log.info("INFO-REPORT delivery failed %d time(s); next try in %.1f s", failures, delay)
            await self._timers.sleep(delay)
            self._wake.set()

    async def deliver_pending(self) -> bool:
        """Open the channel, push every queued report, close it. True when the outbox is empty."""
        pending = self.store.pending(CHANNEL)
        if not pending:
            return True
        opened = False

        def connected() -> None:  # logged once the TLS connection stands and the GWA is checked
            nonlocal opened
            if not opened:
                opened = True
                self._journal("info-report-channel-opened", f"INFO-REPORT channel to {self.url} opened")

        try:
            async with wan_session(self._ssl, self._peer_check, self._timeout, on_connected=connected) as session:
                try:
                    while pending:
                        for item in pending:
                            async with session.post(
                                self.url, data=item.body,
                                headers={"Content-Type": "application/xml", "X-Report-Id": str(item.id)},
                            ) as response:
                                await response.read()
                                if not 200 <= response.status < 300:
                                    raise _Refused(f"GWA answered {response.status} to report {item.id}")
                            self.store.acknowledge(item.id)
                            self.delivered += 1
                        pending = self.store.pending(CHANNEL)
                finally:
                    if opened:
                        self._journal("info-report-channel-closed", f"INFO-REPORT channel to {self.url} closed")
            return True
        except (_Refused, PeerRejected, aiohttp.ClientError, asyncio.TimeoutError, ssl.SSLError, OSError) as exc:
            self.failed_attempts += 1
            reason = str(exc) or type(exc).__name__
            head = self.store.pending(CHANNEL, limit=1)
            if head:
                self.store.record_attempt(head[0].id, reason)
            self._journal("info-report-delivery-failed", f"INFO-REPORT delivery to {self.url} failed: {reason}",
                          level=2, outcome=1, reason=reason)
            return False


class _Refused(Exception):
    pass
