"""Deputy as an OpenID Connect relying party of the organisation's identity providers (issue 14).

- :mod:`.discovery`: the provider's metadata (OpenID Connect Discovery 1.0 §4), issuer compared exactly;
- :mod:`.provider_keys`: its JWK Set, cached, fetched again for an unknown ``kid`` at most once a minute;
- :mod:`.id_tokens`: ID token validation (OpenID Connect Core 1.0 §3.1.3.7);
- :mod:`.relying_party`: the authorization code flow with PKCE S256, ``state``, ``nonce`` and RFC 9207 ``iss``
  (Core §3.1.2.1, RFC 7636, RFC 9700 §4.4 mix-up), the token request and its client authentication;
- :mod:`.claims`: the user a validated ID token names, and whether she may sign in;
- :mod:`.errors`: every refusal, a closed set of typed reasons (later the ``signin.failed`` audit reasons).

This package keeps no state beyond caches: the pending sign-in it returns is the caller's to bind to the
browser's session and to consume once, and the provider's own tokens are never kept.
"""
