"""WAN benchmark (issue 3): wake-ups verified and MANAGEMENT channels established per second on one
core, next to the brainpool crypto rates measured in the same run, and wake-up-to-first-request
latency.

Set-up: this process runs N gateways in one asyncio loop pinned to CPU 0; a child process runs the
reference GWA pinned to CPU 1 (on a one-core machine both share it). A cycle is: the GWA sends a
signed wake-up, the gateway verifies it and opens TLS to the GWA, the GWA sends GET /smgw/info,
the gateway answers, the GWA closes. The gateway's rate is cycles per CPU-second of this
process (`time.process_time`), so it measures the gateway's own work whatever the GWA costs.

What crypto alone allows per cycle on the gateway side (brainpoolP256r1): 1 ECDSA verify (wake-up)
+ TLS 1.2 client handshake: 1 ECDH key generation + 1 ECDH derivation, 1 verify of the server's
key exchange signature, 2 verifies for the GWA certificate chain (leaf, sub-CA), 1 sign of
CertificateVerify. Its cost is computed from the rates measured below.

Usage: python bench/bench_wan.py [--gateways 8] [--cycles 400] [--latency-cycles 200]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


def pin(cpu: int) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[cpu % len(cpus)]})


def crypto_rates(seconds: float = 1.0) -> dict[str, float]:
    """Operations per second of one core for brainpoolP256r1 (cryptography = OpenSSL)."""
    curve = ec.BrainpoolP256R1()
    key = ec.generate_private_key(curve)
    peer = ec.generate_private_key(curve).public_key()
    data = os.urandom(64)
    signature = key.sign(data, ec.ECDSA(hashes.SHA256()))
    public = key.public_key()

    def rate(fn) -> float:
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(50):
                fn()
            n += 50
        return n / (time.perf_counter() - start)

    return {
        "sign": rate(lambda: key.sign(data, ec.ECDSA(hashes.SHA256()))),
        "verify": rate(lambda: public.verify(signature, data, ec.ECDSA(hashes.SHA256()))),
        "ecdh": rate(lambda: key.exchange(ec.ECDH(), peer)),
        "keygen": rate(lambda: ec.generate_private_key(curve)),
    }


def wakeup_verification_rate(count: int = 600) -> float:
    """Wake-ups the sans-IO verifier checks per second (all checks of docs/domain.md §3, distinct nonces)."""
    import datetime as _dt

    from smgw_emu.core.wakeup import WakeUpVerifier, build_wakeup
    from smgw_emu.pki import init_pki

    pki = init_pki(Path(tempfile.mkdtemp(prefix="smgw-bench-wakeup-")) / "pki")
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    packets = [build_wakeup(recipient_id=pki.identities.gateway, signer_key=pki.key("gwa-sig"),
                            signer_cert=pki.cert("gwa-sig"), created_at=now) for _ in range(count)]
    verifier = WakeUpVerifier(pki.identities.gateway, [pki.cert("gwa-sig")], max_nonces=count + 1)
    start = time.process_time()
    for packet in packets:
        assert verifier.check(packet, now).accepted
    return count / (time.process_time() - start)


def crypto_bound(rates: dict[str, float]) -> float:
    seconds = 4 / rates["verify"] + 1 / rates["sign"] + 1 / rates["ecdh"] + 1 / rates["keygen"]
    return 1 / seconds


# -- the GWA side (child process) -----------------------------------------------------------------
async def gwa_main(pki_dir: str, cycles: int, latency_cycles: int, management_port: int, service_port: int) -> None:
    from smgw_emu.pki import PkiDir
    from smgw_emu.reference.gwa import ReferenceGwa

    gwa = ReferenceGwa(PkiDir.open(pki_dir), management_port=management_port, service_port=service_port)
    await gwa.start()
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    readline = lambda: loop.run_in_executor(None, sys.stdin.readline)  # noqa: E731  (the loop must keep serving)
    targets = [tuple(t) for t in json.loads(await readline())]

    async def cycle(target) -> tuple[float, float]:
        host, port, gateway_id = target
        packet = gwa.build_wakeup(gateway_id)
        start = time.perf_counter()
        gwa.send_wakeup((host, port), gateway_id, packet=packet)
        channel = await gwa.wait_channel(30, gateway_id=gateway_id)
        connected = time.perf_counter()
        response = await channel.request("GET", "/smgw/info")
        answered = time.perf_counter()
        assert response.status == 200, response.status
        await channel.close()
        return connected - start, answered - start

    # Phase 1: latency, one cycle at a time against the first gateway.
    latencies = [await cycle(targets[0]) for _ in range(latency_cycles)]
    print("PHASE", flush=True)
    while (await readline()).strip() == "FLUSH":  # the parent's bare handshakes left channels behind
        for channel in list(gwa._unclaimed):
            gwa._unclaimed.remove(channel)
            await channel.close()
        print("FLUSHED", flush=True)
    # Phase 2: throughput, every gateway cycling concurrently; channels matched by certificate CN.
    per_gateway = cycles // len(targets)
    start = time.perf_counter()

    async def run(target) -> None:
        for _ in range(per_gateway):
            await cycle(target)

    await asyncio.gather(*(run(t) for t in targets))
    wall = time.perf_counter() - start
    print(json.dumps({
        "latency_connect": [c for c, _ in latencies], "latency_first_response": [a for _, a in latencies],
        "cycles": per_gateway * len(targets), "wall": wall, "gwa_cpu": time.process_time(),
    }), flush=True)
    await gwa.stop()


# -- the gateway side (this process) ----------------------------------------------------------------
async def gateways_main(args) -> dict:
    from smgw_emu.app.config import load_config
    from smgw_emu.app.gateway import Gateway
    from smgw_emu.pki import derive_gateway_pki, init_pki

    workdir = Path(tempfile.mkdtemp(prefix="smgw-bench-"))
    pki = init_pki(workdir / "pki")
    base = load_config()
    management_port, service_port = free_port(), free_port()
    gateways = []
    for index in range(args.gateways):
        gateway_id = f"EBEN{index:010d}"
        cfg = dataclasses.replace(
            base,
            gateway=dataclasses.replace(base.gateway, id=gateway_id, state_dir=workdir / f"gw{index}",
                                        pki_dir=derive_gateway_pki(pki, workdir / f"pki-{index}", gateway_id).root),
            wakeup=dataclasses.replace(base.wakeup, port=0, per_source_rate=1e6, per_source_burst=1e6),
            gwa=dataclasses.replace(base.gwa, management_port=management_port,
                                    admin_service_url=f"https://127.0.0.1:{service_port}/admin-service/",
                                    info_report_url=f"https://127.0.0.1:{service_port}/info-report"),
        )
        gateways.append(Gateway(cfg))
    child = subprocess.Popen(
        [sys.executable, __file__, "--gwa-child", str(pki.root), str(management_port), str(service_port),
         str(args.cycles), str(args.latency_cycles)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    loop = asyncio.get_running_loop()
    read = lambda: loop.run_in_executor(None, child.stdout.readline)  # noqa: E731
    assert (await read()).strip() == "READY"
    for gateway in gateways:
        await gateway.start()
    while any(g.store.pending("info-report") for g in gateways):  # start-up events delivered first
        await asyncio.sleep(0.05)
    targets = [(*g.wakeup_address, g.id) for g in gateways]
    child.stdin.write(json.dumps(targets) + "\n")
    child.stdin.flush()
    assert (await read()).strip() == "PHASE", "GWA child failed in the latency phase"
    bare = await bare_handshakes(gateways[0], management_port, args.bare_handshakes)
    child.stdin.write("FLUSH\n")
    child.stdin.flush()
    assert (await read()).strip() == "FLUSHED"
    profiler = None
    if os.environ.get("SMGW_BENCH_PROFILE"):  # write a cProfile of the gateway side to this file
        import cProfile

        profiler = cProfile.Profile(time.process_time)  # CPU time: what the gateway itself spends
        profiler.enable()
    cpu_start = time.process_time()
    child.stdin.write("GO\n")
    child.stdin.flush()
    result = json.loads(await read())
    cpu = time.process_time() - cpu_start
    if profiler:
        profiler.disable()
        profiler.dump_stats(os.environ["SMGW_BENCH_PROFILE"])
    for gateway in gateways:
        await gateway.stop()
    child.wait(30)
    result["gateway_cpu"] = cpu
    result["bare_handshake_cpu"] = bare
    return result


async def bare_handshakes(gateway, port: int, count: int) -> float:
    """CPU seconds per plain asyncio TLS client handshake with the gateway's own TLS context
    against the same GWA: the floor for any gateway built on Python's ssl and this libssl."""
    loop = asyncio.get_running_loop()
    start = time.process_time()
    for _ in range(count):
        transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port,
                                                    ssl=gateway.tls_context, server_hostname=None)
        transport.close()
    return (time.process_time() - start) / count


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=8)
    parser.add_argument("--cycles", type=int, default=400)
    parser.add_argument("--latency-cycles", type=int, default=200)
    parser.add_argument("--bare-handshakes", type=int, default=200)
    parser.add_argument("--gwa-child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.gwa_child:
        pin(1)
        pki_dir, management_port, service_port, cycles, latency_cycles = args.gwa_child
        asyncio.run(gwa_main(pki_dir, int(cycles), int(latency_cycles), int(management_port), int(service_port)))
        return
    pin(0)
    rates = crypto_rates()
    bound = crypto_bound(rates)
    wakeups = wakeup_verification_rate()
    result = asyncio.run(gateways_main(args))
    rate = result["cycles"] / result["gateway_cpu"]
    connect = [x * 1000 for x in result["latency_connect"]]
    first = [x * 1000 for x in result["latency_first_response"]]
    print("== WAN benchmark (bench/bench_wan.py) ==")
    print(f"crypto, brainpoolP256r1, one core: sign {rates['sign']:.0f}/s  verify {rates['verify']:.0f}/s  "
          f"ECDH {rates['ecdh']:.0f}/s  keygen {rates['keygen']:.0f}/s")
    print(f"wake-up verification alone (sans-IO verifier, all checks): {wakeups:.0f}/s per CPU-second = "
          f"{wakeups / rates['verify']:.2f} of the ECDSA verify rate")
    print(f"crypto-only bound per cycle (4 verify + sign + ECDH + keygen): {bound:.0f} cycles/s")
    print(f"gateway: {result['cycles']} cycles (wake-up verified + channel established + 1 request + close) "
          f"across {args.gateways} gateways in {result['gateway_cpu']:.2f} CPU-s = {rate:.0f} cycles per CPU-second")
    print(f"wall: {result['cycles'] / result['wall']:.0f} cycles/s (GWA child used {result['gwa_cpu']:.2f} CPU-s)")
    print(f"ratio gateway / crypto bound: {rate / bound:.2f} (goal >= 0.5)")
    floor = 1 / (result["bare_handshake_cpu"] + 1 / rates["verify"])
    print(f"baseline: a bare asyncio TLS client handshake with the same context costs {result['bare_handshake_cpu'] * 1000:.2f} CPU-ms;"
          f" with the wake-up verify that allows {floor:.0f} cycles/s")
    print(f"ratio gateway / bare TLS handshake + wake-up verify: {rate / floor:.2f}")
    print(f"latency wake-up -> channel accepted: median {statistics.median(connect):.2f} ms, p99 {percentile(connect, 0.99):.2f} ms")
    print(f"latency wake-up -> first response:   median {statistics.median(first):.2f} ms, p99 {percentile(first, 0.99):.2f} ms "
          f"({len(first)} sequential cycles)")


if __name__ == "__main__":
    main()
