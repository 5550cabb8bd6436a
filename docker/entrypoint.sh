#!/bin/sh
# Container entry point: make the development PKI on first start, then run smgw-emu.
# Also runs as a plain process (tests/integration/test_container_entrypoint.py does that).
set -eu
SMGW_HOME="${SMGW_HOME:-/var/lib/smgw-emu}"
SMGW_BIN="${SMGW_BIN:-smgw-emu}"
if [ ! -f "$SMGW_HOME/pki/pki.json" ]; then
    "$SMGW_BIN" pki init "$SMGW_HOME/pki"
fi
exec "$SMGW_BIN" "$@"
