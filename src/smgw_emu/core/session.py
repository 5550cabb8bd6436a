"""Rules of one MANAGEMENT channel and its AUTH state (Lastenheft 5.2, 5.3, 5.8, 5.9), sans-IO.

The adapter (smgw_emu.net.management) owns the socket; this class decides. Times are monotonic
seconds handed in by the caller, so a virtual clock drives them like a real one.

AUTH state [ours, docs/decisions.md "AUTH state"]: established when the TLS handshake has
completed and the peer certificate is the GWA TLS certificate of the communication profile (5.8).
It ends (5.9) when the channel closes, when the GWA ends it (DELETE /smgw/auth), or when
`auth_timeout` has passed since it was established. POST /smgw/auth re-establishes it after the
peer is checked again against the current GWA certificate. Outside AUTH every administrative
request is refused (policy.auth_refused_status, error code "auth-required").
"""

from __future__ import annotations

from dataclasses import dataclass, field

CLOSE_IDLE = "idle-timeout"
CLOSE_LIFETIME = "session-lifetime"
AUTH_TIMEOUT = "auth-timeout"


@dataclass
class SessionLimits:
    idle_timeout: float = 300.0
    auth_timeout: float = 900.0
    max_lifetime: float = 48 * 3600.0


@dataclass
class ManagementSession:
    limits: SessionLimits
    opened_at: float
    last_activity: float = field(init=False)
    auth_since: float | None = None
    auth_ended_reason: str | None = None
    requests: int = 0

    def __post_init__(self) -> None:
        self.last_activity = self.opened_at

    # -- AUTH --------------------------------------------------------------------------------
    def establish_auth(self, now: float) -> None:
        self.auth_since = now
        self.auth_ended_reason = None

    def end_auth(self, reason: str) -> bool:
        """End AUTH; returns False when it was not established."""
        if self.auth_since is None:
            return False
        self.auth_since = None
        self.auth_ended_reason = reason
        return True

    def authenticated(self, now: float) -> bool:
        return self.auth_since is not None and now - self.auth_since < self.limits.auth_timeout

    def auth_expires_at(self) -> float | None:
        return None if self.auth_since is None else self.auth_since + self.limits.auth_timeout

    # -- activity and closing ----------------------------------------------------------------
    def on_request(self, now: float) -> None:
        self.requests += 1
        self.last_activity = now

    def due(self, now: float) -> list[str]:
        """What is due at `now`: AUTH_TIMEOUT (AUTH ends) and/or a reason to close the channel."""
        due: list[str] = []
        expires = self.auth_expires_at()
        if expires is not None and now >= expires:
            due.append(AUTH_TIMEOUT)
        if now - self.opened_at >= self.limits.max_lifetime:
            due.append(CLOSE_LIFETIME)
        elif now - self.last_activity >= self.limits.idle_timeout:
            due.append(CLOSE_IDLE)
        return due

    def next_deadline(self) -> float:
        """The next moment at which `due()` may return something."""
        candidates = [self.opened_at + self.limits.max_lifetime, self.last_activity + self.limits.idle_timeout]
        expires = self.auth_expires_at()
        if expires is not None:
            candidates.append(expires)
        return min(candidates)
