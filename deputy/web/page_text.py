"""Outside text on Deputy's pages: escaped as HTML by Jinja, and shown, never obeyed, by the browser.

HTML escaping (Jinja's autoescape) stops markup but not the Unicode bidirectional controls (UAX #9 §2),
which a browser obeys inside any element: a client named ``evil\\u202egnp.exe`` or an argument holding
U+202E would read reversed on the consent or approval page, where a person decides on exactly that
text. Every value a template prints passes through :func:`shown_on_page` (the environment's
``finalize`` hook, :mod:`deputy.web.pages`), so no page, present or future, prints one raw: acting and
invisible characters appear as escapes (:func:`deputy.display_text.visible`). Line feeds stay, for
the indented JSON of a call's arguments.
"""

from __future__ import annotations

from markupsafe import Markup

from deputy.display_text import visible


def shown_on_page(value: object) -> object:
    """``value`` with its acting characters shown as escapes; an escape adds no HTML-special character."""
    if isinstance(value, Markup):
        # Already HTML (a value escaped by a filter); the escapes add only "\\" and letters and digits to it.
        return Markup(visible(str(value), newlines=True))  # noqa: S704
    if isinstance(value, str):
        return visible(value, newlines=True)
    return value
