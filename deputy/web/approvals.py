"""The approval page: a person sees one held call exactly as it would run and approves or denies it.

``GET /approvals/{id}`` asks the visitor to sign in (the same sign-in as the authorization
flow, :mod:`deputy.web.sign_in`), then shows the call — server, tool, the full arguments,
whose call it is and through which agents, when the approval expires — and, to someone who
may decide, Approve and Deny buttons. Only the requesting user and those who may decide
(:meth:`~deputy.config_approvals.ApprovalSettings.may_decide`: local ``approvers``, federated users by
``approver_groups`` or ``approver_subjects``, never by username; every user when none is named) see the call; the
requesting user decides only when the policy said ``@approval("self")``. ``POST
/approvals/{id}`` carries the decision and a CSRF token bound to the session and to this
form (:mod:`deputy.web.csrf`); the rules themselves live in
:class:`~deputy.storage.approvals.ApprovalRepository`, which the CLI uses too. Answers
follow post/redirect/get, so reloading never decides twice.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from deputy.act_chain import Actor
from deputy.page_paths import APPROVAL_PAGE
from deputy.services import Services
from deputy.storage.approvals import Approval, ApprovalRefused, Status
from deputy.storage.sessions import LoginSession
from deputy.storage.users import User
from deputy.web.federated_pages import START_PATH
from deputy.web.pages import protect, render
from deputy.web.sign_in import SignIn, SignInRefused

REFUSALS = {
    "expired": "This approval has expired. The call has to be made again to ask for a new one.",
    "own_request": "This is your own call: another user has to approve it.",
    "decided": "This approval was already decided.",
    "not_approver": "You are not one of the approvers of held calls.",
    "unknown": "There is no such approval.",
}


def _when(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


class ApprovalPages:
    def __init__(self, services: Services, sign_in: SignIn) -> None:
        self.services = services
        self.sign_in = sign_in

    async def page(self, request: Request) -> Response:
        approval_id = request.path_params["approval_id"]
        session = await self.sign_in.session(request)
        if session is None:
            return self._sign_in_page(request, approval_id)
        return await self._approval_page(request, approval_id, session)

    async def sign_in_form(self, request: Request) -> Response:
        approval_id = request.path_params["approval_id"]
        form = await self.sign_in.read_form(request)
        if not self.sign_in.csrf_ok(request, form, "login"):
            return self._error(403, "The form's CSRF token is missing or wrong; reload the page and try again.")
        user = await self.sign_in.attempt(request, form)
        if isinstance(user, SignInRefused):
            response = self._sign_in_page(request, approval_id, user.message, user.status)
            if user.retry_after is not None:
                response.headers["Retry-After"] = user.retry_after
            return response
        response = protect(RedirectResponse(self._path(approval_id), 303))
        await self.sign_in.start_session(request, response, user)
        return response

    async def decide(self, request: Request) -> Response:
        approval_id = request.path_params["approval_id"]
        form = await self.sign_in.read_form(request)
        session = await self.sign_in.session(request)
        # Bound to this approval too: a token from one call's page decides no other call.
        if not self.sign_in.csrf_ok(request, form, "approval", bound_to=approval_id):
            return self._error(403, "The form's CSRF token is missing or wrong; reload the page and try again.")
        if session is None:  # the token verified against a session cookie that has since expired
            return self._sign_in_page(request, approval_id)
        user = await self.services.users.get(session.user_id)
        choice = form.get("decision")
        if user is None or choice not in ("approve", "deny"):
            return self._error(400, "The form did not say approve or deny.")
        try:
            await self.services.decide_approval(approval_id, user, approve=choice == "approve")
        except ApprovalRefused as refused:
            return await self._approval_page(request, approval_id, session, REFUSALS[refused.reason], 409)
        return protect(RedirectResponse(self._path(approval_id), 303))

    async def _approval_page(self, request: Request, approval_id: str, session: LoginSession,
                             problem: str | None = None, status: int = 200) -> Response:
        approval = await self.services.approvals.get(approval_id)
        viewer = await self.services.users.get(session.user_id)
        if approval is None or viewer is None:
            return self._error(404, REFUSALS["unknown"])
        own = approval.user_id == viewer.user_id
        approver = self.services.settings.approvals.may_decide(viewer)
        if not own and not approver:  # the call's arguments are for those who may act on them
            return self._error(403, REFUSALS["not_approver"])
        requester = await self.services.users.get(approval.user_id)
        may_decide = approval.status is Status.PENDING and approver and (not own or approval.self_approval)
        note = problem
        if note is None and approval.status is Status.PENDING and not may_decide:
            note = REFUSALS["own_request"] if own and approver else REFUSALS["not_approver"]
        csrf, _ = self.sign_in.csrf_token(request, "approval", bound_to=approval.approval_id)
        response = render("approval.html", status=status, title="Approve this call?", csrf_token=csrf,
                          action=self._path(approval.approval_id), note=note, may_decide=may_decide,
                          viewer=viewer.username, **self._call(approval, requester))
        return response

    def _call(self, approval: Approval, requester: User | None) -> dict[str, Any]:
        server = self.services.settings.servers.get(approval.server)
        return {
            "server": server.title if server is not None else approval.server, "server_name": approval.server,
            "tool": approval.tool,
            "arguments": json.dumps(approval.arguments, indent=2, ensure_ascii=False, sort_keys=True),
            "requester": requester.username if requester is not None else approval.user_id,
            "agent": approval.agent,
            "actors": [self._hop(actor) for actor in approval.actors or [] if isinstance(actor, dict)],
            "approval_status": str(approval.status), "expires": _when(approval.expires_at),
            "approval_id": approval.approval_id,
        }

    def _hop(self, actor: dict[str, Any]) -> dict[str, str | None]:
        """One agent of the chain as the approver must read it: its name, and the issuer that vouches for it
        when that is not Deputy — an outside issuer's ``agent-b`` is not Deputy's ``agent-b`` (deputy.act_chain)."""
        client_id, iss = actor.get("client_id"), actor.get("iss")
        named = Actor(str(actor.get("sub")), str(client_id) if client_id is not None else None).describe()
        return {"name": named, "outside": str(iss) if iss and iss != self.services.settings.issuer else None}

    def _sign_in_page(self, request: Request, approval_id: str, error: str | None = None,
                      status: int = 200) -> Response:
        csrf, pre_session = self.sign_in.csrf_token(request, "login")
        settings = self.services.settings
        response = render("login.html", status=status, title="Sign in", csrf_token=csrf, request_id=None,
                          purpose="Sign in to see a call that waits for approval.", error=error,
                          action=self._path(approval_id) + "/sign-in", password_form=settings.local_users,
                          approval_id=approval_id,
                          providers=[(p.title, START_PATH + p.name) for p in settings.identity_providers])
        self.sign_in.set_pre_session(response, pre_session)
        return response

    @staticmethod
    def _path(approval_id: str) -> str:
        return APPROVAL_PAGE + approval_id

    @staticmethod
    def _error(status: int, description: str) -> Response:
        return render("error.html", status=status, title="Approval", error="approval", description=description)
