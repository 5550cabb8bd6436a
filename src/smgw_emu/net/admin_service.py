"""The ADMIN-SERVICE channel (Lastenheft 5.4, 5.5): the gateway fetches from the GWA's service
endpoint (firmware images, certificates). The gateway is TLS and HTTP client; the channel lives
for one fetch. Failures are retried with backoff, then reported as AdminServiceError.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Callable
from urllib.parse import urljoin

import aiohttp

from smgw_emu.net.timers import Timers
from smgw_emu.net.tls import PeerCheck
from smgw_emu.net.wanclient import PeerRejected, wan_session


class AdminServiceError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class AdminServiceChannel:
    def __init__(
        self, *, base_url: str, ssl_context: ssl.SSLContext, peer_check: PeerCheck, timers: Timers,
        journal: Callable[..., object], retry_initial: float, retry_max: float, timeout: float = 60.0,
    ) -> None:
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self._ssl = ssl_context
        self._peer_check = peer_check
        self._timers = timers
        self._journal = journal
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._timeout = timeout

    async def fetch(self, path: str, *, max_bytes: int = 64 * 1024 * 1024, attempts: int = 3) -> bytes:
        url = urljoin(self.base_url, path.lstrip("/"))
        if not url.startswith(self.base_url):
            raise AdminServiceError("bad-path", f"{path!r} leaves the ADMIN-SERVICE endpoint {self.base_url}")
        last: AdminServiceError | None = None
        for attempt in range(1, attempts + 1):
            try:
                return await self._fetch_once(url, max_bytes)
            except AdminServiceError as exc:
                last = exc
                if exc.reason in ("not-found", "too-large", "peer-rejected") or attempt == attempts:
                    break
                await self._timers.sleep(min(self.retry_max, self.retry_initial * 2 ** (attempt - 1)))
        assert last is not None
        self._journal("admin-service-fetch-failed", f"ADMIN-SERVICE fetch of {url} failed: {last}",
                      level=3, outcome=1, reason=last.reason)
        raise last

    async def _fetch_once(self, url: str, max_bytes: int) -> bytes:
        try:
            async with wan_session(self._ssl, self._peer_check, self._timeout) as session:
                self._journal("admin-service-channel-opened", f"ADMIN-SERVICE channel to {url} opened")
                try:
                    async with session.get(url) as response:
                        if response.status == 404:
                            raise AdminServiceError("not-found", f"{url}: 404 not found")
                        if response.status != 200:
                            raise AdminServiceError("http-error", f"{url}: HTTP {response.status}")
                        if (response.content_length or 0) > max_bytes:
                            raise AdminServiceError("too-large", f"{url}: {response.content_length} bytes > {max_bytes}")
                        body = bytearray()
                        async for chunk in response.content.iter_chunked(65536):
                            body += chunk
                            if len(body) > max_bytes:
                                raise AdminServiceError("too-large", f"{url}: more than {max_bytes} bytes")
                        return bytes(body)
                finally:
                    self._journal("admin-service-channel-closed", f"ADMIN-SERVICE channel to {url} closed")
        except PeerRejected as exc:
            raise AdminServiceError("peer-rejected", str(exc)) from None
        except (aiohttp.ClientError, asyncio.TimeoutError, ssl.SSLError, OSError) as exc:
            raise AdminServiceError("connect-failed", f"{url}: {exc or type(exc).__name__}") from None
