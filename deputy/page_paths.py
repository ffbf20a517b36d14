"""Paths of Deputy's own pages that code outside :mod:`deputy.web` hands out.

The gateway answers a held call with the link to its approval page (``public_url + APPROVAL_PAGE + id``), and
:mod:`deputy.web.approvals` serves that page: the path lives below both, so the gateway need not import the web
layer to name it.
"""

from __future__ import annotations

APPROVAL_PAGE = "/approvals/"  # followed by the approval's id
# Connecting a user's account at an upstream with its own authorization server (deputy.connections, issue 15).
CONNECT_PAGE = "/connect/"  # {public_url}/connect/NAME: starts connecting to server NAME
# {public_url}/connect/callback/NAME: server NAME's own redirect URI (RFC 9700 §4.4.2); the bare path is the one a
# configured confidential client keeps (deputy.connections.redirect_uris).
CONNECT_CALLBACK = "/connect/callback"
CONNECTIONS_PAGE = "/connections"  # her connections, each with a disconnect button
CLIENT_METADATA_DOCUMENT = "/connect/client-metadata.json"  # Deputy's client ID metadata document (https only)
