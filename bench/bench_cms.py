"""Throughput of the CMS containers (5.10 / 5.11) per curve and profile, one core.

    .venv/bin/python bench/bench_cms.py [--seconds 1.0] [--size 4096]

seal = ECDSA sign + ephemeral key generation + ECDH; open = ECDH + ECDSA verify.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from smgw_emu.core import cms
from smgw_emu.pki import init_pki


def rate(fn, seconds: float) -> float:
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        n += 1
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--size", type=int, default=4096, help="payload bytes")
    args = parser.parse_args()
    payload = os.urandom(args.size)
    print(f"{'curve':16} {'profile':8} {'encrypt/s':>10} {'decrypt/s':>10} {'seal/s':>8} {'open/s':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for curve in ("brainpoolP256r1", "brainpoolP384r1", "prime256v1"):
            pki = init_pki(os.path.join(tmp, curve), curve=curve)
            sig_cert, sig_key = pki.cert("gwa-sig"), pki.key("gwa-sig")
            enc_cert, enc_key = pki.cert("gateway-enc"), pki.key("gateway-enc")
            for profile in ("default", "aes256"):
                enc = cms.encrypt(payload, enc_cert, profile)
                sealed = cms.seal(payload, sig_cert, sig_key, enc_cert, profile)
                rates = (
                    rate(lambda: cms.encrypt(payload, enc_cert, profile), args.seconds),
                    rate(lambda: cms.decrypt(enc, enc_cert, enc_key), args.seconds),
                    rate(lambda: cms.seal(payload, sig_cert, sig_key, enc_cert, profile), args.seconds),
                    rate(lambda: cms.open_sealed(sealed, enc_cert, enc_key, [sig_cert]), args.seconds),
                )
                print(f"{curve:16} {profile:8} {rates[0]:10.0f} {rates[1]:10.0f} {rates[2]:8.0f} {rates[3]:8.0f}")


if __name__ == "__main__":
    main()
