"""The AR 2418-6 schema, loaded once per test session (about a second): the oracle for every
document the gateway writes for the consumer (smgw_emu.core.trudi)."""

from __future__ import annotations

import functools

from lxml import etree

from smgw_emu.core.trudi import SCHEMA_FILE


@functools.lru_cache(maxsize=1)
def schema():
    import xmlschema

    # allow="local": the schema set is read from the package, never from the network (atom.xsd
    # names the W3C URL of xml.xsd; xmlschema has that namespace built in).
    return xmlschema.XMLSchema(str(SCHEMA_FILE), allow="local")


def assert_valid(document: bytes) -> None:
    """Raise with every schema error of `document`."""
    errors = list(schema().iter_errors(etree.fromstring(document)))
    assert not errors, "AR 2418-6 schema errors:\n" + "\n".join(str(e.reason) + " at " + str(e.path) for e in errors[:10])
