"""What the browser says it is fetching (Fetch Metadata Request Headers, W3C; ``Sec-Fetch-Dest``, ``Sec-Fetch-Mode``).

A sign-in or an authorization request is a page a person sees: the browser navigates a window to it. Any page on the
web can also make a visitor's browser fetch the same URL as an image, a frame or a script, from the visitor's own
address, and whatever such a request costs is counted against that address's budget (deputy.rate_limit): thirty
``<img>`` tags would spend a whole office's. A browser marks those requests (``Sec-Fetch-Dest: image``, ``iframe``,
``script``; ``Sec-Fetch-Mode: no-cors``, ``cors``), so the pages refuse them before they count. A client that sends
no such header (an older browser, a command-line client) is believed.
"""

from __future__ import annotations

from starlette.requests import Request


def fetched_as_page(request: Request) -> bool:
    """Whether the browser fetches this as a page of its own: a top-level navigation, or no Fetch Metadata at all."""
    return (request.headers.get("sec-fetch-dest", "document") == "document"
            and request.headers.get("sec-fetch-mode", "navigate") == "navigate")
