"""The sans-IO firmware update (core/firmware.py): image format, verification, ranges, state machine."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import struct

import pytest

from smgw_emu.core import firmware as fw
from smgw_emu.reference.firmware import build_firmware_image, content_with_manifest

POLICY = fw.FirmwarePolicy(chunk_bytes=1024, max_image_bytes=1 << 20)
NOW = _dt.datetime(2026, 11, 25, 12, tzinfo=_dt.timezone.utc)
PAYLOAD = bytes(range(256)) * 10


@pytest.fixture(scope="module")
def image(pki) -> bytes:
    return build_firmware_image(pki, "2.0.0", PAYLOAD)


def trusted(pki, *names):
    return [pki.cert(name) for name in (names or ("gwa-sig",))]


def verify(pki, container, *, size=None, sha256=None, signers=()):
    return fw.verify_image(container, size=len(container) if size is None else size,
                           sha256=hashlib.sha256(container).digest() if sha256 is None else sha256,
                           trusted=trusted(pki, *signers), max_size=POLICY.max_image_bytes)


# -- the image ------------------------------------------------------------------------------------
def test_content_round_trip():
    manifest, payload = fw.parse_content(fw.image_content("1.2.3-rc1", PAYLOAD))
    assert payload == PAYLOAD
    assert manifest == fw.Manifest("1.2.3-rc1", len(PAYLOAD), hashlib.sha256(PAYLOAD).hexdigest())


def test_a_good_image_verifies(pki, image):
    verified = verify(pki, image)
    assert verified.manifest.version == "2.0.0" and verified.manifest.size == len(PAYLOAD)
    assert "GWA-TEST-0001" in verified.signer


@pytest.mark.parametrize("version", ["", "-1", "a b", "x" * 65, "1.0/2"])
def test_bad_versions_are_not_built(version):
    with pytest.raises(ValueError):
        fw.image_content(version, PAYLOAD)


def test_every_check_names_its_reason(pki, image):
    def reason(**kwargs):
        with pytest.raises(fw.ImageRejected) as info:
            verify(pki, **kwargs)
        return info.value.reason

    assert reason(container=image[:-1], size=len(image), sha256=hashlib.sha256(image).digest()) == "size-mismatch"
    assert reason(container=image, sha256=bytes(32)) == "hash-mismatch"
    assert reason(container=build_firmware_image(pki, "2.0.0", PAYLOAD, signer="emt-sig")) == "unknown-signer"
    tampered = bytearray(image)
    tampered[image.index(PAYLOAD[:64]) + 5] ^= 1  # one bit of the image, the hash announced is the new one
    assert reason(container=bytes(tampered)) == "signature-invalid"
    assert reason(container=b"\x30\x03\x02\x01\x01") == "container-invalid"
    assert reason(container=b"not DER at all") == "container-invalid"

    def signed(content: bytes) -> bytes:
        return build_firmware_image(pki, "x", b"", content=content)

    good = json.loads(fw.Manifest("2.0.0", len(PAYLOAD), hashlib.sha256(PAYLOAD).hexdigest()).to_json())
    assert reason(container=signed(b"\x00\x00")) == "manifest-invalid"
    assert reason(container=signed(struct.pack(">I", 10**6) + b"{}")) == "manifest-invalid"
    assert reason(container=signed(content_with_manifest(b"not json", PAYLOAD))) == "manifest-invalid"
    for change in ({"format": "other"}, {"version": "../x"}, {"size": -1}, {"size": True}, {"sha256": "AB"}):
        manifest = json.dumps({**good, **change}).encode()
        assert reason(container=signed(content_with_manifest(manifest, PAYLOAD))) == "manifest-invalid", change
    for change in ({"size": len(PAYLOAD) + 1}, {"sha256": "0" * 64}):
        manifest = json.dumps({**good, **change}).encode()
        assert reason(container=signed(content_with_manifest(manifest, PAYLOAD))) == "manifest-mismatch", change


def test_a_configured_signer_is_trusted_instead(pki):
    manufacturer = build_firmware_image(pki, "3.0.0", PAYLOAD, signer="emt-sig")
    assert verify(pki, manufacturer, signers=("emt-sig",)).manifest.version == "3.0.0"


# -- ranges ---------------------------------------------------------------------------------------
def test_content_range():
    assert fw.parse_content_range("bytes 0-99/1000") == (0, 99, 1000)
    assert fw.parse_content_range("bytes 5-5/*") == (5, 5, None)
    for bad in ("", "bytes 9-1/10", "bytes 0-10/10", "items 0-1/2", "bytes -1-2/3", "bytes 0-1/2, 3-4/5"):
        with pytest.raises(ValueError):
            fw.parse_content_range(bad)


def test_next_range():
    assert fw.next_range(0, 3000, 1024) == (0, 1023)
    assert fw.next_range(2048, 3000, 1024) == (2048, 2999)


def test_accept_range():
    ok = dict(offset=1024, size=3000, requested_end=2047, status=206, content_range="bytes 1024-2047/3000", length=1024)
    fw.accept_range(**ok)
    fw.accept_range(offset=0, size=3000, requested_end=1023, status=200, content_range=None, length=3000)

    def reason(**changes):
        with pytest.raises(fw.ImageRejected) as info:
            fw.accept_range(**{**ok, **changes})
        return info.value.reason

    assert reason(content_range="bytes 1024-2047/4000") == "size-mismatch"   # larger than announced
    assert reason(content_range="bytes 1024-1999/2000") == "size-mismatch"   # truncated
    assert reason(status=416, content_range="bytes */2000") == "size-mismatch"
    assert reason(content_range="bytes 0-1023/3000") == "range-invalid"      # not where we asked
    assert reason(length=1000) == "range-invalid"                            # body shorter than its range
    assert reason(content_range=None) == "range-invalid"
    assert reason(status=200, length=3000) == "range-unsupported"            # whole body at an offset
    assert reason(offset=0, requested_end=1023, status=200, content_range=None, length=2999) == "size-mismatch"


# -- requests -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["", "/abs/path", "../up", "fw/../../x", "a//b", "sp ace", "x" * 201, "ü.bin", "fw/"])
def test_bad_names_are_refused(name):
    with pytest.raises(fw.FirmwareRefused) as info:
        fw.check_request(name, 10, bytes(32), POLICY)
    assert (info.value.code, info.value.http_status, info.value.field) == ("invalid-value", 422, "image_name")


def test_bad_sizes_and_hashes_are_refused():
    for size in (0, POLICY.max_image_bytes + 1):
        with pytest.raises(fw.FirmwareRefused) as info:
            fw.check_request("fw.bin", size, bytes(32), POLICY)
        assert info.value.field == "image_size"
    for digest in (b"", bytes(31), bytes(33)):
        with pytest.raises(fw.FirmwareRefused) as info:
            fw.check_request("fw.bin", 10, digest, POLICY)
        assert info.value.field == "image_sha256"
    assert fw.check_request("fw/v2_0.bin", 10, bytes(32), POLICY).name == "fw/v2_0.bin"


# -- the state machine ----------------------------------------------------------------------------
REQ = fw.DownloadRequest("fw.bin", 3000, bytes(range(32)))
OTHER = fw.DownloadRequest("fw2.bin", 3000, bytes(32))


def conflict(call, *args):
    with pytest.raises(fw.FirmwareRefused) as info:
        call(*args)
    assert (info.value.code, info.value.http_status) == ("state-conflict", 409)


def test_download_pause_resume_verify():
    started = fw.start_download(fw.FirmwareJob(), REQ)
    assert (started.log_event, started.event, started.job.state, started.job.offset) == ("firmware-download-started", False, "downloading", 0)
    conflict(fw.start_download, started.job, REQ)                 # one download at a time
    job = fw.progress(started.job, 1024)
    paused = fw.pause(job)
    assert (paused.log_event, paused.event, paused.job.state) == ("firmware-download-paused", True, "paused")
    assert paused.details["offset"] == "1024"
    conflict(fw.pause, paused.job)                                 # nothing runs
    resumed = fw.start_download(paused.job, REQ)
    assert (resumed.log_event, resumed.job.offset, resumed.discard_partial) == ("firmware-download-resumed", 1024, False)
    job = fw.progress(fw.progress(resumed.job, 1024), 952)
    with pytest.raises(ValueError):
        fw.progress(job, 1)                                        # past the announced size
    verified = fw.downloaded(job, fw.VerifiedImage(fw.Manifest("2.0.0", 10, "0" * 64), "CN=GWA"))
    assert (verified.job.state, verified.job.version, verified.event) == ("verified", "2.0.0", True)


def test_another_image_replaces_a_partial_one():
    paused = fw.pause(fw.progress(fw.start_download(fw.FirmwareJob(), REQ).job, 1024)).job
    replaced = fw.start_download(paused, OTHER)
    assert (replaced.log_event, replaced.job.name, replaced.job.offset, replaced.discard_partial) == (
        "firmware-download-started", "fw2.bin", 0, True)
    assert "discarded" in replaced.message


def test_failures_keep_the_part_only_when_the_gwa_was_unreachable():
    job = fw.progress(fw.start_download(fw.FirmwareJob(), REQ).job, 1024)
    transient = fw.download_failed(job, "connect-failed", "no route")
    assert (transient.job.state, transient.job.offset, transient.job.resumable, transient.discard_partial) == (
        "failed", 1024, True, False)
    assert (transient.event, transient.level, transient.outcome) == (True, 3, 1)
    assert fw.start_download(transient.job, REQ).log_event == "firmware-download-resumed"
    broken = fw.download_failed(job, "hash-mismatch", "bad")
    assert (broken.job.offset, broken.job.resumable, broken.discard_partial) == (0, False, True)
    assert fw.start_download(broken.job, REQ).log_event == "firmware-download-started"


def test_activation_now_scheduled_failed():
    verified = fw.FirmwareJob(state="verified", name="fw.bin", size=3000, sha256="ab" * 32, version="2.0.0")
    for state in ("idle", "downloading", "paused", "failed", "activating", "active"):
        conflict(fw.request_activation, fw.FirmwareJob(state=state), None, NOW)
    now = fw.request_activation(verified, None, NOW)
    assert (now.log_event, now.job.state) == ("firmware-activation-started", "activating")
    assert fw.request_activation(verified, NOW - _dt.timedelta(hours=1), NOW).job.state == "activating"
    later = fw.request_activation(verified, NOW + _dt.timedelta(hours=1), NOW)
    assert (later.log_event, later.job.state, later.job.activate_at) == (
        "firmware-activation-scheduled", "verified", "2026-11-25T13:00:00+00:00")
    due = fw.activation_due(later.job)
    assert (due.job.state, due.job.activate_at) == ("activating", "")
    done = fw.activated(due.job, "0.1.0")
    assert (done.job.state, done.event, done.details["previous-version"]) == ("active", True, "0.1.0")
    failed = fw.activation_failed(due.job, "self-test-failed", "changed", "0.1.0")
    assert (failed.job.state, failed.event, failed.details["active"], failed.discard_partial) == ("failed", True, "0.1.0", True)


def test_rollback_needs_a_previous_firmware():
    conflict(fw.check_rollback, fw.FirmwareJob(), None)
    conflict(fw.check_rollback, fw.FirmwareJob(state="activating"), "1.0")
    fw.check_rollback(fw.FirmwareJob(state="active"), "1.0")


def test_job_and_slot_rows_round_trip():
    job = fw.FirmwareJob(state="paused", name="fw.bin", size=3000, sha256="ab" * 32, offset=1024, reason="x",
                         resumable=True, activate_at="2026-11-25T13:00:00+00:00", signer="CN=GWA", version="")
    assert fw.FirmwareJob.from_row(job.version, job.state, json.loads(json.dumps(job.to_detail()))) == job
    slot = fw.Slot("2.0.0", "ab" * 32, "CN=GWA", NOW.isoformat())
    assert fw.Slot.from_row(slot.version, slot.to_detail()) == slot
    with pytest.raises(ValueError):
        fw.FirmwareJob.from_row("", "exploded", {})
    assert set(fw.STATES) == {"idle", "downloading", "paused", "verified", "failed", "activating", "active"}


# -- the [firmware] configuration ----------------------------------------------------------------
@pytest.mark.parametrize("line, field", [
    ("chunk_bytes = 100", "firmware.chunk_bytes"),
    ("chunk_bytes = 5000000", "firmware.chunk_bytes"),
    ("max_image_bytes = 10", "firmware.max_image_bytes"),
    ("chunk_interval_s = -1", "firmware.chunk_interval_s"),
    ("fetch_attempts = 0", "firmware.fetch_attempts"),
    ('signer_certificates = " , "', "firmware.signer_certificates"),
    ('chunk_bytes = "big"', "firmware.chunk_bytes"),
    ("colour = 1", "firmware.colour"),
])
def test_bad_firmware_configuration_is_refused(line, field):
    from smgw_emu.app.config import DEFAULT_CONFIG_TOML, ConfigError, parse_config

    text = DEFAULT_CONFIG_TOML.split("[firmware]")[0] + f"[firmware]\n{line}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert str(info.value).startswith(field)


def test_default_firmware_configuration():
    from smgw_emu.app.config import load_config

    fw_cfg = load_config().firmware
    assert (fw_cfg.chunk_bytes, fw_cfg.max_image_bytes, fw_cfg.chunk_interval_s, fw_cfg.fetch_attempts,
            fw_cfg.signer_certificates) == (65536, 16 * 1024 * 1024, 0.0, 3, "gwa")
