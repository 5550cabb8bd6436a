"""The ADMIN-SERVICE channel (Lastenheft 5.4, 5.5): the gateway fetches from the GWA's service
endpoint (firmware images, certificates). The gateway is TLS and HTTP client; the channel lives
for one fetch. Failures are retried with backoff, then reported as AdminServiceError.
"""

from __future__ import annotations

import asyncio
import ssl
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator, Callable
from urllib.parse import urljoin

import aiohttp

from smgw_emu.net.timers import Timers
from smgw_emu.net.tls import PeerCheck
from smgw_emu.net.wanclient import PeerRejected, wan_session


class AdminServiceError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class RangeReply:
    """The answer to one Range request: status 200, 206 or 416, Content-Range, the bytes."""

    status: int
    content_range: str | None
    body: bytes


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

    def retarget(self, *, base_url: str | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        """Fetch from another GWA endpoint, or with another TLS context, from the next channel on
        (a GWA change, new trust anchors)."""
        if base_url is not None:
            self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        if ssl_context is not None:
            self._ssl = ssl_context

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
        opened = False

        def connected() -> None:  # logged once the TLS connection stands and the GWA is checked
            nonlocal opened
            opened = True
            self._journal("admin-service-channel-opened", f"ADMIN-SERVICE channel to {url} opened")

        try:
            async with wan_session(self._ssl, self._peer_check, self._timeout, on_connected=connected) as session:
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
                    if opened:
                        self._journal("admin-service-channel-closed", f"ADMIN-SERVICE channel to {url} closed")
        except PeerRejected as exc:
            raise AdminServiceError("peer-rejected", str(exc)) from None
        except (aiohttp.ClientError, asyncio.TimeoutError, ssl.SSLError, OSError) as exc:
            raise AdminServiceError("connect-failed", f"{url}: {exc or type(exc).__name__}") from None

    # -- ranged downloads (firmware, 6.1) -------------------------------------------------------
    @asynccontextmanager
    async def download(self, path: str) -> AsyncIterator["AdminServiceDownload"]:
        """One ADMIN-SERVICE channel held open for a series of Range requests on `path`; it is
        closed when the block ends (done, paused, failed or cancelled)."""
        url = urljoin(self.base_url, path.lstrip("/"))
        if not url.startswith(self.base_url):
            raise AdminServiceError("bad-path", f"{path!r} leaves the ADMIN-SERVICE endpoint {self.base_url}")
        async with wan_session(self._ssl, self._peer_check, self._timeout, keep_alive=True) as session:
            self._journal("admin-service-channel-opened", f"ADMIN-SERVICE channel to {url} opened (ranged download)")
            try:
                yield AdminServiceDownload(self, session, url)
            finally:
                self._journal("admin-service-channel-closed", f"ADMIN-SERVICE channel to {url} closed")


class AdminServiceDownload:
    """Range requests on one open ADMIN-SERVICE channel. Transient failures (no connection, 5xx)
    are retried with the channel's backoff; what remains is an AdminServiceError."""

    def __init__(self, channel: AdminServiceChannel, session, url: str) -> None:
        self._channel = channel
        self._session = session
        self.url = url

    async def get_range(self, start: int, end: int, *, max_bytes: int, attempts: int = 3) -> RangeReply:
        """GET bytes start..end (inclusive). 200, 206 and 416 are answers; 404 and other 4xx are
        not-found / http-refused at once; no connection or 5xx are retried, then connect-failed /
        http-error."""
        ch = self._channel
        last: AdminServiceError | None = None
        for attempt in range(1, attempts + 1):
            try:
                return await self._get_once(start, end, max_bytes)
            except AdminServiceError as exc:
                last = exc
                if exc.reason not in ("connect-failed", "http-error") or attempt == attempts:
                    break
                await ch._timers.sleep(min(ch.retry_max, ch.retry_initial * 2 ** (attempt - 1)))
        assert last is not None
        ch._journal("admin-service-fetch-failed", f"ADMIN-SERVICE range {start}-{end} of {self.url} failed: {last}",
                    level=3, outcome=1, reason=last.reason)
        raise last

    async def _get_once(self, start: int, end: int, max_bytes: int) -> RangeReply:
        url = self.url
        try:
            async with self._session.get(url, headers={"Range": f"bytes={start}-{end}"}) as response:
                if response.status == 404:
                    raise AdminServiceError("not-found", f"{url}: 404 not found")
                if response.status >= 500:
                    raise AdminServiceError("http-error", f"{url}: HTTP {response.status}")
                if response.status not in (200, 206, 416):
                    raise AdminServiceError("http-refused", f"{url}: HTTP {response.status}")
                if (response.content_length or 0) > max_bytes:
                    raise AdminServiceError("too-large", f"{url}: {response.content_length} bytes > {max_bytes}")
                body = bytearray()
                async for chunk in response.content.iter_chunked(65536):
                    body += chunk
                    if len(body) > max_bytes:
                        raise AdminServiceError("too-large", f"{url}: more than {max_bytes} bytes")
                return RangeReply(response.status, response.headers.get("Content-Range"), bytes(body))
        except PeerRejected as exc:
            raise AdminServiceError("peer-rejected", str(exc)) from None
        except (aiohttp.ClientError, asyncio.TimeoutError, ssl.SSLError, OSError) as exc:
            raise AdminServiceError("connect-failed", f"{url}: {exc or type(exc).__name__}") from None
