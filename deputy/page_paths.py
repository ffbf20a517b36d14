"""Paths of Deputy's own pages that code outside :mod:`deputy.web` hands out.

The gateway answers a held call with the link to its approval page (``public_url + APPROVAL_PAGE + id``), and
:mod:`deputy.web.approvals` serves that page: the path lives below both, so the gateway need not import the web
layer to name it.
"""

from __future__ import annotations

APPROVAL_PAGE = "/approvals/"  # followed by the approval's id
