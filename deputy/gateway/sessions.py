"""Binding MCP sessions to the principal that opened them (MCP Security Best Practices, "Session Hijacking").

The client never sees the upstream's ``Mcp-Session-Id`` bare: Deputy hands out
``<upstream id>.<tag>``, where the tag is an HMAC over the server, user, agent and
upstream id. A session id presented with another principal's token does not
verify and is answered like an unknown session (HTTP 404, MCP Streamable HTTP
§Session Management), so possessing a session id is never authentication. The
check is stateless, so every replica that shares the key agrees.

One fact about the client travels in the id the same way: that its ``initialize`` declared URL-mode
elicitation (MCP 2025-11-25, ``capabilities.elicitation.url``), which decides how Deputy later asks
its user to connect an upstream account (:mod:`deputy.gateway.connection_answers`). Such an id's tag
is a mark followed by an HMAC that also covers the mark, so a client cannot add, change or remove
it: :data:`URL_ELICITATION_MARK` on an upstream's session, :data:`OWN_SESSION_MARK` on a session
Deputy issues itself (:meth:`SessionBinder.own`) because the upstream keeps none (a stateless
server) and the fact must still be remembered; such a session stands for no upstream session and
reaches the upstream as none. Every other id is exactly as before.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from deputy.gateway.principal import Principal

URL_ELICITATION_MARK = "u"
OWN_SESSION_MARK = "o"
TAG_LENGTH = 22  # 16 bytes of HMAC-SHA-256, base64url without padding


class SessionBinder:
    def __init__(self, key: bytes) -> None:
        self.key = key

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> SessionBinder:
        path = data_dir / "session.key"
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(os.urandom(32))
        return cls(path.read_bytes())

    def _tag(self, principal: Principal, upstream_id: str, mark: str = "") -> str:
        message = "\0".join((principal.server, principal.user, principal.agent, upstream_id))
        if mark:
            message += "\0" + mark
        digest = hmac.new(self.key, message.encode(), hashlib.sha256).digest()[:16]
        return mark + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def outward(self, principal: Principal, upstream_id: str, url_elicitation: bool = False) -> str:
        return f"{upstream_id}.{self._tag(principal, upstream_id, URL_ELICITATION_MARK if url_elicitation else '')}"

    def own(self, principal: Principal) -> str:
        """A session of Deputy's own, for a client that declared URL-mode elicitation to a stateless upstream."""
        own_id = secrets.token_urlsafe(16)
        return f"{own_id}.{self._tag(principal, own_id, OWN_SESSION_MARK)}"

    @staticmethod
    def declares_url_elicitation(client_id: str | None) -> bool:
        """Whether a session id (already checked by :meth:`inward`) says its client declared URL-mode elicitation."""
        if client_id is None:
            return False
        tag = client_id.rpartition(".")[2]
        return len(tag) == TAG_LENGTH + 1 and tag[0] in (URL_ELICITATION_MARK, OWN_SESSION_MARK)

    def inward(self, principal: Principal, client_id: str) -> str | None:
        """The upstream session id, "" for a session of Deputy's own (:meth:`own`: none upstream), or None when
        the id was not issued to this principal."""
        upstream_id, dot, tag = client_id.rpartition(".")
        if not dot or not upstream_id:
            return None
        expected = self._tag(principal, upstream_id, tag[0] if len(tag) > TAG_LENGTH else "").encode()
        # Bytes, not str: compare_digest refuses non-ASCII strings, and header values may hold any octet.
        if not hmac.compare_digest(tag.encode("latin-1"), expected):
            return None
        return "" if len(tag) > TAG_LENGTH and tag[0] == OWN_SESSION_MARK else upstream_id
