"""Why the grant repository refuses to create or redeem something (:mod:`deputy.storage.grants`), and the check of
the client that every creating transaction starts with (:mod:`deputy.storage.clients` says why it holds the row)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from deputy.storage.clients import Client, hold_active_client, hold_if_active, same_credentials


class HandleRefused(Exception):
    """The code or refresh token is unknown, expired, used, or its grant is revoked."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ClientNotActive(HandleRefused):
    """The client is denied, removed, pending or unknown: nothing is created for it."""

    def __init__(self) -> None:
        super().__init__("the client is not (or no longer) served")


class ClientChanged(HandleRefused):
    """The client's row changed (another key, secret, method, grant types…) after the request was authenticated
    against a copy of it: nothing is created; the client may try again."""

    def __init__(self) -> None:
        super().__init__("the client's registration changed during this request")


async def require_active(conn: AsyncConnection, client_id: str, confirm: Client | None = None) -> None:
    if confirm is None:
        if not await hold_if_active(conn, client_id):
            raise ClientNotActive()
        return
    held = await hold_active_client(conn, client_id)
    if held is None:
        raise ClientNotActive()
    if not same_credentials(held, confirm):
        raise ClientChanged()
