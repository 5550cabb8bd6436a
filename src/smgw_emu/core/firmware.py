"""Firmware update, sans-IO (Lastenheft 6.1: download fig. 17, pause fig. 18, activate fig. 19).

What lives here: the image format, its verification, and the state machine of the update job.
No sockets, no files, no clock reads: the adapter (`smgw_emu.app.firmware`) fetches ranges over
ADMIN-SERVICE, stores bytes and rows, and asks this module what each step means.

The image [ours] (the normative container is not public):

    CMS ContentInfo(SignedData)        core/cms.sign: ECDSA, signer certificate included; the
      eContent (id-data) =             signer must be a pinned firmware signer (the GWA's
        uint32 big-endian  n           signature certificate by default, or a manufacturer's)
        n bytes            manifest    UTF-8 JSON {"format", "version", "size", "sha256"}
        size bytes         image       the firmware itself; sha256 = SHA-256 of these bytes

The GWA announces the container's size and SHA-256 in the download call (over the
authenticated MANAGEMENT channel); the gateway checks, in this order: the announced size
(every range), the announced hash, the CMS signature and signer, the manifest, the image
against the manifest. Any failure discards the image and leaves the active firmware alone.

The update job moves through these states (`STATES`, enum values of the FirmwareUpdate object):

    idle --download--> downloading --complete+verified--> verified --activate--> activating --> active
                        |   ^   \\--bad image / 404 ---------> failed               \\-self test--> failed
                        |   |    \\--GWA unreachable ------> failed (resumable)
                      pause  download (same image: resume at the received offset)
                        v   |
                        paused

Every transition returns a `Transition`: the new job, its system-log entry and, when the GWA
must hear of it, the INFO-REPORT event of the same name.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cryptography import x509

from smgw_emu.core import cms
from smgw_emu.core.cosem.errors import CosemError

#: [ours] the manifest's format tag.
IMAGE_FORMAT = "smgw-emu-firmware-1"
#: [ours] longest manifest accepted (bytes).
MAX_MANIFEST_BYTES = 4096
#: [ours] firmware versions: 1..64 of A-Z a-z 0-9 . + _ - , starting with a letter or digit.
VERSION_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}")
#: [ours] image names on ADMIN-SERVICE: path segments of A-Z a-z 0-9 . _ -, no '..', at most 200.
NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*")
MAX_NAME = 200

#: The states of the update job, with their enum values on the wire (definitions.toml firmware_state).
STATES = {"idle": 0, "downloading": 1, "paused": 2, "verified": 3, "failed": 4, "activating": 5, "active": 6}

#: Failure reasons of a download. Those in RESUMABLE keep the received part: a new download call
#: for the same image continues at the received offset.
RESUMABLE = frozenset({"connect-failed", "http-error"})

#: Firmware slots in the state store's firmware table.
SLOT_UPDATE, SLOT_ACTIVE, SLOT_PREVIOUS = "update", "active", "previous"


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

class FirmwareRefused(CosemError):
    """A method call refused before anything changed (bad argument 422, wrong state 409)."""

    def __init__(self, code: str, status: int, message: str, *, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.code = code
        self.http_status = status


def _invalid(message: str, field: str) -> FirmwareRefused:
    return FirmwareRefused("invalid-value", 422, message, field=field)


def _conflict(message: str, field: str = "state") -> FirmwareRefused:
    return FirmwareRefused("state-conflict", 409, message, field=field)


class ImageRejected(Exception):
    """The downloaded image (or a range of it) is refused; `reason` is stable, the message is not."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# Policy: the [ours] numbers, filled from the configuration's [firmware] section
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FirmwarePolicy:
    chunk_bytes: int = 65536            # one HTTP Range request
    max_image_bytes: int = 16 * 1024 * 1024
    chunk_interval_s: float = 0.0       # pacing between ranges (WAN bandwidth), gateway clock
    fetch_attempts: int = 3             # per range, with the channel backoff between attempts


# ---------------------------------------------------------------------------------------------
# The image
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Manifest:
    version: str
    size: int
    sha256: str  # hex

    def to_json(self) -> bytes:
        return json.dumps({"format": IMAGE_FORMAT, "version": self.version, "size": self.size,
                           "sha256": self.sha256}, sort_keys=True).encode()


def image_content(version: str, image: bytes) -> bytes:
    """The signed content of an image container: length-prefixed manifest, then the image."""
    if not VERSION_RE.fullmatch(version):
        raise ValueError(f"firmware version {version!r} does not match {VERSION_RE.pattern}")
    manifest = Manifest(version, len(image), hashlib.sha256(image).hexdigest()).to_json()
    return struct.pack(">I", len(manifest)) + manifest + image


def build_image(version: str, image: bytes, signer_cert: x509.Certificate, signer_key, *,
                signing_time: _dt.datetime | None = None) -> bytes:
    """A complete signed firmware container (what the GWA serves on ADMIN-SERVICE)."""
    return cms.sign(image_content(version, image), signer_cert, signer_key, signing_time=signing_time,
                    max_size=len(image) + MAX_MANIFEST_BYTES + 4)


def parse_content(content: bytes) -> tuple[Manifest, bytes]:
    """Manifest and image of a verified container's content (ImageRejected 'manifest-invalid' /
    'manifest-mismatch')."""
    if len(content) < 4:
        raise ImageRejected("manifest-invalid", "content shorter than its manifest length")
    (length,) = struct.unpack(">I", content[:4])
    if not 2 <= length <= MAX_MANIFEST_BYTES or length > len(content) - 4:
        raise ImageRejected("manifest-invalid", f"manifest length {length} out of range")
    try:
        data = json.loads(content[4:4 + length].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ImageRejected("manifest-invalid", f"manifest is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != IMAGE_FORMAT:
        raise ImageRejected("manifest-invalid", f"manifest format is not {IMAGE_FORMAT}")
    version, size, digest = data.get("version"), data.get("size"), data.get("sha256")
    if not isinstance(version, str) or not VERSION_RE.fullmatch(version):
        raise ImageRejected("manifest-invalid", f"manifest version {version!r} is not a firmware version")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ImageRejected("manifest-invalid", f"manifest size {size!r} is not a byte count")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ImageRejected("manifest-invalid", "manifest sha256 is not 64 lower-case hex digits")
    image = content[4 + length:]
    if len(image) != size:
        raise ImageRejected("manifest-mismatch", f"image has {len(image)} bytes, the manifest says {size}")
    if hashlib.sha256(image).hexdigest() != digest:
        raise ImageRejected("manifest-mismatch", "image SHA-256 differs from the manifest")
    return Manifest(version, size, digest), image


@dataclass(frozen=True)
class VerifiedImage:
    manifest: Manifest
    signer: str  # the signer certificate's subject


#: CMS error code -> download failure reason.
_CMS_REASONS = {"signature-invalid": "signature-invalid", "unknown-signer": "unknown-signer",
                "too-large": "size-mismatch"}


def verify_image(container: bytes, *, size: int, sha256: bytes, trusted: Sequence[x509.Certificate] | Callable,
                 max_size: int) -> VerifiedImage:
    """Every check of a complete download, in order (ImageRejected with the first failing reason)."""
    if len(container) != size:
        raise ImageRejected("size-mismatch", f"received {len(container)} bytes, {size} announced")
    if hashlib.sha256(container).digest() != sha256:
        raise ImageRejected("hash-mismatch", "SHA-256 of the image differs from the announced one")
    try:
        verified = cms.verify_signed(container, trusted, max_size=max_size + MAX_MANIFEST_BYTES + 4096)
    except cms.CmsError as exc:
        reason = _CMS_REASONS.get(exc.code, "container-invalid")
        raise ImageRejected(reason, f"signed container refused ({exc.code}): {exc.detail}") from None
    manifest, _ = parse_content(verified.content)
    return VerifiedImage(manifest, verified.signer_cert.subject.rfc4514_string())


# ---------------------------------------------------------------------------------------------
# Ranges
# ---------------------------------------------------------------------------------------------

_CONTENT_RANGE = re.compile(r"bytes (\d{1,15})-(\d{1,15})/(\d{1,15}|\*)")


def parse_content_range(header: str) -> tuple[int, int, int | None]:
    """'bytes 0-99/1000' -> (0, 99, 1000); ValueError if malformed."""
    match = _CONTENT_RANGE.fullmatch(header.strip())
    if not match:
        raise ValueError(f"malformed Content-Range {header[:60]!r}")
    start, end = int(match[1]), int(match[2])
    total = None if match[3] == "*" else int(match[3])
    if end < start or (total is not None and end >= total):
        raise ValueError(f"inconsistent Content-Range {header[:60]!r}")
    return start, end, total


def next_range(offset: int, size: int, chunk: int) -> tuple[int, int]:
    """The next inclusive byte range to request."""
    return offset, min(size, offset + chunk) - 1


def accept_range(*, offset: int, size: int, requested_end: int, status: int, content_range: str | None,
                 length: int) -> None:
    """Check one answer to a Range request (ImageRejected if the server's image is not the one
    announced). 206 must carry the requested start and the announced total; a 200 is taken only
    at offset 0 when it is the whole, announced image."""
    if status == 200:
        if offset != 0 or length != size:
            raise ImageRejected("size-mismatch" if offset == 0 else "range-unsupported",
                                f"the server answered 200 with {length} bytes at offset {offset} (size {size})")
        return
    if status == 416:
        raise ImageRejected("size-mismatch", f"the server has no bytes at offset {offset}: the image is shorter "
                                             f"than the {size} bytes announced")
    try:
        start, end, total = parse_content_range(content_range or "")
    except ValueError as exc:
        raise ImageRejected("range-invalid", str(exc)) from None
    if total is not None and total != size:
        raise ImageRejected("size-mismatch", f"the server's image has {total} bytes, {size} announced")
    if start != offset or end > requested_end or length != end - start + 1 or length == 0:
        raise ImageRejected("range-invalid", f"asked bytes {offset}-{requested_end}, got {content_range!r} "
                                             f"with {length} bytes")


# ---------------------------------------------------------------------------------------------
# The update job and its transitions
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DownloadRequest:
    name: str
    size: int
    sha256: bytes

    def same_image(self, job: "FirmwareJob") -> bool:
        return (self.name, self.size, self.sha256.hex()) == (job.name, job.size, job.sha256)


@dataclass(frozen=True)
class FirmwareJob:
    """The update slot: what is being downloaded, how far, and where it stands."""

    state: str = "idle"
    name: str = ""
    size: int = 0
    sha256: str = ""          # hex of the announced container hash
    offset: int = 0           # bytes received and stored
    version: str = ""         # from the manifest, once verified
    reason: str = ""          # last failure reason
    resumable: bool = False   # failed, but the received part is kept
    activate_at: str = ""     # ISO 8601 UTC: a scheduled activation
    signer: str = ""

    def to_detail(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "sha256": self.sha256, "offset": self.offset,
                "reason": self.reason, "resumable": self.resumable, "activate_at": self.activate_at,
                "signer": self.signer}

    @classmethod
    def from_row(cls, version: str, state: str, detail: dict) -> "FirmwareJob":
        if state not in STATES:
            raise ValueError(f"stored firmware state {state!r} is unknown")
        return cls(state=state, version=version, name=str(detail.get("name", "")), size=int(detail.get("size", 0)),
                   sha256=str(detail.get("sha256", "")), offset=int(detail.get("offset", 0)),
                   reason=str(detail.get("reason", "")), resumable=bool(detail.get("resumable", False)),
                   activate_at=str(detail.get("activate_at", "")), signer=str(detail.get("signer", "")))

    @property
    def has_partial(self) -> bool:
        return self.state == "paused" or (self.state == "failed" and self.resumable)


@dataclass(frozen=True)
class Transition:
    job: FirmwareJob
    log_event: str
    message: str
    details: dict[str, str]
    event: bool = False            # also an INFO-REPORT event of the same name
    level: int = 1
    outcome: int = 0
    discard_partial: bool = False  # the received bytes are no longer needed


def _details(job: FirmwareJob, **extra: object) -> dict[str, str]:
    base = {"image": job.name, "size": job.size, "sha256": job.sha256, "offset": job.offset}
    if job.version:
        base["version"] = job.version
    base.update(extra)
    return {k: str(v) for k, v in base.items()}


def check_request(name: str, size: int, sha256: bytes, policy: FirmwarePolicy) -> DownloadRequest:
    """The arguments of a download call (FirmwareRefused 422 naming the field)."""
    if not name or len(name) > MAX_NAME or not NAME_RE.fullmatch(name) or ".." in name.split("/"):
        raise _invalid(f"image_name {name[:60]!r} is not a relative ADMIN-SERVICE name "
                       f"(segments of A-Z a-z 0-9 . _ -, at most {MAX_NAME} characters)", "image_name")
    if not 1 <= size <= policy.max_image_bytes:
        raise _invalid(f"image_size {size} must lie in 1..{policy.max_image_bytes} (firmware.max_image_bytes)",
                       "image_size")
    if len(sha256) != 32:
        raise _invalid(f"image_sha256 has {len(sha256)} bytes, a SHA-256 has 32", "image_sha256")
    return DownloadRequest(name, size, sha256)


def start_download(job: FirmwareJob, request: DownloadRequest) -> Transition:
    """A download call: a new download, or the resumption of the same image's partial download."""
    if job.state in ("downloading", "activating"):
        raise _conflict(f"a firmware {'download' if job.state == 'downloading' else 'activation'} is running "
                        f"({job.name}); pause it or wait for it")
    if job.has_partial and request.same_image(job):
        new = replace(job, state="downloading", reason="", resumable=False)
        return Transition(new, "firmware-download-resumed",
                          f"firmware download of {job.name} resumed at byte {job.offset} of {job.size}",
                          _details(new, trigger="gwa"))
    new = FirmwareJob(state="downloading", name=request.name, size=request.size, sha256=request.sha256.hex())
    replaced = f"; the partial download of {job.name} is discarded" if job.has_partial else ""
    replaced += f"; the verified image {job.version} is discarded" if job.state == "verified" else ""
    return Transition(new, "firmware-download-started",
                      f"firmware download of {request.name} ({request.size} bytes) started{replaced}",
                      _details(new), discard_partial=True)


def resume_after_restart(job: FirmwareJob, offset: int) -> Transition:
    """At start: a download that ran when the gateway stopped continues where its bytes end."""
    new = replace(job, offset=offset)
    return Transition(new, "firmware-download-resumed",
                      f"firmware download of {job.name} resumed after a restart at byte {offset} of {job.size}",
                      _details(new, trigger="restart"))


def progress(job: FirmwareJob, received: int) -> FirmwareJob:
    """`received` more bytes are stored (bookkeeping, no log entry)."""
    if job.state != "downloading" or received <= 0 or job.offset + received > job.size:
        raise ValueError(f"progress of {received} bytes at {job.offset}/{job.size} in state {job.state}")
    return replace(job, offset=job.offset + received)


def pause(job: FirmwareJob) -> Transition:
    if job.state != "downloading":
        raise _conflict(f"no firmware download is running (state {job.state})")
    new = replace(job, state="paused")
    return Transition(new, "firmware-download-paused",
                      f"firmware download of {job.name} paused at byte {job.offset} of {job.size}; received part kept",
                      _details(new), event=True)


def download_failed(job: FirmwareJob, reason: str, message: str) -> Transition:
    resumable = reason in RESUMABLE
    new = replace(job, state="failed", reason=reason, resumable=resumable, offset=job.offset if resumable else 0)
    kept = f"; {job.offset} bytes kept, a new download call resumes" if resumable else "; image discarded"
    return Transition(new, "firmware-download-failed",
                      f"firmware download of {job.name} failed: {reason}: {message}{kept}",
                      _details(new, reason=reason, resumable=str(resumable).lower()), event=True,
                      level=3, outcome=1, discard_partial=not resumable)


def downloaded(job: FirmwareJob, verified: VerifiedImage) -> Transition:
    new = replace(job, state="verified", version=verified.manifest.version, signer=verified.signer)
    return Transition(new, "firmware-downloaded",
                      f"firmware {new.version} downloaded ({job.size} bytes) and verified: size, SHA-256, "
                      f"signature of {verified.signer}, manifest",
                      _details(new, signer=verified.signer), event=True)


def request_activation(job: FirmwareJob, at: _dt.datetime | None, now: _dt.datetime) -> Transition:
    """An activate call: now (`at` None or not in the future) or scheduled for `at`."""
    if job.state != "verified":
        raise _conflict(f"no complete, verified firmware image to activate (state {job.state})")
    if at is not None and at > now:
        new = replace(job, activate_at=at.astimezone(_dt.timezone.utc).isoformat())
        return Transition(new, "firmware-activation-scheduled",
                          f"activation of firmware {job.version} scheduled for {new.activate_at}",
                          _details(new, at=new.activate_at))
    new = replace(job, state="activating", activate_at="")
    return Transition(new, "firmware-activation-started", f"activation of firmware {job.version} started",
                      _details(new))


def activation_due(job: FirmwareJob) -> Transition:
    new = replace(job, state="activating", activate_at="")
    return Transition(new, "firmware-activation-started",
                      f"scheduled activation of firmware {job.version} started", _details(new, trigger="schedule"))


def activated(job: FirmwareJob, previous_version: str) -> Transition:
    new = replace(job, state="active")
    return Transition(new, "firmware-activated",
                      f"firmware {job.version} active (previous {previous_version} kept for rollback)",
                      _details(new, **{"previous-version": previous_version}), event=True)


def activation_failed(job: FirmwareJob, reason: str, message: str, active_version: str) -> Transition:
    new = replace(job, state="failed", reason=reason, resumable=False, offset=0)
    return Transition(new, "firmware-activation-failed",
                      f"activation of firmware {job.version} failed: {reason}: {message}; firmware "
                      f"{active_version} stays active", _details(new, reason=reason, active=active_version),
                      event=True, level=3, outcome=1, discard_partial=True)


def check_rollback(job: FirmwareJob, previous_version: str | None) -> None:
    if job.state == "activating":
        raise _conflict("an activation is running")
    if not previous_version:
        raise _conflict("no previous firmware to roll back to", field="previous_version")


@dataclass(frozen=True)
class Slot:
    """An installed firmware: the active one or the previous one (kept for rollback)."""

    version: str
    sha256: str = ""          # of the container; "" for the factory firmware (no image)
    signer: str = ""
    since: str = ""

    def to_detail(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "signer": self.signer, "since": self.since}

    @classmethod
    def from_row(cls, version: str, detail: dict) -> "Slot":
        return cls(version, str(detail.get("sha256", "")), str(detail.get("signer", "")), str(detail.get("since", "")))


__all__ = [
    "IMAGE_FORMAT", "STATES", "RESUMABLE", "FirmwarePolicy", "FirmwareRefused", "ImageRejected", "Manifest",
    "VerifiedImage", "DownloadRequest", "FirmwareJob", "Transition", "Slot", "image_content", "build_image",
    "parse_content", "verify_image", "parse_content_range", "next_range", "accept_range", "check_request",
    "start_download", "resume_after_restart", "progress", "pause", "download_failed", "downloaded",
    "request_activation", "activation_due", "activated", "activation_failed", "check_rollback",
    "SLOT_UPDATE", "SLOT_ACTIVE", "SLOT_PREVIOUS",
]
