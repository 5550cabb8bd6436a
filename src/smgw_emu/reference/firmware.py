"""The GWA's side of a firmware update (Lastenheft 6.1): build a signed image, publish it on
ADMIN-SERVICE, and the COSEM method calls on the gateway's FirmwareUpdate object.

    container = build_firmware_image(pki, "2.0.0", b"...")
    gwa.downloads["fw/2.0.0.bin"] = container
    await channel.request("POST", firmware_method_path(gateway_id, "download"),
                          download_argument("fw/2.0.0.bin", container))
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import struct
from typing import Any

from smgw_emu.core import cms
from smgw_emu.core.cosem import DlmsValue, default_definitions
from smgw_emu.core.cosem.xmlcodec import value_to_xml
from smgw_emu.core.firmware import image_content
from smgw_emu.pki import PkiDir

#: Where the gateway keeps its FirmwareUpdate object (definitions.toml class 28700, OBIS 0-0:44.0.0).
FIRMWARE_CLASS = 28700
FIRMWARE_OBIS_HEX = "00002c0000ff"
METHODS = {"download": 1, "pause": 2, "activate": 3, "rollback": 4}


def build_firmware_image(pki: PkiDir, version: str, image: bytes, *, signer: str = "gwa-sig",
                         content: bytes | None = None, signing_time: _dt.datetime | None = None) -> bytes:
    """A signed firmware container. `signer` names a certificate/key pair of the PKI; `content`
    replaces the signed content (to build broken images on purpose)."""
    data = content if content is not None else image_content(version, image)
    return cms.sign(data, pki.cert(signer), pki.key(signer), signing_time=signing_time, max_size=len(data) + 1)


def content_with_manifest(manifest: bytes, image: bytes) -> bytes:
    """Signed content with a manifest of the caller's making (for manifest tests)."""
    return struct.pack(">I", len(manifest)) + manifest + image


def firmware_object_path(gateway_id: str) -> str:
    return f"/smgw/cosem/gateway/{gateway_id}/{FIRMWARE_CLASS}-{FIRMWARE_OBIS_HEX}"


def firmware_method_path(gateway_id: str, method: str) -> str:
    return f"{firmware_object_path(gateway_id)}/methods/{METHODS[method]}"


def download_argument(name: str, container: bytes, *, size: int | None = None, sha256: bytes | None = None) -> bytes:
    """The argument of `download`: image name on ADMIN-SERVICE, announced size and SHA-256."""
    spec = default_definitions().types["firmware_download"]
    value = spec.build({"image_name": name, "image_size": len(container) if size is None else size,
                        "image_sha256": hashlib.sha256(container).digest() if sha256 is None else sha256})
    return value_to_xml(value)


def activate_argument(at: _dt.datetime | None = None) -> bytes:
    """The argument of `activate`: a date-time to schedule it, or nothing for now."""
    return value_to_xml(DlmsValue("date-time", at)) if at is not None else b""


def state_name(value: Any) -> str:
    """The name of a firmware_state enum value."""
    names = {v: k for k, v in default_definitions().types["firmware_state"].values.items()}
    return names[value.value if isinstance(value, DlmsValue) else value]
