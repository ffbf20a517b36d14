"""One module per grant type; each takes the parsed form and the authenticated client."""
