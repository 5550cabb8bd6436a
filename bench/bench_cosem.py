"""COSEM benchmark (issue 4): attribute GETs per second over one open MANAGEMENT channel, next to a
bare aiohttp handler answering a fixed body over the same TLS set-up in the same run, and the time
to create 1,000 evaluation profiles.

Set-up: this process runs the gateway (pinned to CPU 0); a child runs the reference GWA (CPU 1).
Baseline: the same reverse-HTTP connection (aiohttp low-level server on the gateway's outgoing
TLS connection, the gateway's TLS context) with a handler that returns a fixed body. Both are
driven by the same GWA loop of sequential keep-alive GETs for the same time.

Usage: python bench/bench_cosem.py [--seconds 5] [--profiles 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from bench_wan import free_port, pin  # noqa: E402  (same folder)


# -- GWA child ---------------------------------------------------------------------------------------
async def gwa_main(pki_dir: str, port: int, service_port: int, seconds: float, profiles: int) -> None:
    from smgw_emu.pki import PkiDir
    from smgw_emu.reference.cosem_client import (
        communication_profile_values, evaluation_profile_values, meter_profile_values, profile_document,
        profile_object_path, profile_path,
    )
    from smgw_emu.reference.gwa import ReferenceGwa

    pki = PkiDir.open(pki_dir)
    gwa = ReferenceGwa(pki, management_port=port, service_port=service_port)
    await gwa.start()
    loop = asyncio.get_running_loop()
    readline = lambda: loop.run_in_executor(None, sys.stdin.readline)  # noqa: E731
    print("READY", flush=True)

    async def hammer(channel, path: str) -> dict:
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            response = await channel.request("GET", path)
            assert response.status == 200, (path, response.status, response.text[:200])
            count += 1
        return {"requests": count, "wall": time.perf_counter() - start}

    # Phase 1: the bare handler.
    channel = await gwa.wait_channel(30)
    bare = await hammer(channel, "/fixed")
    await channel.close()
    print(json.dumps(bare), flush=True)
    gateway_addr = json.loads(await readline())
    # Phase 2: the gateway's COSEM API.
    channel = await gwa.wake(tuple(gateway_addr[:2]), gateway_addr[2], timeout=30)
    for method, path, body in [
        ("POST", profile_path("commprofile", pki.identities.emt), profile_document("commprofile", communication_profile_values(pki))),
        ("POST", profile_path("meter", pki.identities.meter), profile_document("meter", meter_profile_values(pki))),
        ("POST", profile_path("tafprofile", "bench-0"), profile_document("tafprofile", evaluation_profile_values(pki, "bench-0"))),
    ]:
        response = await channel.request(method, path, body)
        assert response.status == 201, (path, response.status, response.text)
    print("PROVISIONED", flush=True)
    await readline()
    cosem = await hammer(channel, profile_object_path("tafprofile", "bench-0") + "/attributes/4")
    print(json.dumps(cosem), flush=True)
    await readline()
    start = time.perf_counter()
    for index in range(1, profiles + 1):
        profile_id = f"bench-{index}"
        response = await channel.request("POST", profile_path("tafprofile", profile_id),
                                         profile_document("tafprofile", evaluation_profile_values(pki, profile_id)))
        assert response.status == 201, response.text
    print(json.dumps({"profiles": profiles, "wall": time.perf_counter() - start}), flush=True)
    await channel.close()
    await gwa.stop()


# -- gateway side --------------------------------------------------------------------------------------
async def main_async(args) -> None:
    from aiohttp import web

    from smgw_emu.app.config import load_config
    from smgw_emu.app.gateway import Gateway
    from smgw_emu.net.management import _ChannelServer
    from smgw_emu.pki import init_pki

    workdir = Path(tempfile.mkdtemp(prefix="smgw-bench-cosem-"))
    pki = init_pki(workdir / "pki")
    port, service_port = free_port(), free_port()
    child = subprocess.Popen([sys.executable, __file__, "--gwa-child", str(pki.root), str(port), str(service_port),
                              str(args.seconds), str(args.profiles)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    loop = asyncio.get_running_loop()
    read = lambda: loop.run_in_executor(None, child.stdout.readline)  # noqa: E731

    def send(line: str) -> None:
        child.stdin.write(line + "\n")
        child.stdin.flush()

    assert (await read()).strip() == "READY"
    base = load_config()
    cfg = dataclasses.replace(
        base,
        gateway=dataclasses.replace(base.gateway, state_dir=workdir / "state", pki_dir=pki.root),
        wakeup=dataclasses.replace(base.wakeup, port=0),
        gwa=dataclasses.replace(base.gwa, management_port=port,
                                admin_service_url=f"https://127.0.0.1:{service_port}/admin-service/",
                                info_report_url=f"https://127.0.0.1:{service_port}/info-report"),
    )
    gateway = Gateway(cfg)
    await gateway.start()

    # Phase 1: bare aiohttp handler, same TLS context, same reverse-HTTP set-up.
    fixed = b'<?xml version="1.0"?><double-long-unsigned xmlns="urn:smgw-emu:cosem:1">42</double-long-unsigned>'

    async def bare_handler(request):
        return web.Response(body=fixed, content_type="application/xml")

    server = _ChannelServer(bare_handler, on_lost=lambda exc: None, max_request_bytes=1 << 20,
                            keepalive_timeout=3600)
    cpu = time.process_time()
    transport, _ = await loop.create_connection(server, "127.0.0.1", port, ssl=gateway.tls_context, server_hostname=None)
    bare = json.loads(await read())
    bare["cpu"] = time.process_time() - cpu
    transport.close()

    # Phase 2: COSEM attribute GETs through the whole gateway.
    while gateway.store.pending("info-report"):
        await asyncio.sleep(0.05)
    send(json.dumps([*gateway.wakeup_address, gateway.id]))
    assert (await read()).strip() == "PROVISIONED"
    cpu = time.process_time()
    send("GO")
    cosem = json.loads(await read())
    cosem["cpu"] = time.process_time() - cpu
    cpu = time.process_time()
    send("GO")
    created = json.loads(await read())
    created["cpu"] = time.process_time() - cpu
    await gateway.stop()
    child.wait(30)

    bare_rate, cosem_rate = bare["requests"] / bare["wall"], cosem["requests"] / cosem["wall"]
    bare_cpu, cosem_cpu = bare["cpu"] / bare["requests"], cosem["cpu"] / cosem["requests"]
    print("== COSEM benchmark (bench/bench_cosem.py) ==")
    print(f"bare aiohttp handler, fixed body, same TLS: {bare['requests']} GETs in {bare['wall']:.1f} s = {bare_rate:.0f}/s "
          f"({bare_cpu * 1e6:.0f} gateway-CPU-us per request)")
    print(f"COSEM attribute GET through the gateway:    {cosem['requests']} GETs in {cosem['wall']:.1f} s = {cosem_rate:.0f}/s "
          f"({cosem_cpu * 1e6:.0f} gateway-CPU-us per request)")
    print(f"ratio COSEM / bare, requests per second: {cosem_rate / bare_rate:.2f} (goal >= 0.7); "
          f"per gateway CPU: {bare_cpu / cosem_cpu:.2f}")
    print(f"{created['profiles']} evaluation profiles created over one channel in {created['wall']:.2f} s "
          f"({created['profiles'] / created['wall']:.0f}/s, {created['cpu'] / created['profiles'] * 1000:.2f} gateway-CPU-ms each)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--profiles", type=int, default=1000)
    parser.add_argument("--gwa-child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.gwa_child:
        pin(1)
        pki_dir, port, service_port, seconds, profiles = args.gwa_child
        asyncio.run(gwa_main(pki_dir, int(port), int(service_port), float(seconds), int(profiles)))
        return
    pin(0)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
