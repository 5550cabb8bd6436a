"""Firmware update of one gateway (Lastenheft 6.1): download (fig. 17), pause (18), activate (19).

The adapter around the sans-IO `smgw_emu.core.firmware`: it owns the FirmwareUpdate object
(class 28700 at 0-0:44.0.0 in the gateway's LDEV) and its four methods on the MANAGEMENT
channel, fetches the image range by range over ADMIN-SERVICE, keeps the bytes in files of the
state directory and the job and slots in the state store's firmware table.

Files, `<state_dir>/firmware/`:
    update.part        the download in progress; its valid length is the stored offset
    <sha256>.img       a complete, verified image (the update, the active or the previous slot)

Crash rules: a range is written to update.part first and its offset committed after, so a
SIGKILL loses at most the range in flight (at start the file is cut back to the stored offset
and the download continues by itself). A verified image is renamed to <sha256>.img before its
state is committed; a crash in between is repaired at start. Activation commits the slot switch,
its log entry and its event in one transaction.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import hashlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from cryptography import x509

from smgw_emu import __version__
from smgw_emu.app.api import ApiRequest
from smgw_emu.core import firmware as fw
from smgw_emu.core.cosem import DlmsValue, LogicalDevice, ObisCode
from smgw_emu.core.profiles import GATEWAY_KIND
from smgw_emu.net.admin_service import AdminServiceError

if TYPE_CHECKING:
    from smgw_emu.app.gateway import Gateway

log = logging.getLogger("smgw_emu.firmware")

#: [ours] The FirmwareUpdate object (definitions.toml) in the gateway's own LDEV.
FIRMWARE_UPDATE_CLASS = 28700
FIRMWARE_UPDATE_OBIS = ObisCode(0, 0, 44, 0, 0)  # IC 18 image transfer's OBIS code
PART_FILE = "update.part"


class FirmwareService:
    def __init__(self, gateway: "Gateway") -> None:
        self.gw = gateway
        cfg = gateway.config.firmware
        self.policy = fw.FirmwarePolicy(cfg.chunk_bytes, cfg.max_image_bytes, cfg.chunk_interval_s, cfg.fetch_attempts)
        self.dir = Path(gateway.config.gateway.state_dir) / "firmware"
        self.job = fw.FirmwareJob()
        self.active = fw.Slot(__version__)
        self.previous: fw.Slot | None = None
        self._task: asyncio.Task | None = None
        self._timer = None
        self._pinned: list[x509.Certificate] = []
        self._with_gwa = False
        self._ldev: LogicalDevice | None = None

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Load the slots, add the object, install the methods, and continue what a stop or crash
        interrupted (a running download, an activation, a scheduled activation)."""
        from smgw_emu.app.gateway import GatewayStartError

        gw = self.gw
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GatewayStartError(f"cannot create firmware directory {self.dir}: {exc.strerror or exc}") from None
        self._load_signers()
        rows = gw.store.firmware()
        try:
            if fw.SLOT_UPDATE in rows:
                self.job = fw.FirmwareJob.from_row(*rows[fw.SLOT_UPDATE])
            if fw.SLOT_ACTIVE in rows:
                self.active = fw.Slot.from_row(rows[fw.SLOT_ACTIVE][0], rows[fw.SLOT_ACTIVE][2])
            if fw.SLOT_PREVIOUS in rows:
                self.previous = fw.Slot.from_row(rows[fw.SLOT_PREVIOUS][0], rows[fw.SLOT_PREVIOUS][2])
        except (ValueError, TypeError) as exc:
            raise GatewayStartError(f"stored firmware state is unreadable: {exc}") from None
        model = gw.cosem.model
        self._ldev = model.ldev(GATEWAY_KIND, gw.id)
        model.add_object(self._ldev, model.build_object(FIRMWARE_UPDATE_CLASS, FIRMWARE_UPDATE_OBIS))
        gw.cosem.method_hooks[(GATEWAY_KIND, FIRMWARE_UPDATE_OBIS.hex)] = self._invoke
        self._sync_model()
        self._recover()

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self._stop_download()

    @property
    def active_version(self) -> str:
        return self.active.version

    def _load_signers(self) -> None:
        from smgw_emu.app.gateway import GatewayStartError

        pki_root = Path(self.gw.config.gateway.pki_dir)
        for name in (n.strip() for n in self.gw.config.firmware.signer_certificates.split(",")):
            if not name:
                continue
            if name == "gwa":
                self._with_gwa = True
                continue
            path = pki_root / name
            try:
                self._pinned.append(x509.load_pem_x509_certificate(path.read_bytes()))
            except (OSError, ValueError) as exc:
                raise GatewayStartError(f"firmware.signer_certificates: {path} unreadable: {exc}") from None

    def trusted_signers(self) -> list[x509.Certificate]:
        """[ours] The pinned image signers: the GWA's current signature certificate (so it follows a
        GWA change) and the configured certificates."""
        gwa = [x509.load_der_x509_certificate(self.gw.gwa.signature_certificate_der)] if self._with_gwa else []
        return gwa + self._pinned

    # -- files -------------------------------------------------------------------------------
    @property
    def part_path(self) -> Path:
        return self.dir / PART_FILE

    def image_path(self, sha256_hex: str) -> Path:
        return self.dir / f"{sha256_hex}.img"

    def _truncate_part(self, length: int) -> int:
        """Cut update.part back to `length` (or to what it holds); return the valid length."""
        path = self.part_path
        with open(path, "ab"):
            pass
        size = path.stat().st_size
        valid = min(size, length)
        if size != valid:
            os.truncate(path, valid)
        return valid

    def _collect_garbage(self) -> None:
        """Remove image files no slot refers to (and update.part when nothing is partial)."""
        keep = {self.active.sha256, self.previous.sha256 if self.previous else ""}
        if self.job.state in ("verified", "activating", "active"):
            keep.add(self.job.sha256)
        for path in self.dir.glob("*.img"):
            if path.stem not in keep:
                path.unlink(missing_ok=True)
        if self.job.state not in ("downloading", "paused") and not (self.job.state == "failed" and self.job.resumable):
            self.part_path.unlink(missing_ok=True)

    # -- the store and the model -------------------------------------------------------------
    def _commit(self, transition: fw.Transition | None = None, *, job: fw.FirmwareJob | None = None,
                slots: dict[str, fw.Slot | None] | None = None) -> None:
        """One transaction: the update slot, changed firmware slots, the log entry and the event."""
        gw = self.gw
        job = transition.job if transition else job
        assert job is not None
        now = gw.clock.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with gw.store.transaction() as tx:
            tx.put_firmware(fw.SLOT_UPDATE, job.version, job.state, job.to_detail(), now)
            for name, slot in (slots or {}).items():
                if slot is None:
                    tx.execute("DELETE FROM firmware WHERE slot=?", (name,))
                else:
                    tx.put_firmware(name, slot.version, "active" if name == fw.SLOT_ACTIVE else "standby",
                                    slot.to_detail(), now)
            if transition is not None:
                gw.journal(transition.log_event, transition.message, tx=tx, level=transition.level,
                           outcome=transition.outcome, **transition.details)
                if transition.event:
                    gw.journal.emit(tx, transition.log_event, **transition.details)
        self.job = job
        for name, slot in (slots or {}).items():
            if name == fw.SLOT_ACTIVE and slot is not None:
                self.active = slot
            elif name == fw.SLOT_PREVIOUS:
                self.previous = slot
        self._sync_model()

    def _sync_model(self) -> None:
        from smgw_emu.app.cosem_api import FIRMWARE_OBIS

        model, job = self.gw.cosem.model, self.job
        assert self._ldev is not None
        obj = model.object(self._ldev, FIRMWARE_UPDATE_CLASS, FIRMWARE_UPDATE_OBIS)
        at = _dt.datetime.fromisoformat(job.activate_at) if job.activate_at else None
        values = {
            2: DlmsValue("enum", fw.STATES[job.state]), 3: DlmsValue("visible-string", job.name),
            4: DlmsValue("double-long-unsigned", job.size), 5: DlmsValue("octet-string", bytes.fromhex(job.sha256)),
            6: DlmsValue("double-long-unsigned", job.offset), 7: DlmsValue("visible-string", job.version),
            8: DlmsValue("visible-string", self.active.version),
            9: DlmsValue("visible-string", self.previous.version if self.previous else ""),
            10: DlmsValue("visible-string", job.reason),
            11: DlmsValue("date-time", at) if at else DlmsValue.null(),
        }
        for index, value in values.items():
            obj.store(index, value)
        model.object(self._ldev, 1, FIRMWARE_OBIS).store(2, DlmsValue("visible-string", self.active.version))

    # -- the methods (MANAGEMENT channel) ----------------------------------------------------
    async def _invoke(self, request: ApiRequest, resolved, argument: DlmsValue | None) -> DlmsValue:
        handlers: dict[str, Callable] = {"download": self._download, "pause": self._pause,
                                         "activate": self._activate, "rollback": self._rollback}
        await handlers[resolved.method.name](argument if argument is not None else DlmsValue.null())
        return DlmsValue("enum", fw.STATES[self.job.state])

    async def _download(self, argument: DlmsValue) -> None:
        name, size, digest = (item.value for item in argument.value)
        request = fw.check_request(name, size, digest, self.policy)
        transition = fw.start_download(self.job, request)
        if transition.discard_partial:
            self._commit(transition)
            self._collect_garbage()
            self._truncate_part(0)
        else:
            self._commit(transition)
        self._start_download_task()

    async def _pause(self, argument: DlmsValue) -> None:
        fw.pause(self.job)  # 409 unless a download runs
        await self._stop_download()
        self._commit(fw.pause(self.job))

    async def _activate(self, argument: DlmsValue) -> None:
        at = None if argument.is_null else argument.value
        transition = fw.request_activation(self.job, at, self.gw.clock.now())
        self._commit(transition)
        if self.job.state == "activating":
            self._activate_now()
        else:
            self._schedule_activation()

    async def _rollback(self, argument: DlmsValue) -> None:
        fw.check_rollback(self.job, self.previous.version if self.previous else None)
        assert self.previous is not None
        old, new = self.active, self.previous
        job = fw.FirmwareJob() if self.job.state == "active" else self.job
        transition = fw.Transition(job, "firmware-rolled-back", f"firmware rolled back from {old.version} to {new.version}",
                                   {"version": new.version, "previous-version": old.version}, event=True)
        self._commit(transition, slots={fw.SLOT_ACTIVE: new, fw.SLOT_PREVIOUS: old})
        self._collect_garbage()

    # -- the download ------------------------------------------------------------------------
    def _start_download_task(self) -> None:
        self._task = asyncio.create_task(self._run_download(), name=f"{self.gw.id}-firmware-download")

    async def _stop_download(self) -> None:
        task, self._task = self._task, None
        if task is None or task.done():
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    async def _run_download(self) -> None:
        job = self.job
        policy = self.policy
        try:
            offset = self._truncate_part(job.offset)
            first = True
            async with self.gw.admin_service.download(job.name) as channel:
                while self.job.offset < job.size:
                    if policy.chunk_interval_s and not first:
                        await self.gw.timers.sleep(policy.chunk_interval_s)
                    first = False
                    offset = self.job.offset
                    start, end = fw.next_range(offset, job.size, policy.chunk_bytes)
                    reply = await channel.get_range(start, end, max_bytes=job.size, attempts=policy.fetch_attempts)
                    fw.accept_range(offset=offset, size=job.size, requested_end=end, status=reply.status,
                                    content_range=reply.content_range, length=len(reply.body))
                    self._write(offset, reply.body)
                    self._commit(job=fw.progress(self.job, len(reply.body)))
        except AdminServiceError as exc:
            self._fail(exc.reason, str(exc))
            return
        except fw.ImageRejected as exc:
            self._fail(exc.reason, str(exc))
            return
        except OSError as exc:
            self._fail("storage-error", f"{self.part_path}: {exc.strerror or exc}")
            return
        except Exception as exc:  # a bug must not leave the job 'downloading' forever
            log.exception("firmware download failed")
            self._fail("internal-error", f"{type(exc).__name__}: {exc}")
            return
        self._verify()

    def _write(self, offset: int, data: bytes) -> None:
        fd = os.open(self.part_path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, data, offset)
            if self.gw.config.store.durability == "power-loss":
                os.fsync(fd)
        finally:
            os.close(fd)

    def _fail(self, reason: str, message: str) -> None:
        transition = fw.download_failed(self.job, reason, message)
        self._commit(transition)
        if transition.discard_partial:
            self._collect_garbage()

    def _verify(self) -> None:
        job = self.job
        try:
            container = self.part_path.read_bytes()
            verified = fw.verify_image(container, size=job.size, sha256=bytes.fromhex(job.sha256),
                                       trusted=self.trusted_signers(), max_size=self.policy.max_image_bytes)
            os.replace(self.part_path, self.image_path(job.sha256))
        except fw.ImageRejected as exc:
            self._fail(exc.reason, str(exc))
            return
        except OSError as exc:
            self._fail("storage-error", f"{self.part_path}: {exc.strerror or exc}")
            return
        self._commit(fw.downloaded(job, verified))

    # -- activation --------------------------------------------------------------------------
    def _schedule_activation(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        at = _dt.datetime.fromisoformat(self.job.activate_at)
        delay = (at - self.gw.clock.now()).total_seconds()
        if delay <= 0:  # due while the gateway was down
            self._activation_due()
        else:
            self._timer = self.gw.timers.call_later(delay, self._activation_due)

    def _activation_due(self) -> None:
        self._timer = None
        if self.gw.store is None or self.job.state != "verified" or not self.job.activate_at:
            return
        self._commit(fw.activation_due(self.job))
        self._activate_now()

    def _self_test(self) -> None:
        """[ours] What the gateway checks before it runs a new image: the stored image is the one
        verified (SHA-256) and its signature and manifest still verify."""
        job = self.job
        try:
            container = self.image_path(job.sha256).read_bytes()
        except OSError as exc:
            raise fw.ImageRejected("self-test-failed", f"image unreadable: {exc.strerror or exc}") from None
        if hashlib.sha256(container).hexdigest() != job.sha256:
            raise fw.ImageRejected("self-test-failed", "the stored image changed since it was verified")
        try:
            fw.verify_image(container, size=job.size, sha256=bytes.fromhex(job.sha256),
                            trusted=self.trusted_signers(), max_size=self.policy.max_image_bytes)
        except fw.ImageRejected as exc:
            raise fw.ImageRejected("self-test-failed", str(exc)) from None

    def _activate_now(self) -> None:
        job = self.job
        try:
            self._self_test()
        except fw.ImageRejected as exc:
            self._commit(fw.activation_failed(job, exc.reason, str(exc), self.active.version))
            self._collect_garbage()
            return
        new = fw.Slot(job.version, job.sha256, job.signer, self.gw.clock.now().isoformat())
        old = self.active
        self._commit(fw.activated(job, old.version), slots={fw.SLOT_ACTIVE: new, fw.SLOT_PREVIOUS: old})
        self._collect_garbage()

    # -- after a stop or crash ---------------------------------------------------------------
    def _recover(self) -> None:
        job = self.job
        if job.state == "downloading":
            image = self.image_path(job.sha256)
            if job.offset == job.size and not self.part_path.exists() and image.exists():
                os.replace(image, self.part_path)  # crashed between the rename and the commit
            offset = self._truncate_part(job.offset)
            self._commit(fw.resume_after_restart(job, offset))
            self._start_download_task()
        elif job.state == "activating":
            self._activate_now()
        elif job.state == "verified" and job.activate_at:
            self._schedule_activation()
        self._collect_garbage()
