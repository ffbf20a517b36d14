"""STUB (issue 15, helper H1 replaces this file): requests to an upstream's authorization side."""

from __future__ import annotations


class UpstreamHttp:
    """Every request to what an upstream names: through the SSRF-safe fetcher unless the host is trusted."""

    def __init__(self, *, development_mode: bool = False, ca_file: str | None = None) -> None:
        self.development_mode = development_mode
        self.ca_file = ca_file
