"""The long-lived parts one Deputy process shares, built once at start-up and passed down."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# What the parts are made of (SQLAlchemy, the audit log, the OAuth components, the SDK's helpers) is imported
# where the parts are built, in Services.open: every `deputy` command imports this module for its type, and
# `deputy --help` or a command that never opens storage should not pay a second of imports for it.
if TYPE_CHECKING:
    from deputy.audit.log import AuditLog
    from deputy.config import Settings
    from deputy.connections.service import Connections
    from deputy.keys import KeyRing
    from deputy.oauth.access_tokens import AccessTokenValidator
    from deputy.oauth.client_keys import ClientKeys
    from deputy.oauth.clients import ClientRegistry
    from deputy.oauth.trusted_issuers import TrustedIssuers
    from deputy.storage.approvals import Approval, ApprovalRepository
    from deputy.storage.clients import ClientRepository
    from deputy.storage.consents import ConsentRepository
    from deputy.storage.db import Database
    from deputy.storage.grants import GrantRepository
    from deputy.storage.sessions import SessionRepository
    from deputy.storage.users import User, UserRepository
    from deputy.telemetry.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    database: Database
    keyring: KeyRing
    users: UserRepository
    clients: ClientRepository
    sessions: SessionRepository
    grants: GrantRepository
    consents: ConsentRepository
    approvals: ApprovalRepository
    registry: ClientRegistry
    client_keys: ClientKeys
    # Deputy's own tokens presented to its endpoints (exchange, introspection): signature and claims only;
    # expiry and revocation are judged by each endpoint.
    token_verifier: AccessTokenValidator
    trusted_issuers: TrustedIssuers
    audit: AuditLog
    metrics: Metrics  # this process's Prometheus metrics; the audit log counts into it too
    connections: Connections  # users' own tokens for credentials = "oauth" upstreams (deputy.connections)

    @classmethod
    def open(cls, settings: Settings) -> Services:
        from deputy.audit.log import AuditLog, AuditUnavailable
        from deputy.audit.records import new_record
        from deputy.audit.settings import load_or_create_signer
        from deputy.audit.witness_push import WitnessPusher
        from deputy.connections.service import Connections
        from deputy.keys import KeyRing
        from deputy.oauth.access_tokens import AccessTokenValidator
        from deputy.oauth.client_assertions import check_client_jwks
        from deputy.oauth.client_documents import ClientDocumentResolver
        from deputy.oauth.client_keys import ClientKeys
        from deputy.oauth.clients import ClientRegistry
        from deputy.oauth.trusted_issuers import TrustedIssuers
        from deputy.storage.approvals import ApprovalRepository
        from deputy.storage.clients import ClientRepository
        from deputy.storage.consents import ConsentRepository
        from deputy.storage.db import Database
        from deputy.storage.grants import GrantRepository
        from deputy.storage.sessions import SessionRepository
        from deputy.storage.users import UserRepository
        from deputy.telemetry.metrics import Metrics

        metrics = Metrics()  # first: the parts built below count into it
        database = Database(settings.database_url)
        engine = database.engine
        clients = ClientRepository(engine)
        # Revocations must outlive the longest-lived token a grant can carry.
        grants = GrantRepository(engine, max(settings.access_token_ttl, settings.delegation.token_ttl))
        keyring = KeyRing.open(settings.data_dir / "keys", settings.access_token_ttl)
        audit = AuditLog(engine, settings.audit, load_or_create_signer(settings.audit), metrics=metrics)
        if settings.audit.witnesses:
            # Handed to the log from here: the log runs its after-checkpoint callbacks without knowing them.
            audit.after_checkpoint.append(WitnessPusher(audit, settings.audit.witnesses))

        async def record_revocation(grant_id: str, reason: str) -> None:
            # The revocation has committed and stands; a record that cannot be written is an error to see.
            try:
                await audit.append(new_record("token.revoked", grant_id=grant_id, reason=reason))
            except AuditUnavailable as exc:
                log.error("revocation of grant %s (%s) not recorded: %s", grant_id, reason, exc)

        grants.on_revoked = record_revocation
        approvals = ApprovalRepository(engine, settings.approvals)
        metrics.count_at_scrape(metrics.approvals_pending, approvals.count_pending)
        return cls(
            settings=settings,
            database=database,
            keyring=keyring,
            users=UserRepository(engine),
            clients=clients,
            sessions=SessionRepository(engine),
            grants=grants,
            consents=ConsentRepository(engine, grants),
            approvals=approvals,
            registry=ClientRegistry(clients, ClientDocumentResolver.from_policy(settings.client_documents, clients,
                                                                                   settings.public_url)
                                    if settings.client_documents.enabled else None),
            client_keys=ClientKeys.from_policy(settings.client_documents, check_client_jwks),
            token_verifier=AccessTokenValidator(keyring, settings.issuer, settings.clock_leeway,
                                                is_revoked=lambda _grant_id: False),
            trusted_issuers=TrustedIssuers(settings.trusted_issuers, settings.clock_leeway),
            audit=audit,
            metrics=metrics,
            connections=Connections.open(settings, engine, audit),
        )

    async def record(self, record_type: str, **fields: Any) -> None:
        """Append an audit record of a security event; raises AuditUnavailable when it cannot be made durable."""
        from deputy.audit.records import new_record

        await self.audit.append(new_record(record_type, **fields))

    async def decide_approval(self, approval_id: str, approver: User, approve: bool) -> Approval:
        """Approve or deny a held call (the rules: :class:`ApprovalRepository`) and record the decision."""
        decided = await (self.approvals.approve if approve else self.approvals.deny)(approval_id, approver)
        await self.record("approval.decided", approval_id=approval_id, status=str(decided.status),
                          by=approver.user_id, user=decided.user_id, agent=decided.agent, server=decided.server,
                          tool=decided.tool, call_hash=decided.call_hash, decision_id=decided.decision_id)
        return decided

    async def names_local_identity(self, name: str) -> bool:
        """Whether ``name`` is a local user's id or a registered client's: an outside issuer's ``sub`` must not be."""
        return await self.users.get(name) is not None or await self.clients.get(name) is not None

    async def start(self) -> None:
        """Apply migrations, re-apply the clients the configuration file declares, start the audit log's
        checkpointer, read the counts the metrics show."""
        await self.database.migrate()
        await self.audit.start()
        await self.declare_config_clients()
        await self.metrics.read_counts()

    async def declare_config_clients(self) -> None:
        """Write each ``[[clients]]`` entry: the file owns a client's metadata, the operator its status.

        A denied or removed config client stays so (`deputy clients deny|remove` is not undone by a restart or
        by the next CLI command), and each start says so, naming it and how to serve it again.
        """
        from deputy.display_text import command_line
        from deputy.storage.clients import new_client

        for static in self.settings.clients:
            stored = await self.clients.declare(new_client(
                client_id=static.client_id,
                client_name=static.client_name,
                redirect_uris=static.redirect_uris,
                token_endpoint_auth_method=static.token_endpoint_auth_method,
                client_secret=static.client_secret,
                grant_types=static.grant_types,
                jwks=static.jwks,
                source="config",
            ))
            if not stored.is_active:
                log.warning("configured client %s stays %s: an operator's decision in the database, which the "
                            "configuration file does not undo; `%s` serves it again",
                            static.client_id, stored.status,
                            command_line("deputy", "clients", "approve", static.client_id))

    async def close(self) -> None:
        """Sign a last checkpoint of what this process appended, then let the database go."""
        try:
            await self.connections.close()
            await self.audit.stop()
        finally:
            await self.metrics.close()
            await self.database.dispose()
