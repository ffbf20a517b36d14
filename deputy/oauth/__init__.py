"""The authorization server: OAuth 2.1 (draft-ietf-oauth-v2-1-13) as the MCP spec (2026-07-28) profiles it."""
