"""Meter data to the EMT (Lastenheft 6.5.13, 6.5.14 and the processes that end in a transfer):
the gateway opens TLS to the recipient EMT, its certificate pinned to the one of the EMT's
communication profile, and POSTs the sealed container (core/cms.py) to the EMT's URL.

The queue is the state store's outbox (channel ``emt-data``), written in the same transaction as
the change that produced the data; an item leaves it only when the EMT answered 2xx, so nothing
is lost across restarts. A failed item is retried with exponential backoff on the gateway's
clock. What an item means (document, recipient, sealing, events) is the application's business
(app/datatransfer.py); this module moves bytes.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from typing import Callable

import aiohttp

from smgw_emu.net.timers import Timers
from smgw_emu.net.tls import PeerCheck, certificate_fingerprint
from smgw_emu.net.wanclient import PeerRejected, wan_session
from smgw_emu.store import OutboxItem, StateStore

log = logging.getLogger("smgw_emu.emt_delivery")

CHANNEL = "emt-data"


@dataclass(frozen=True)
class Target:
    """Where one item goes and what it carries: the sealed container, the EMT's URL and TLS pin."""

    url: str
    tls_certificate: bytes
    body: bytes
    retry_initial_s: float
    max_retries: int


class DeliveryFailed(Exception):
    pass


class EmtDelivery:
    def __init__(self, *, store: StateStore, ssl_context: Callable[[], ssl.SSLContext], timers: Timers,
                 prepare: Callable[[OutboxItem], Target | None],
                 delivered: Callable[[OutboxItem, int], None],
                 failed: Callable[[OutboxItem, int, str, bool], None],
                 journal: Callable[..., object], retry_max_s: float, timeout: float = 30.0) -> None:
        self.store = store
        self._ssl = ssl_context
        self._timers = timers
        self._prepare = prepare
        self._delivered = delivered
        self._failed = failed
        self._journal = journal
        self.retry_max_s = retry_max_s
        self._timeout = timeout
        self._wake = asyncio.Event()
        self.idle = asyncio.Event()
        self.delivered = 0

    def notify(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        self._wake.set()  # what survived the last run
        while True:
            await self._wake.wait()
            self._wake.clear()
            self.idle.clear()
            delay = await self.deliver_pending()
            if delay is None:
                if not self._wake.is_set():
                    self.idle.set()
                continue
            log.info("EMT delivery: items left; next try in %.1f s", delay)
            sleeper = asyncio.ensure_future(self._timers.sleep(delay))
            waker = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                waker.cancel()
            self._wake.set()

    async def deliver_pending(self) -> float | None:
        """Try every queued item once. None when the queue is empty, else the backoff delay."""
        delay: float | None = None
        for item in self.store.pending(CHANNEL, limit=1000):
            target = self._prepare(item)
            if target is None:  # the application dropped it (its recipient is gone)
                continue
            try:
                await self._post(item, target)
            except DeliveryFailed as exc:
                attempts = item.attempts + 1
                self.store.record_attempt(item.id, str(exc))
                self._failed(item, attempts, str(exc), attempts == target.max_retries)
                wait = min(self.retry_max_s, target.retry_initial_s * 2 ** (attempts - 1))
                delay = wait if delay is None else min(delay, wait)
                continue
            self.store.acknowledge(item.id)
            self.delivered += 1
            self._delivered(item, item.attempts + 1)
        return delay

    async def _post(self, item: OutboxItem, target: Target) -> None:
        check = PeerCheck({certificate_fingerprint(target.tls_certificate)})
        try:
            async with wan_session(self._ssl(), check, self._timeout) as session:
                async with session.post(target.url, data=target.body, headers={
                        "Content-Type": "application/pkcs7-mime", "X-Transfer-Kind": item.kind}) as response:
                    await response.read()
                    if not 200 <= response.status < 300:
                        raise DeliveryFailed(f"EMT answered {response.status}")
        except DeliveryFailed:
            raise
        except (PeerRejected, aiohttp.ClientError, asyncio.TimeoutError, ssl.SSLError, OSError) as exc:
            raise DeliveryFailed(str(exc) or type(exc).__name__) from None

