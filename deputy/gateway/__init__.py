"""The protected resource: token checks, then faithful Streamable HTTP forwarding."""
