"""HTML pages: login, consent, errors. Plain forms; no script needed."""
