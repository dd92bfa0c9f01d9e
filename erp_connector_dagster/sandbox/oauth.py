"""OAuth 2.0 as the sandbox emulators serve it: the bearer tokens issued, the client's sign-in.

Each emulator keeps its own token endpoint, grant and error bodies (Entra ID, Intuit, Xero,
Workday, SAP and Oracle identity domains word them differently); what they share is here.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from dataclasses import dataclass, field

from werkzeug.wrappers import Request


@dataclass
class TokenStore:
    """Bearer tokens this sandbox issued, with their expiry (monotonic seconds)."""

    lifetime_seconds: float = 3600
    issued: int = 0
    _tokens: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def issue(self, prefix: str = "") -> str:
        """A new token; `prefix` makes it look like the real ERP's (a JWT header, say)."""
        token = prefix + secrets.token_urlsafe(32)
        with self._lock:
            self.issued += 1
            self._tokens[token] = time.monotonic() + self.lifetime_seconds
        return token

    def valid(self, token: str) -> bool:
        with self._lock:
            expires = self._tokens.get(token)
            return expires is not None and expires > time.monotonic()

    def known(self, token: str) -> bool:
        """Whether this sandbox issued the token, expired or not."""
        with self._lock:
            return token in self._tokens

    def revoke_all(self) -> None:
        with self._lock:
            self._tokens.clear()

    def expire_all(self) -> None:
        """Let every token run out now, still known: its next use is told it expired."""
        with self._lock:
            self._tokens = dict.fromkeys(self._tokens, 0.0)


def bearer(request: Request) -> str:
    """The bearer token a request carries, or "" when it carries none."""
    header = request.headers.get("Authorization", "")
    return header[7:] if header.startswith("Bearer ") else ""


def basic_credentials(request: Request) -> tuple[str, str] | None:
    """The user (client id) and password (secret) of an HTTP Basic header, if readable."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return user, password


def client_authenticated(client: tuple[str, str] | None, credentials: dict[str, str]) -> bool:
    """Whether a (client id, secret) pair is the sandbox's client, compared in constant time."""
    if client is None:
        return False
    client_id, client_secret = client
    return secrets.compare_digest(
        client_id.encode(), credentials["client_id"].encode()
    ) and secrets.compare_digest(client_secret.encode(), credentials["client_secret"].encode())
