"""The gateway's operating state and its transfer into normal operation (Lastenheft 6.2, fig. 20).

The adapter around `smgw_emu.core.operating`: the OperatingState object (class 28710 at
0-0:96.5.0 in the gateway's LDEV), its method `enter_normal_operation` on the MANAGEMENT
channel, and the state in the store (`kv` key `operating-state`), written in one transaction with
its log entry and event.
"""

from __future__ import annotations

import datetime as _dt
from typing import TYPE_CHECKING

from cryptography import x509

from smgw_emu.app.api import ApiRequest
from smgw_emu.core import operating
from smgw_emu.core.cosem import DlmsValue, ObisCode
from smgw_emu.core.profiles import GATEWAY_KIND

if TYPE_CHECKING:
    from smgw_emu.app.gateway import Gateway

#: [ours] The OperatingState object (definitions.toml) in the gateway's own LDEV.
OPERATING_STATE_CLASS = 28710
OPERATING_STATE_OBIS = ObisCode(0, 0, 96, 5, 0)
STORE_KEY = "operating-state"
GATEWAY_CERTIFICATES = ("gateway-tls", "gateway-sig", "gateway-enc")


class OperatingStateService:
    def __init__(self, gateway: "Gateway") -> None:
        self.gw = gateway
        self.state = "delivery"
        self.since: _dt.datetime | None = None

    def start(self) -> None:
        gw = self.gw
        stored = gw.store.get(STORE_KEY) or {}
        self.state = stored.get("state", "delivery") if stored.get("state") in operating.STATES else "delivery"
        self.since = _dt.datetime.fromisoformat(stored["since"]) if stored.get("since") else None
        model = gw.cosem.model
        ldev = model.ldev(GATEWAY_KIND, gw.id)
        self._object = model.add_object(ldev, model.build_object(OPERATING_STATE_CLASS, OPERATING_STATE_OBIS))
        gw.cosem.method_hooks[(GATEWAY_KIND, OPERATING_STATE_OBIS.hex)] = self._invoke
        self._sync_model()

    def _sync_model(self) -> None:
        self._object.store(2, DlmsValue("enum", operating.STATES[self.state]))
        self._object.store(3, DlmsValue("date-time", self.since) if self.since else DlmsValue.null())

    def material(self) -> list[operating.Material]:
        """The certificates the personalisation put in place, as the gateway holds them now."""
        gw = self.gw
        items = []
        for name in GATEWAY_CERTIFICATES:
            try:
                cert, key = gw.pki.cert(name), gw.pki.key(name)
            except (OSError, ValueError, TypeError) as exc:
                items.append(operating.Material(name, None, problem=str(exc)[:120]))
                continue
            items.append(operating.Material(name, cert, key.public_key().public_numbers() == cert.public_key().public_numbers()))
        for usage, der in (("tls", gw.gwa.tls_certificate_der), ("sig", gw.gwa.signature_certificate_der),
                           ("enc", gw.gwa.encryption_certificate_der)):
            try:
                items.append(operating.Material(f"gwa-{usage}", x509.load_der_x509_certificate(der)))
            except ValueError as exc:
                items.append(operating.Material(f"gwa-{usage}", None, problem=str(exc)[:120]))
        return items

    def last_self_test(self) -> str | None:
        report = getattr(getattr(self.gw, "operations", None), "self_test", None)
        return getattr(report, "result", None)

    async def _invoke(self, request: ApiRequest, resolved, argument: DlmsValue | None) -> DlmsValue:
        gw = self.gw
        transfer = operating.enter_normal_operation(self.state, self.material(), self.last_self_test(), gw.clock.now())
        with gw.store.transaction() as tx:
            tx.set(STORE_KEY, {"state": transfer.state, "since": transfer.since.isoformat()})
            gw.journal(transfer.event, transfer.message, tx=tx, **transfer.details)
            gw.journal.emit(tx, transfer.event, **transfer.details)
        self.state, self.since = transfer.state, transfer.since
        self._sync_model()
        return DlmsValue("enum", operating.STATES[self.state])
