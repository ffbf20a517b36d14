"""Deputy as each user's OAuth client toward upstream MCP servers that have their own authorization server (issue 15).

A server configured with ``credentials = "oauth"`` (:mod:`deputy.config_connections`) is called with the user's own
upstream token, never with the client's (MCP "Token Passthrough"). The parts:

- :mod:`.model`: the values passed between the parts below;
- :mod:`.errors`: every failure, a closed set of typed reasons;
- :mod:`.upstream_http`: every request to the upstream's authorization side, through the SSRF-safe fetcher unless
  the host is one the operator configured;
- :mod:`.discovery`: the upstream's ``401`` challenge → RFC 9728 protected resource metadata → RFC 8414 / OpenID
  metadata, in the MCP specification's order, issuer checked;
- :mod:`.registration`: who Deputy is at that authorization server: configured, its client ID metadata document,
  or RFC 7591 dynamic registration;
- :mod:`.authorization`: the authorization code flow with PKCE S256, ``state``, ``resource`` (RFC 8707) and RFC 9207
  ``iss``; refresh (RFC 6749 §6) and revocation (RFC 7009); client authentication;
- :mod:`.vault`: tokens sealed with AES-256-GCM at rest;
- :mod:`.service`: the connections themselves — what the gateway asks for each call, single-flight refresh, the
  connect flow the pages drive, disconnecting, audit records.
"""
