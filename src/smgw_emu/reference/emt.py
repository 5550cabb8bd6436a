"""The reference active EMT (aEMT): the WAN end of a CLS connection (Lastenheft 6.8).

Every WAN connection is opened by the gateway (docs/domain.md §1), so the EMT is a TLS server: it
presents its TLS certificate (``emt-tls`` of the test SM-PKI, or another entity's to play a wrong
EMT), demands the gateway's, and hands each accepted connection to the test as a
`StreamSession`. Its transcript (channel "emt") holds the connection set-up, every message it
sends or receives and the gateway's close; each session records how the gateway ended it
(`StreamSession.ending`: TLS close_notify or an abort).

    async with ReferenceEmt(pki) as emt:
        ...  # profile: host 127.0.0.1, port emt.port, tls_certificate emt-tls
        session = await emt.wait_session()
        await session.send(b"SET max_power=4200\\n", step="emt-data")
        answer = await session.receive_line(step="cls-data-forwarded")
"""

from __future__ import annotations


from smgw_emu.net.tls import PROFILES, TlsProfile, server_context
from smgw_emu.pki import PkiDir
from smgw_emu.reference.stream_session import StreamServer
from smgw_emu.reference.transcript import Transcript

EMT, SMGW = "EMT", "SMGW"


class ReferenceEmt(StreamServer):
    me, channel, connect_step = EMT, "emt", "emt-tls-connect"

    def __init__(self, pki: PkiDir, *, entity: str = "emt", host: str = "127.0.0.1", port: int = 0,
                 tls_profile: TlsProfile | None = None) -> None:
        self.pki = pki
        self.entity = entity
        self.host = host
        self._port = port
        self.tls_context = self.server_context = server_context(
            tls_profile or PROFILES["wan"], chain=pki.chain_path(f"{entity}-tls"), key=pki.key_path(f"{entity}-tls"),
            cafile=pki.root_ca)
        self.transcript = Transcript()
        self._init_server()
