"""The reference EMT's data endpoint: where the gateway delivers meter data (figs. 49, 50, 57, 58).

An HTTPS server (TR-03116-3 WAN profile, the EMT's TLS certificate, the gateway's demanded). Each
POST carries a CMS container: the EMT decrypts it with its encryption key, verifies the gateway's
signature, parses the meter-data document and answers 200 (400 if anything fails). Transcript
channel "emt": ``emt-tls-connect``, the post step (named after the document's kind),
``emt-response-<status>``.

    async with ReferenceEmtData(pki) as emt:
        ...  # EMT profile: info_report_url = emt.url, tls_certificate emt-tls
        document = await emt.wait_document()
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from smgw_emu.core import cms, taf
from smgw_emu.net.tls import PROFILES, server_context
from smgw_emu.pki import PkiDir
from smgw_emu.reference.transcript import Transcript

EMT, SMGW = "EMT", "SMGW"

#: (kind, billing relevant) -> the catalogue's step id
STEPS = {
    ("billing-period", True): "post-billing-data", ("send-interval", False): "post-non-billing-data",
    ("billing-period", False): "post-non-billing-data", ("send-interval", True): "post-billing-data",
    ("final", True): "post-final-billing-data", ("final", False): "post-final-data",
    ("on-demand", True): "post-readout-values", ("on-demand", False): "post-readout-values",
    ("taf6-day", True): "post-taf6-values", ("taf6-day", False): "post-taf6-values",
}


class ReferenceEmtData:
    def __init__(self, pki: PkiDir, *, entity: str = "emt", host: str = "127.0.0.1") -> None:
        self.pki = pki
        self.entity = entity
        self.host = host
        self.tls_context = server_context(PROFILES["wan"], chain=pki.chain_path(f"{entity}-tls"),
                                          key=pki.key_path(f"{entity}-tls"), cafile=pki.root_ca)
        self.transcript = Transcript()
        self.documents: list[taf.ParsedData] = []
        self.refuse_with: int | None = None  # answer this status instead (a failing EMT)
        self._arrived: asyncio.Queue[taf.ParsedData] = asyncio.Queue()
        self._connections: list = []  # transports seen (kept, so an id is never reused)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    async def start(self) -> "ReferenceEmtData":
        app = web.Application()
        app.router.add_post("/meter-data", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.host, 0, ssl_context=self.tls_context)
        await self._site.start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> "ReferenceEmtData":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        assert self._site is not None
        return self._site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}/meter-data"

    async def _receive(self, request: web.Request) -> web.Response:
        transport = request.transport
        if transport is not None and not any(t is transport for t in self._connections):
            self._connections.append(transport)
            ssl_object = transport.get_extra_info("ssl_object")
            self.transcript.add("emt-tls-connect", SMGW, EMT, "emt", ssl_object.version() if ssl_object else "")
        body = await request.read()
        try:
            opened = cms.open_sealed(body, self.pki.cert(f"{self.entity}-enc"), self.pki.key(f"{self.entity}-enc"),
                                     [self.pki.cert("gateway-sig")])
            document = taf.from_xml(opened.content)
        except (cms.CmsError, taf.TafError) as exc:
            self.transcript.add("post-unreadable-data", SMGW, EMT, "emt", str(exc))
            self.transcript.add("emt-response-400", EMT, SMGW, "emt")
            return web.Response(status=400, text=str(exc))
        key = (document.attributes.get("kind", ""), document.attributes.get("billing-relevant") == "true")
        self.transcript.add(STEPS.get(key, "post-data"), SMGW, EMT, "emt", document.attributes.get("transfer-id", ""))
        status = self.refuse_with or 200
        self.transcript.add(f"emt-response-{status}", EMT, SMGW, "emt")
        if status == 200:
            self.documents.append(document)
            await self._arrived.put(document)
        return web.Response(status=status, text="accepted" if status == 200 else "refused")

    async def wait_document(self, timeout: float = 10.0) -> taf.ParsedData:
        return await asyncio.wait_for(self._arrived.get(), timeout)
