"""The gateway's half of the status word (docs/domain.md section 4), sans-IO.

[fact] A status word has 16 hex digits: the first 8 are the gateway's, the last 8 the meter's.
The gateway's bits name a fatal error, an invalid system time and a PTB warning / temporary
error. [ours] Their positions are not public here; they are this table, and nowhere else
(docs/decisions.md "Gateway status bits").
"""

from __future__ import annotations

from typing import Iterable

__all__ = ["GATEWAY_BITS", "gateway_status", "gateway_status_hex", "with_gateway_bits"]

#: [ours] bit values of the gateway's 32-bit half.
GATEWAY_BITS: dict[str, int] = {
    "fatal-error": 0x0000_0001,
    "system-time-invalid": 0x0000_0002,
    "ptb-warning": 0x0000_0004,
    "ptb-temporary-error": 0x0000_0008,
    "deinstallation-signal": 0x0000_0010,
}


def gateway_status(flags: Iterable[str]) -> int:
    """The gateway's half as an integer; an unknown flag is a programming error (KeyError)."""
    value = 0
    for flag in flags:
        value |= GATEWAY_BITS[flag]
    return value


def gateway_status_hex(flags: Iterable[str]) -> str:
    """The gateway's half as 8 hex digits."""
    return f"{gateway_status(flags):08x}"


def with_gateway_bits(status_word: str, flags: Iterable[str]) -> str:
    """A 16-digit status word with the gateway bits of `flags` set in its first 8 digits.

    A status word that is not 16 hex digits is returned with the gateway half only in front of
    eight zero meter digits, so a flag is never lost to a malformed stored value.
    """
    bits = gateway_status(flags)
    text = (status_word or "").strip().lower()
    if len(text) != 16 or any(c not in "0123456789abcdef" for c in text):
        return f"{bits:08x}00000000"
    return f"{int(text[:8], 16) | bits:08x}{text[8:]}"
