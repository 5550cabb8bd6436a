"""The `smgw-emu` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shlex
import signal
import sys
from pathlib import Path
from urllib.parse import urlsplit


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def _load_config(path: str | None):
    from smgw_emu.app.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        raise CliError(f"invalid configuration: {exc}") from None


# -- run --------------------------------------------------------------------------------------
def _this_command() -> str:
    """How to call this very smgw-emu again from any directory: the absolute path of the script
    that runs (`make run` starts it as .venv/bin/smgw-emu), else the smgw-emu next to this Python,
    else this Python with -m. Made absolute, symbolic links kept (a venv's python is a link to
    the base interpreter, which does not see the venv's packages)."""
    script = Path(os.path.abspath(sys.argv[0])) if sys.argv and sys.argv[0] else None
    if script is not None and script.name == "smgw-emu" and script.is_file():
        return shlex.quote(str(script))
    beside = Path(os.path.abspath(sys.executable)).parent / "smgw-emu"
    if beside.is_file():
        return shlex.quote(str(beside))
    return f"{shlex.quote(os.path.abspath(sys.executable))} -m smgw_emu.cli"


def cmd_run(args: argparse.Namespace) -> int:
    from smgw_emu.store.lock import StateDirLock, StateDirLockError

    config = _load_config(args.config)
    # First of all: one process per state directory. A second run must not run its self test on
    # (or otherwise touch) the live state of the first; the kernel drops the lock however we end.
    lock = StateDirLock(config.gateway.state_dir)
    try:
        lock.acquire()
    except StateDirLockError as exc:
        raise CliError(str(exc)) from None
    try:
        return _run_gateway(args, config)
    finally:
        lock.release()


def _run_gateway(args: argparse.Namespace, config) -> int:
    from smgw_emu.app.gateway import Gateway, GatewayStartError

    logging.getLogger("smgw_emu").setLevel(logging.INFO)  # say what happens: wake-ups, channels, requests

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        gateway = Gateway(config)
        try:
            await gateway.start()
        except GatewayStartError as exc:
            raise CliError(str(exc)) from None
        host, port = gateway.wakeup_address
        gwa = gateway.gwa  # the GWA of the key bank in use (a GWA change may have replaced [gwa])
        print(f"smgw-emu gateway {gateway.id} running (config: {config.source})", flush=True)
        print(f"  wake-up listener     udp://{host}:{port}", flush=True)
        print(f"  MANAGEMENT channel   opens to the GWA at {gwa.host}:{gwa.management_port} after a valid wake-up", flush=True)
        print(f"  INFO-REPORT          {gwa.info_report_url}", flush=True)
        if gateway.cls is not None:
            han_host, han_port = gateway.cls.han_address
            print(f"  CLS proxy (HAN)      tls://{han_host}:{han_port} (HKS 3: SOCKS5 inside TLS)", flush=True)
        if gateway.han is not None and gateway.han.server is not None:
            han_host, han_port = gateway.han.address
            print(f"  consumer view (HAN)  https://{han_host}:{han_port}/han/export (AR 2418-6, TRuDI)", flush=True)
        print(f"  state                {config.gateway.state_dir}", flush=True)
        config_arg = f" --config {shlex.quote(os.path.abspath(args.config))}" if args.config else ""
        print(f"next, in another terminal: {_this_command()} gwa demo{config_arg}", flush=True)
        await stop.wait()
        print("stopping", flush=True)
        await gateway.stop()

    asyncio.run(main())
    return 0


# -- pki --------------------------------------------------------------------------------------
def cmd_pki_init(args: argparse.Namespace) -> int:
    from smgw_emu.pki import Identities, PkiError, init_pki

    from smgw_emu.app.config import GATEWAY_ID_RE

    ids = Identities()
    if args.gateway_id:
        if not GATEWAY_ID_RE.match(args.gateway_id):
            raise CliError(f"--gateway-id: {args.gateway_id!r} is not a gateway id (DIN 43863-5, e.g. EXXX0012345678)")
        ids.gateway = args.gateway_id
    try:
        pki = init_pki(args.directory, curve=args.curve, identities=ids, force=args.force)
    except PkiError as exc:
        raise CliError(str(exc)) from None
    print(f"test SM-PKI ({pki.curve}) written to {pki.root}: {len(pki.manifest['files'])} files")
    print(f"  check: openssl verify -CAfile {pki.root}/root-ca.crt -untrusted {pki.root}/sub-ca-gw.crt {pki.root}/gateway-tls.crt")
    return 0


# -- processes --------------------------------------------------------------------------------
def cmd_processes(args: argparse.Namespace) -> int:
    from smgw_emu.catalogue import CatalogueError, load

    try:
        catalogue = load()
    except CatalogueError as exc:
        raise CliError(f"process catalogue invalid: {exc}") from None
    if args.json:
        print(json.dumps(catalogue.to_json_list(), indent=2, ensure_ascii=False))
    else:
        print(catalogue.format_table())
    return 0


# -- config -----------------------------------------------------------------------------------
def cmd_config_check(args: argparse.Namespace) -> int:
    config = _load_config(args.file)
    print(f"{config.source}: valid (gateway {config.gateway.id}, GWA {config.gwa.id} at {config.gwa.host}:{config.gwa.management_port})")
    return 0


def cmd_config_default(args: argparse.Namespace) -> int:
    from smgw_emu.app.config import DEFAULT_CONFIG_TOML

    print(DEFAULT_CONFIG_TOML, end="")
    return 0


# -- reference GWA ----------------------------------------------------------------------------
def _gwa_setup(args: argparse.Namespace):
    from smgw_emu.pki import PkiDir, PkiError

    config = _load_config(args.config)
    try:
        pki = PkiDir.open(args.pki or config.gateway.pki_dir)
    except PkiError as exc:
        raise CliError(str(exc)) from None
    return config, pki


async def _serve(gwa) -> int:
    """`gwa serve`: one flushed line per MANAGEMENT channel opened or closed and per report
    received, until SIGINT or SIGTERM."""
    print("waiting for channels and reports (Ctrl-C ends)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    announcer = asyncio.create_task(_announce(gwa, stop))
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([announcer, stopper], return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if not announcer.done():
        stop.set()
        await announcer  # its last round: what arrived up to the signal
    announcer.result()  # e.g. BrokenPipeError: main() ends quietly
    return 0


async def _announce(gwa, stop: asyncio.Event, interval: float = 0.05) -> None:
    """Watch the reference GWA's channels and reports (polled: the reference GWA has no
    callbacks) and print what changed."""
    opened: list = []      # (channel, drain task) of channels not yet seen closed
    reports = duplicates = 0
    try:
        while True:
            last_round = stop.is_set()
            while gwa.pending_channels():
                channel = await gwa.wait_channel(5)
                print(f"channel opened: MANAGEMENT from {channel.peer_id or '?'} ({channel.tls_version}, {channel.cipher})",
                      flush=True)
                # someone has to read the channel to see the gateway close it
                opened.append((channel, asyncio.create_task(channel.wait_closed(timeout=None))))
            for channel, drain in list(opened):
                if channel.closed:
                    print(f"channel closed: MANAGEMENT from {channel.peer_id or '?'} (closed by the gateway)", flush=True)
                    opened.remove((channel, drain))
            for report in gwa.reports[reports:]:
                event = report.event
                what = f"event {event.type} id={event.id} from {event.gateway}" if event else f"a non-event document from {report.peer_subject or '?'}"
                print(f"report received: {what} ({len(report.body)} bytes, acknowledged)", flush=True)
            for event in gwa.duplicates[duplicates:]:
                print(f"report received: event {event.type} id={event.id} from {event.gateway} again (duplicate, acknowledged and dropped)",
                      flush=True)
            reports, duplicates = len(gwa.reports), len(gwa.duplicates)
            if last_round:
                for channel, _ in opened:
                    print(f"channel closed: MANAGEMENT from {channel.peer_id or '?'} (closed by the GWA, serve ends)", flush=True)
                return
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except asyncio.TimeoutError:
                pass
    finally:
        for _, drain in opened:
            drain.cancel()


#: Exit status of `gwa demo` and `gwa request` when the gateway answered 4xx or 5xx (the response
#: is printed all the same); 2 stays a failure of the command itself (no channel, bad input).
EXIT_ERROR_STATUS = 1


def cmd_gwa(args: argparse.Namespace) -> int:
    from smgw_emu.reference.gwa import ChannelClosed, ReferenceGwa

    config, pki = _gwa_setup(args)
    service_port = urlsplit(config.gwa.info_report_url).port or 443

    async def main() -> int:
        gwa = ReferenceGwa(pki, host=config.gwa.host, management_port=config.gwa.management_port, service_port=service_port)
        try:
            await gwa.start()
        except OSError as exc:
            raise CliError(f"reference GWA cannot listen on {config.gwa.host}:{config.gwa.management_port}/{service_port}: {exc.strerror or exc}") from None
        try:
            target = (args.gateway_host or config.wakeup.host, args.gateway_port or config.wakeup.port)
            print(f"reference GWA listening: MANAGEMENT {config.gwa.host}:{gwa.management_port}, service https://{config.gwa.host}:{gwa.service_port}/")
            if args.action == "serve":
                return await _serve(gwa)
            print(f"wake-up -> {config.gateway.id} at udp://{target[0]}:{target[1]}")
            try:
                channel = await gwa.wake(target, config.gateway.id, timeout=args.timeout)
            except asyncio.TimeoutError:
                raise CliError(f"no MANAGEMENT channel from {config.gateway.id} within {args.timeout}s "
                               "(is the gateway running with this configuration?)") from None
            print(f"MANAGEMENT channel from {channel.peer_id} ({channel.tls_version}, {channel.cipher})")
            requests = [("GET", "/smgw/info"), ("GET", "/smgw/cosem")] if args.action == "demo" else [(args.method, args.path)]
            body = Path(args.body).read_bytes() if getattr(args, "body", None) else b""
            status = 0
            for method, path in requests:
                try:
                    response = await channel.request(method, path, body if args.action == "request" else b"")
                except ChannelClosed as exc:
                    raise CliError(f"channel closed: {exc}") from None
                print(f"\n{method} {path} -> {response.status}\n{response.text}")
                if response.status >= 400:
                    status = EXIT_ERROR_STATUS
            await channel.close()
            print("\ntranscript:\n" + gwa.transcript.format())
            return status
        finally:
            await gwa.stop()

    return asyncio.run(main())


# -- han --------------------------------------------------------------------------------------
def _ask_password(prompt: str) -> str:
    """Ask on the controlling terminal, never echoing; without one (CI, cron, a pipe from a
    service) refuse rather than let getpass read standard input with a warning."""
    import getpass

    try:
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
    except OSError:
        raise CliError("no terminal to ask for the password on; pass it on standard input with --stdin") from None
    try:
        return getpass.getpass(prompt)
    except EOFError:
        raise CliError("no password given (end of input); pass it on standard input with --stdin") from None


def cmd_han_hash_password(args: argparse.Namespace) -> int:
    """A password hash for [[han.consumers]] password_hash (docs/configuration.md)."""
    from smgw_emu.core.hanauth import DEFAULT_SCRYPT, HashFormatError, hash_password

    if args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = _ask_password("consumer's password: ")
    if not password:
        raise CliError("an empty password is not accepted")
    try:
        print(hash_password(password, n=args.n or DEFAULT_SCRYPT["n"]))
    except HashFormatError as exc:
        raise CliError(f"--n: {exc}") from None
    return 0


# -- api --------------------------------------------------------------------------------------
def cmd_api_openapi(args: argparse.Namespace) -> int:
    from smgw_emu.app.openapi import generate, render

    text = render(generate())
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"OpenAPI document written to {args.output}")
    else:
        print(text, end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smgw-emu", description="A virtual Smart Meter Gateway (SMGW).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start one emulated gateway")
    run.add_argument("--config", help="gateway configuration file (TOML); default: the embedded one")
    run.set_defaults(func=cmd_run)

    pki = sub.add_parser("pki", help="test SM-PKI")
    pki_sub = pki.add_subparsers(dest="pki_command", required=True)
    init = pki_sub.add_parser("init", help="write a complete test SM-PKI into DIR")
    init.add_argument("directory")
    init.add_argument("--curve", default="brainpoolP256r1",
                      help="brainpoolP256r1 (default), brainpoolP384r1, brainpoolP512r1, P-256 or P-384")
    init.add_argument("--gateway-id", help="the gateway id in the gateway certificates (default EXXX0012345678)")
    init.add_argument("--force", action="store_true", help="replace an existing PKI")
    init.set_defaults(func=cmd_pki_init)

    processes = sub.add_parser("processes", help="the Lastenheft process catalogue and its coverage")
    processes.add_argument("--json", action="store_true", help="print a JSON list")
    processes.set_defaults(func=cmd_processes)

    config = sub.add_parser("config", help="gateway configuration files")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a configuration file")
    check.add_argument("file")
    check.set_defaults(func=cmd_config_check)
    default = config_sub.add_parser("default", help="print the embedded default configuration")
    default.set_defaults(func=cmd_config_default)

    gwa = sub.add_parser("gwa", help="the reference GWA")
    gwa_sub = gwa.add_subparsers(dest="action", required=True)
    exits = ("exit status: 0 when every answer is below 400, 1 when the gateway answered 4xx or 5xx "
             "(the response is printed), 2 when the command failed (no channel, bad input)")
    for name, text in (("demo", "wake the gateway, discover it, print the transcript"),
                       ("serve", "run the GWA endpoints and wait"),
                       ("request", "wake the gateway and send one request")):
        p = gwa_sub.add_parser(name, help=text, description=text, epilog=exits if name != "serve" else None)
        p.add_argument("--config", help="the gateway's configuration file (for addresses and ids)")
        p.add_argument("--pki", help="PKI directory (default: gateway.pki_dir of the configuration)")
        p.add_argument("--gateway-host", help="wake-up address of the gateway")
        p.add_argument("--gateway-port", type=int, help="wake-up port of the gateway")
        p.add_argument("--timeout", type=float, default=10.0)
        if name == "request":
            p.add_argument("method")
            p.add_argument("path")
            p.add_argument("--body", help="file with the request body")
        p.set_defaults(func=cmd_gwa)

    han = sub.add_parser("han", help="the consumer's view at the HAN interface")
    han_sub = han.add_subparsers(dest="han_command", required=True)
    hash_password = han_sub.add_parser("hash-password", help="print a password hash for [[han.consumers]]")
    hash_password.add_argument("--stdin", action="store_true", help="read the password from standard input")
    hash_password.add_argument("--n", type=int, help="scrypt cost n (a power of two, default 16384)")
    hash_password.set_defaults(func=cmd_han_hash_password)

    api = sub.add_parser("api", help="the MANAGEMENT-channel API")
    api_sub = api.add_subparsers(dest="api_command", required=True)
    openapi = api_sub.add_parser("openapi", help="print (or write) the OpenAPI document generated from the routes")
    openapi.add_argument("--output", help="write to this file (docs/openapi.json) instead of standard output")
    openapi.set_defaults(func=cmd_api_openapi)
    return parser


#: Exit status when the reader of standard output went away (`smgw-emu processes | head`):
#: 128 + SIGPIPE, what the shell reports for a tool that SIGPIPE ended (e.g. `yes | head -1`).
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


def _stdout_reader_gone() -> bool:
    """Whether standard output is a pipe (or socket) whose reader has gone: poll reports an error
    or hang-up on its write end."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), 0)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # closed, detached or replaced standard output
        return True


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        status = args.func(args)
        sys.stdout.flush()  # here, not at interpreter exit, so that a closed pipe is seen below
        return status
    except CliError as exc:
        print(f"smgw-emu: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise  # a broken connection somewhere else is not the reader closing our output
        # The reader closed early: end quietly (Python docs, "Note on SIGPIPE"). What is still
        # buffered goes to /dev/null, so the flush at interpreter exit cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
