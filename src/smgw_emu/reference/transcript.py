"""A transcript of the messages a reference participant saw on the wire, in order.

Each entry carries a step id from the process catalogue's vocabulary, so an end-to-end test can
compare what really crossed the sockets with the catalogue entry of its figure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TranscriptEntry:
    step: str
    sender: str
    receiver: str
    channel: str
    detail: str = ""
    at: float = field(default_factory=time.monotonic)


class Transcript:
    def __init__(self) -> None:
        self.entries: list[TranscriptEntry] = []
        self._mark = 0

    def add(self, step: str, sender: str, receiver: str, channel: str, detail: str = "") -> TranscriptEntry:
        entry = TranscriptEntry(step, sender, receiver, channel, detail)
        self.entries.append(entry)
        return entry

    def mark(self) -> None:
        """Start a new section: `since_mark()` returns only what comes after this call."""
        self._mark = len(self.entries)

    def since_mark(self) -> list[TranscriptEntry]:
        return self.entries[self._mark:]

    def steps(self, *, since_mark: bool = False) -> list[str]:
        return [e.step for e in (self.since_mark() if since_mark else self.entries)]

    def format(self) -> str:
        start = self.entries[0].at if self.entries else 0.0
        return "\n".join(
            f"{e.at - start:8.3f}s  {e.sender:>5} -> {e.receiver:<5} [{e.channel}] {e.step}  {e.detail}"
            for e in self.entries
        )
