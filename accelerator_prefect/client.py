"""``Accelerator``: the Python API for one principal, and its async core.

``AsyncAccelerator`` talks to Prefect with its async client; ``Accelerator`` is
the synchronous facade users call, running the async core on one background
event loop (as Prefect's own sync APIs do), so it also works inside notebooks
and Streamlit, which have loops of their own.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from accelerator_prefect.errors import NotFound, PlatformError
from accelerator_prefect.settings import Settings, get_settings

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

    from accelerator_prefect.access import Principal
    from accelerator_prefect.audit import AuditEntry
    from accelerator_prefect.catalog import HostedModel, HostedVersion
    from accelerator_prefect.directory import (
        LinkRecord,
        PolicyRecord,
        ProjectRecord,
        UserRecord,
    )
    from accelerator_prefect.manifest import Scope, Status
    from accelerator_prefect.outputs import OutputFile
    from accelerator_prefect.provenance import FileRecord, Provenance, RunDiff
    from accelerator_prefect.publish import PublishResult
    from accelerator_prefect.retention import AreaUsage, Deleted, Rules
    from accelerator_prefect.runs import (
        RoutineProgress,
        Run,
        RunFailure,
        RunInfo,
        RunQuery,
        RunSummary,
    )
    from accelerator_prefect.storage import AccFileSystem, Storage
    from accelerator_prefect.usage import UsageRow
    from accelerator_prefect.versions import VersionInfo

T = TypeVar("T")

# How many launches of one client write to Prefect at once (storing secrets, creating the
# run); the others wait their turn, their reads (shared, see _SharedReads) already done.
# SQLite takes one writer at a time and refuses a second at once (503). Measured on a
# 2-core machine with Prefect 3.9.1 (benchmarks/launch_burst.py, 100 launches at once from
# one async client, busy writes retried within ms by transport.BusyRetry): 4 at a time,
# 3.8 s and ~45 refusals; one at a time, 2.9 s and ~7 (raw creations one after another:
# 2.5-2.7 s with no refusal met, 12-14 s when a few meet Prefect's 2 s back-off).
# ACC_LAUNCH_CONCURRENCY sets it (a server on PostgreSQL takes writes side by side: acc up
# gives its services 4 there, platform.database_tuning).
LAUNCH_CONCURRENCY = max(1, int(os.environ.get("ACC_LAUNCH_CONCURRENCY", "1") or 1))

# How long a client keeps the list of projects bound to workspaces of their own before
# reading it again. Bindings route requests; they grant nothing (access is decided on
# the principal and each version's record, read on every call), and they change when an
# operator binds a project. A model not found is looked for again with the list read anew.
BINDINGS_TTL = 10.0
# How long a client keeps the retention periods and quotas it read (a changed policy or
# quota counts after this, or at once on the client that changed it).
RULES_TTL = 10.0


@dataclass(frozen=True)
class SharedLink:
    """A link that opens one model (or one version of it) to whoever holds it.

    ``url`` and ``token`` are known only when the link is created; afterwards
    only its id identifies it.
    """

    id: str
    model: str
    version: str | None
    created_by: str
    created: datetime
    expires: datetime | None
    active: bool
    token: str | None = None
    url: str | None = None
    guest_days: int = 30  # how long each guest session, and its files and runs, are kept

    @classmethod
    def of(cls, record: LinkRecord, token: str | None, catalog_url: str) -> SharedLink:
        from urllib.parse import urlencode

        url = None
        if token is not None:
            url = f"{catalog_url.rstrip('/')}/?{urlencode({'model': record.model, 'link': token})}"
        return cls(
            id=record.id,
            model=record.model,
            version=record.version,
            created_by=record.created_by,
            created=record.created,
            expires=record.expires,
            active=record.active,
            token=token,
            url=url,
            guest_days=record.guest_days,
        )


@dataclass(frozen=True)
class GuestSession:
    """A guest session a shared link was exchanged for: one guest, with an area of their
    own (``acc://links/<link id>/<guest>/``), who sees only their own runs and files.

    ``token`` acts for this guest alone until ``expires`` (the link's retention), or until
    the link is revoked.
    """

    token: str
    guest: str
    link_id: str
    model: str
    version: str | None
    area: str
    expires: datetime


# What a catalog widget needs of its frame: Streamlit's scripts and its own origin (the
# session's cookies and storage), forms, downloads of the run's outputs, and links that open
# an ordinary tab. Left out: navigating the embedding page, modal dialogs, pointer lock.
EMBED_SANDBOX = (
    "allow-scripts allow-same-origin allow-forms allow-downloads "
    "allow-popups allow-popups-to-escape-sandbox"
)


def embed_snippet(link_url: str, title: str) -> str:
    """An ``<iframe>`` showing the catalog's embed mode (launch form and run) for a link."""
    from html import escape

    src = link_url + ("&" if "?" in link_url else "?") + "embed=true"
    # A URL (its values percent-encoded): only these three could break out of the attribute.
    src = src.replace('"', "%22").replace("<", "%3C").replace(">", "%3E")
    return (
        f'<iframe src="{src}"\n'
        f'        title="{escape(title)}" width="100%" height="900" style="border:0"\n'
        f'        sandbox="{EMBED_SANDBOX}"\n'
        '        allow="clipboard-write"></iframe>'
    )


def _ui_url(api_url: str) -> str:
    return api_url.rstrip("/").removesuffix("/api")


def resolve_api_url(settings: Settings, api_url: str | None = None) -> str:
    """The Prefect API to use: explicit, then ``ACC_API_URL``, then the local platform."""
    if api_url or settings.api_url:
        return (api_url or settings.api_url or "").rstrip("/")
    from accelerator_prefect.platform import read_platform

    platform = read_platform(settings.home)
    if platform is None and settings.token is not None:
        raise PlatformError(
            "ACC_TOKEN is set but ACC_URL is not: set ACC_URL to the portal's address (the "
            "Portal line `acc up` prints, or what your operator gave you)"
        )
    if platform is None:
        raise PlatformError(
            f"no platform is running under {settings.home}; start one with `acc up`, "
            "or set ACC_URL to a portal's address"
        )
    return platform.api_url


class _SharedReads:
    """Concurrent callers of one read send it once, if it had not begun when they asked.

    A launch must see the access rules as they stand when it is asked for (a revoked
    token fails the very next launch). A read not yet begun when a second launch asks
    is as fresh for that launch as its own would be, so simultaneous launches of one
    client read who is asking, the workspaces and the model once, not once each.
    """

    def __init__(self) -> None:
        self._waiting: dict[Hashable, asyncio.Task[Any]] = {}

    async def read(self, key: Hashable, make: Callable[[], Awaitable[T]]) -> T:
        task = self._waiting.get(key)
        if task is None:

            async def begin() -> T:
                # From here on the read is under way: later callers start their own.
                if self._waiting.get(key) is task:
                    del self._waiting[key]
                return await make()

            task = self._waiting[key] = asyncio.ensure_future(begin())
        return cast(T, await asyncio.shield(task))


class AsyncAccelerator:
    """The async client for one principal. Prefer :class:`Accelerator` unless you are async."""

    def __init__(
        self,
        api_url: str,
        *,
        settings: Settings | None = None,
        token: str | None = None,
        link: str | None = None,
        trusted_user: str | None = None,
    ) -> None:
        """A client acting for the holder of ``token``, a guest holding ``link``, or
        ``trusted_user``: a name the platform's own services vouch for (the catalog acting
        for whoever its identity provider signed in). Reaching Prefect takes its API auth
        string, which only the platform's services and operators hold."""
        self.api_url = api_url.rstrip("/")
        self.ui_url = _ui_url(self.api_url)
        self.user = trusted_user
        self.settings = settings or get_settings()
        self._token = token
        self._link = link
        self._trusted = trusted_user
        self._verified: set[tuple[str, str]] = set()
        # Whom each checked token stood for (a token never changes hands): the next check
        # reads the token's record and its user's in one request, not one after the other.
        self._token_users: dict[str, str] = {}
        self._others: dict[str, PrefectClient] = {}
        self._principal: Principal | None = None
        # The tags the principal could see on this client's last lookup of a model.
        self._visible_hint: tuple[tuple[str, ...] | None] | None = None
        self._client: PrefectClient | None = None
        self._storage_fs: AccFileSystem | None = None
        self._rules: tuple[float, Rules] | None = None  # [when read, retention and quotas]
        self._launch_writes = asyncio.Semaphore(LAUNCH_CONCURRENCY)
        self._shared = _SharedReads()
        # [when read, the bound projects], or [] before the first read: one list, so the
        # clients of the portal's requests (acting_for) share it with their platform client
        self._bindings: list[Any] = []
        self._borrowed = False
        self._one_request = False  # the portal's: the credential is checked once per request
        self._exchanging = asyncio.Lock()
        # The guest session this client opened with its link, if it holds only a link.
        self.guest_session: GuestSession | None = None
        self._shared_link: str | None = None  # the link it was given, once a guest of it

    @classmethod
    def connect(
        cls,
        api_url: str | None = None,
        *,
        home: str | Path | None = None,
        token: str | None = None,
        link: str | None = None,
        trusted_user: str | None = None,
    ) -> AsyncAccelerator:
        """A client acting for the holder of ``token`` (or ``ACC_TOKEN``), holding the
        shared ``link`` if given; with only a link, as a guest.

        With neither: as the local platform's operator, whose token ``acc up`` keeps in
        the home folder (readable by the operator only). Without any credential it raises
        :class:`~accelerator_prefect.AccessDenied`: there is no default identity.
        """
        from accelerator_prefect.errors import AccessDenied

        settings = get_settings(home=home)
        if token is None and settings.token is not None:
            token = settings.token.get_secret_value()
        if token is None and link is None and trusted_user is None:
            try:
                token = settings.operator_token_file.read_text().strip() or None
            except OSError:
                token = None
            if token is None:
                raise AccessDenied(
                    "no credential: give your personal token (ACC_TOKEN, or token=…) and the "
                    "portal's address (ACC_URL), or a shared link"
                )
        url = resolve_api_url(settings, api_url)
        return cls(url, settings=settings, token=token, link=link, trusted_user=trusted_user)

    def acting_for(self, *, token: str | None = None, link: str | None = None) -> AsyncAccelerator:
        """A client for the holder of ``token`` or ``link`` sharing this one's connection
        to Prefect, checked tokens and write queue: how the portal serves each request.

        Closing it leaves the shared connection open.
        """
        other = AsyncAccelerator(self.api_url, settings=self.settings, token=token, link=link)
        other._client, other._borrowed, other._one_request = self._client, True, True
        other._verified = self._verified
        other._token_users = self._token_users
        other._others = self._others
        other._launch_writes = self._launch_writes
        other._storage_fs = self._storage_fs
        other._bindings = self._bindings
        other._shared = self._shared  # simultaneous requests read a model once, as one client does
        return other

    async def principal(self) -> Principal:
        """Who this client acts for (read again on every call: a revoked token, link or
        membership counts at once)."""
        if self._principal is not None and self._one_request:
            return self._principal  # one portal request: checked already
        if self._holds_only_a_link and not self._one_request:
            async with self._exchanging:  # one guest session per client, however many ask
                if self._holds_only_a_link:
                    self.guest_session = await self.exchange_link()
                    self._shared_link, self._link = self._link, self.guest_session.token
        # Everyone else's rights are read again on every call (a trusted user's too: the
        # catalog's single sign-on users), so a removal from a project counts at once.
        # Simultaneous checks of one credential (one client's, or the portal's requests)
        # read it once, if that read had not begun when they asked: as fresh as their own.
        key = ("principal", self._token, self._link, self._trusted, self.user)
        principal = await self._shared.read(key, self._check_credential)
        self._principal = principal
        self.user = principal.name
        return principal

    @property
    def _holds_only_a_link(self) -> bool:
        """Whether this client holds a shared link's own token and nothing else: it then
        acts as one guest session of it, exchanged once (see :meth:`exchange_link`)."""
        from accelerator_prefect.directory import is_guest_token

        link, alone = self._link, self._token is None and self._trusted is None
        return alone and link is not None and not is_guest_token(link)

    async def exchange_link(self) -> GuestSession:
        """A new guest session of this client's shared link: its own identity and area.
        Each exchange is another guest, who sees only their own runs and files."""
        from accelerator_prefect.access import guest
        from accelerator_prefect.directory import INVALID_LINK, exchange_link, is_guest_token
        from accelerator_prefect.errors import AccessDenied

        link = self._shared_link or self._link
        if link is None or is_guest_token(link):
            raise AccessDenied(f"only a shared link's own token is exchanged: {INVALID_LINK}")
        client = await self.client()
        token, grant, expires = await exchange_link(client, link, self._verified)
        return GuestSession(
            token=token,
            guest=grant.guest or "",
            link_id=grant.link_id,
            model=grant.model,
            version=grant.version,
            area=f"acc://{guest(grant).own_area}/",
            expires=expires,
        )

    async def _check_credential(self) -> Principal:
        """Who the token, link or trusted user is, looked up now."""
        import dataclasses

        from accelerator_prefect.access import Principal, guest
        from accelerator_prefect.directory import (
            authenticate,
            is_guest_token,
            open_guest,
            open_link,
            read_user,
        )
        from accelerator_prefect.errors import AccessDenied

        client = await self.client()
        # Tokens and links are looked up on every call, so a revocation counts at once.
        grant = None
        if self._link is not None and is_guest_token(self._link):
            grant = await open_guest(client, self._link)
        elif self._link is not None:
            grant = await open_link(client, self._link, self._verified)
        if self._token is not None:
            last = self.user or self._token_users.get(self._token)
            principal = await authenticate(client, self._token, self._verified, last)
            if len(self._token_users) > 10_000:  # only checked tokens enter: a bound, not a leak
                self._token_users.clear()
            self._token_users[self._token] = principal.name
        elif self._trusted is not None:
            try:
                principal = (await read_user(client, self._trusted)).principal()
            except NotFound:  # signed in, in no project yet
                principal = Principal(self._trusted)
        elif grant is not None:
            principal = guest(grant)
        else:
            raise AccessDenied("no credential: a token, a shared link or a trusted user")
        if grant is not None and not principal.guest:
            principal = dataclasses.replace(principal, links=(*principal.links, grant))
        return principal

    @property
    def catalog_url(self) -> str:
        """Where the catalog is served: ``ACC_CATALOG_URL``, else where ``acc up`` serves it."""
        if self.settings.catalog_url:
            return self.settings.catalog_url
        from accelerator_prefect.platform import read_platform

        platform = read_platform(self.settings.home)
        return (platform.catalog_url if platform else None) or "http://127.0.0.1:8501"

    def storage_fs(self) -> AccFileSystem:
        """The ``acc://`` filesystem of this installation (from its settings)."""
        from accelerator_prefect.storage import AccFileSystem

        if self._storage_fs is None:
            self._storage_fs = AccFileSystem.from_settings(self.settings)
        return self._storage_fs

    async def client(self) -> PrefectClient:
        if self._client is None:
            from accelerator_prefect.transport import prefect_client

            client = prefect_client(
                self.api_url, auth_string=self.settings.service_auth_string() or ""
            )
            await client.__aenter__()
            self._client = client
        return self._client

    async def aclose(self) -> None:
        if self._borrowed:
            return
        if self._client is not None:
            await self._client.__aexit__(None, None, None)
            self._client = None
        for other in self._others.values():
            await other.__aexit__(None, None, None)
        self._others.clear()

    # -- workspaces: projects bound to a Prefect API of their own --------------------------------

    async def workspaces(self, *, fresh: bool = False) -> dict[str, PrefectClient]:
        """A client for every Prefect API models live on: this one, then each bound project's.

        The bindings are read again once older than :data:`BINDINGS_TTL`, or when ``fresh``.
        """
        home = await self.client()
        found = {self.api_url: home}
        for project in await self._project_bindings(fresh=fresh):
            url = project.api_url.rstrip("/")
            if url not in found:
                found[url] = await self._workspace_client(url, project.api_key_block)
        return found

    async def _project_bindings(self, *, fresh: bool = False) -> list[ProjectRecord]:
        """The projects bound to a workspace of their own, read again once older than
        :data:`BINDINGS_TTL`, or when ``fresh``."""
        from accelerator_prefect.directory import list_projects

        now = time.monotonic()
        if fresh or not self._bindings or now - self._bindings[0] > BINDINGS_TTL:
            self._bindings[:] = [now, await list_projects(await self.client())]
        return cast("list[ProjectRecord]", self._bindings[1])

    async def _workspace_client(self, api_url: str, api_key_block: str | None) -> PrefectClient:
        from accelerator_prefect.transport import prefect_client

        if api_url not in self._others:
            api_key = auth_string = None
            if api_key_block:  # a Prefect Cloud key or a server's auth string, in a Secret block
                document = await (await self.client()).read_block_document_by_name(
                    api_key_block, "secret", include_secrets=True
                )
                credential = str(document.data["value"])
                if credential.startswith("pnu_") or credential.startswith("pnb_"):
                    api_key = credential  # Prefect Cloud's user and service-account keys
                else:
                    auth_string = credential
            client = prefect_client(api_url, api_key=api_key, auth_string=auth_string or "")
            await client.__aenter__()
            self._others[api_url] = client
        return self._others[api_url]

    async def project_workspace(self, project: str) -> tuple[PrefectClient, str, str]:
        """The client, API URL and default work pool of ``project``'s workspace."""
        home = await self.client()
        for bound in await self._project_bindings(fresh=True):
            if bound.name == project:
                url = bound.api_url.rstrip("/")
                client = await self._workspace_client(url, bound.api_key_block)
                return client, url, bound.work_pool or self.settings.pool
        return home, self.api_url, self.settings.pool

    async def _versions(
        self,
        model: str | None = None,
        *,
        principal: Principal | None = None,
        spaces: dict[str, PrefectClient] | None = None,
    ) -> list[HostedVersion]:
        """The versions this principal may see, read from every workspace at once.

        A caller already holding the principal and the workspaces passes them, so that
        one call reads each from the server once.
        """
        from accelerator_prefect.catalog import read_versions

        if principal is None:
            principal = await self.principal()
        if spaces is None:
            spaces = await self.workspaces()
        found = await asyncio.gather(
            *(read_versions(c, model=model, principal=principal) for c in spaces.values())
        )
        versions = []
        for url, batch in zip(spaces, found, strict=True):
            for version in batch:
                version.workspace = url
                versions.append(version)
        return versions

    async def locate(self, model: str) -> tuple[HostedModel, PrefectClient]:
        """``model`` (as this principal sees it) and the client of its workspace."""
        _, found, client, _ = await self._find(model)
        return found, client

    async def _find(self, model: str) -> tuple[Principal, HostedModel, PrefectClient, str]:
        """Who is asking, ``model`` as they see it, and its workspace's client and URL.

        The server filters the model's versions by the tags the principal may see
        (:func:`~accelerator_prefect.catalog.read_versions`), so that a model they may
        not see costs what a missing one does: no version of it is read. Who is asking,
        the bound workspaces and the versions are read at once, the versions with the
        tags this client's principal had on its last call; when those have changed
        since (or on a first call), the versions are read again with the current ones.
        """
        from accelerator_prefect.access import visible_tags
        from accelerator_prefect.catalog import group_models, read_versions

        home = await self.client()
        shared = self._shared

        def versions_for(visible: tuple[str, ...] | None) -> Any:
            return shared.read(
                ("versions", model, visible),
                lambda: read_versions(
                    home, model=model, any_tags=None if visible is None else list(visible)
                ),
            )

        hint = self._visible_hint
        reads: list[Any] = [self.principal(), shared.read("workspaces", self.workspaces)]
        if hint is not None:
            reads.append(versions_for(hint[0]))
        principal, spaces, *early = await asyncio.gather(*reads)
        tags = visible_tags(principal)
        visible = None if tags is None else tuple(tags)
        self._visible_hint = (visible,)
        here = early[0] if early and hint == (visible,) else await versions_for(visible)
        versions = [v for v in here if v.visible_to(principal)]
        for version in versions:
            version.workspace = self.api_url
        elsewhere = {url: client for url, client in spaces.items() if url != self.api_url}
        if elsewhere:
            versions += await self._versions(model, principal=principal, spaces=elsewhere)
        if not versions:  # perhaps in a workspace bound since the bindings were read
            spaces = await self.workspaces(fresh=True)
            searched = {self.api_url, *elsewhere}
            unseen = {url: c for url, c in spaces.items() if url not in searched}
            if unseen:
                versions = await self._versions(model, principal=principal, spaces=unseen)
        if not versions:
            raise NotFound(f"model {model!r} not found (see `acc list` for the hosted models)")
        workspace = versions[0].workspace or self.api_url
        return principal, group_models(versions)[0], spaces[workspace], workspace

    async def publish(
        self,
        manifest: str | Path,
        *,
        allow_dirty: bool = False,
        force: bool = False,
        repository: str | None = None,
    ) -> PublishResult:
        from accelerator_prefect.manifest import load_manifest
        from accelerator_prefect.publish import publish

        principal = await self.principal()
        loaded = load_manifest(manifest)
        client, url, work_pool = await self.project_workspace(loaded.project)
        result = await publish(
            client,
            manifest,
            principal=principal,
            published_by=principal.name,
            default_work_pool=work_pool,
            allow_dirty=allow_dirty,
            force=force,
            repository=repository,
            elsewhere=[v for v in await self._all_versions(loaded.name) if v.workspace != url],
            data_remote=self.settings.data_remote,
            home=self.settings.home,
        )
        await self.audit_published(result, loaded.access.scope.value)
        return result

    async def audit_published(self, result: PublishResult, scope: str) -> None:
        """Record a publication in the audit log (an unchanged one is none)."""
        if result.status == "unchanged":
            return
        await self._audit(
            "acc.model.published",
            model=result.model,
            version=result.version,
            status=result.status,
            commit=result.commit,
            scope=scope,
        )

    async def _audit(
        self, event: str, *, model: str | None = None, user: str | None = None, **payload: Any
    ) -> None:
        """Record ``event`` about ``model`` (or ``user``), done by this principal, in the
        audit log (:mod:`accelerator_prefect.audit`)."""
        from accelerator_prefect import audit

        resource = audit.model_resource(model) if model else audit.user_resource(user or "")
        actor = (await self.principal()).name
        await audit.record(await self.client(), event, resource, actor=actor, payload=payload)

    async def audit(self, model: str, limit: int = 500) -> list[AuditEntry]:
        """``model``'s audit log, newest first (its owner and operators): publications,
        lifecycle changes, links made and revoked, launches and cancels, and who did each."""
        from accelerator_prefect import audit

        _, client = await self._managed(model)
        entries = await audit.read(client, model, limit)
        main = await self.client()
        if client is not main:  # a project on a workspace of its own: its runs are there
            entries += [e for e in await audit.read(main, model, limit) if e.action != "launched"]
            entries.sort(key=lambda e: e.occurred, reverse=True)
        return entries[:limit]

    async def _all_versions(self, model: str) -> list[HostedVersion]:
        """Every version of ``model`` in every workspace, whoever may see it (for checks)."""
        from accelerator_prefect.catalog import read_versions

        versions = []
        for url, client in (await self.workspaces()).items():
            for version in await read_versions(client, model=model):
                version.workspace = url
                versions.append(version)
        return versions

    async def catalog(self) -> list[HostedModel]:
        """The models this principal may see, by name, each with one version: the one a
        launch without a version runs for them (:meth:`get` reads every version).

        Models whose every version is archived are not listed. It reads one
        deployment a model (its heads, see :func:`~accelerator_prefect.catalog.mark_heads`),
        however many versions the model has.
        """
        from accelerator_prefect.catalog import HostedModel, read_listing

        principal, spaces = await asyncio.gather(self.principal(), self.workspaces())
        found = await asyncio.gather(*(read_listing(c, principal) for c in spaces.values()))
        models = []
        for url, batch in zip(spaces, found, strict=True):
            for version in batch:
                version.workspace = url
                models.append(HostedModel(name=version.name, versions=[version]))
        return sorted(models, key=lambda m: m.name)

    async def get(self, model: str) -> HostedModel:
        hosted, _ = await self.locate(model)
        return hosted

    async def check_session(self, token_id: str, issued: datetime) -> Principal:
        """Resume a browser session of the trusted user this client acts for, begun at
        ``issued`` by signing in with the token whose id is ``token_id``: the catalog's,
        on a reload. It holds while that token is active and the user has not signed out
        everywhere since; else :class:`~accelerator_prefect.AccessDenied`."""
        from accelerator_prefect.directory import check_session
        from accelerator_prefect.errors import AccessDenied

        if self._trusted is None:
            raise AccessDenied("only the platform's own services resume browser sessions")
        principal = await check_session(await self.client(), self._trusted, token_id, issued)
        self._principal, self.user = principal, principal.name
        return principal

    async def end_sessions(self) -> None:
        """Sign the user this client acts for out of every browser, everywhere."""
        from accelerator_prefect.directory import end_sessions
        from accelerator_prefect.errors import AccessDenied

        principal = await self.principal()
        if principal.guest:
            raise AccessDenied("a shared link's guests have no sessions to end")
        await end_sessions(await self.client(), principal.name)

    async def add_user(
        self,
        name: str,
        projects: dict[str, str] | None = None,
        operator: bool = False,
        oidc_subject: str | None = None,
    ) -> tuple[UserRecord, str]:
        """Add (or update) a user and give them a new token, shown once (operators only).
        ``oidc_subject``: their account's ``sub`` at the catalog's identity provider."""
        from accelerator_prefect.access import require_operator
        from accelerator_prefect.directory import UserRecord, create_token, save_user

        require_operator(await self.principal(), f"add user {name}")
        client = await self.client()
        record = UserRecord.model_validate(
            {
                "name": name,
                "projects": projects or {},
                "operator": operator,
                "oidc_subject": oidc_subject,
            }
        )
        await save_user(client, record)
        made, token = await create_token(client, name)
        await self._audit(
            "acc.user.added",
            user=name,
            projects={p: str(getattr(r, "value", r)) for p, r in record.projects.items()},
            operator=operator,
            token=made.id,
        )
        return record, token

    async def users(self) -> list[UserRecord]:
        from accelerator_prefect.access import require_operator
        from accelerator_prefect.directory import list_users

        require_operator(await self.principal(), "list users")
        return await list_users(await self.client())

    async def add_token(self, user: str, expires_in: timedelta | None = None) -> str:
        from accelerator_prefect.access import require_operator
        from accelerator_prefect.directory import create_token

        require_operator(await self.principal(), f"create a token for {user}")
        made, token = await create_token(await self.client(), user, expires_in)
        await self._audit("acc.user.token-created", user=user, token=made.id)
        return token

    async def revoke_token(self, token_id: str) -> None:
        from accelerator_prefect.access import require_operator
        from accelerator_prefect.directory import revoke_token

        require_operator(await self.principal(), "revoke a token")
        revoked = await revoke_token(await self.client(), token_id)
        await self._audit("acc.user.token-revoked", user=revoked.user, token=token_id)

    async def visible_run(self, run_id: str, workspace: str | None = None) -> str:
        """The workspace (API URL) of run ``run_id`` if this principal may read it, else
        :class:`NotFound`; ``workspace`` is where to look first."""
        _, url = await self._readable_run(run_id, workspace)
        return url

    async def named_runs(self, run_ids: list[str]) -> dict[str, bool]:
        """Of ``run_ids``, those of runs on this server, each with whether the principal
        may not read it: the storage keeps a hidden run's output folder from them, and
        any run's folder from their writes."""
        from accelerator_prefect.runs import named_runs

        return await named_runs(await self.client(), await self.principal(), run_ids)

    async def _readable_run(self, run_id: str, workspace: str | None = None) -> tuple[Any, str]:
        """The flow run ``run_id`` and its workspace, if this principal may read it (one
        read of the run, in the workspace it is found in)."""
        from accelerator_prefect.runs import may_read_flow_run, read_run

        principal, spaces = await self.principal(), await self.workspaces()
        order = sorted(spaces, key=lambda url: url != (workspace or self.api_url))
        for url in order:
            client = spaces[url]
            try:
                flow_run = await read_run(client, run_id)
                break
            except NotFound:
                continue
        else:
            raise NotFound(f"run {run_id!r} not found")
        if not may_read_flow_run(principal, flow_run):
            raise NotFound(f"run {run_id!r} not found")
        return flow_run, url

    def run_url(self, run_id: str, workspace: str | None = None) -> str:
        """The run's page in the Prefect UI of its workspace."""
        return f"{_ui_url(workspace or self.api_url)}/runs/flow-run/{run_id}"

    async def run_info(self, run_id: str, workspace: str | None = None) -> RunInfo:
        """Run ``run_id`` as its handle shows it (:class:`NotFound` if not readable)."""
        from accelerator_prefect.runs import RunInfo

        flow_run, url = await self._readable_run(run_id, workspace)
        return RunInfo.of(flow_run, url)

    async def wait_run(
        self, run_id: str, timeout: float | None, workspace: str | None = None
    ) -> RunInfo:
        """Run ``run_id`` once final (its closing log lines in), or :class:`RunTimeout`."""
        from accelerator_prefect.runs import RunInfo, wait_for, wait_for_final_logs

        url = await self.visible_run(run_id, workspace)
        client = (await self.workspaces())[url]
        flow_run = await wait_for(client, run_id, timeout)
        await wait_for_final_logs(client, flow_run.id)
        return RunInfo.of(flow_run, url)

    async def run_logs(self, run_id: str, workspace: str | None = None) -> list[str]:
        """Run ``run_id``'s log lines as this principal is shown them (see
        :func:`~accelerator_prefect.runs.shown_logs`)."""
        from accelerator_prefect.runs import audience_of, read_logs, run_tags, shown_logs

        flow_run, url = await self._readable_run(run_id, workspace)
        lines = await read_logs((await self.workspaces())[url], run_id)
        return shown_logs(lines, audience_of(await self.principal(), run_tags(flow_run)))

    async def run_failure(self, run_id: str, workspace: str | None = None) -> RunFailure | None:
        """Why run ``run_id`` failed, as this principal is shown it (``None`` unless it
        failed): the model's words; the traceback for its owner and operators only."""
        from accelerator_prefect.runs import audience_of, read_failure, run_tags

        flow_run, url = await self._readable_run(run_id, workspace)
        audience = audience_of(await self.principal(), run_tags(flow_run))
        return await read_failure((await self.workspaces())[url], flow_run, audience)

    async def run_progress(self, run_id: str, workspace: str | None = None) -> RoutineProgress:
        from uuid import UUID

        from accelerator_prefect.runs import read_progress

        url = await self.visible_run(run_id, workspace)
        return await read_progress((await self.workspaces())[url], UUID(run_id))

    async def run_result(self, run_id: str, workspace: str | None = None) -> Any:
        """The jobflow's return value, as JSON data (never unpickled)."""
        from accelerator_prefect.runs import read_result

        flow_run, url = await self._readable_run(run_id, workspace)
        return await read_result((await self.workspaces())[url], flow_run)

    async def run_provenance(self, run_id: str, workspace: str | None = None) -> Provenance:
        from uuid import UUID

        from accelerator_prefect.runs import read_provenance

        url = await self.visible_run(run_id, workspace)
        return await read_provenance((await self.workspaces())[url], UUID(run_id))

    async def run_outputs(
        self, run_id: str, workspace: str | None = None
    ) -> tuple[list[OutputFile], bool]:
        """The files run ``run_id`` wrote, and whether they are complete; once the run
        has ended, each is checked against the hash its provenance recorded, and marked
        altered if it no longer matches."""
        from accelerator_prefect.outputs import checked, is_incomplete, list_outputs, run_folder
        from accelerator_prefect.storage import Storage

        info = await self.run_info(run_id, workspace)
        folder = run_folder(info.parameters, run_id)
        if folder is None:
            return [], info.completed
        storage = Storage(self.storage_fs())  # reading the run was allowed already
        files, recorded = await asyncio.gather(
            asyncio.to_thread(list_outputs, folder, storage),
            self._recorded_outputs(run_id, info, workspace),
        )
        files = await asyncio.to_thread(checked, files, storage, recorded)
        complete = info.completed and not await asyncio.to_thread(is_incomplete, folder, storage)
        return files, complete

    async def _recorded_outputs(
        self, run_id: str, info: RunInfo, workspace: str | None
    ) -> dict[str, FileRecord] | None:
        """The outputs run ``run_id``'s provenance recorded, by path (``None`` while the
        run has not ended or recorded none): read from its Prefect artifact, which no
        user can change, never from the copy beside the outputs."""
        from uuid import UUID

        from accelerator_prefect.runs import read_provenance

        if not info.final:
            return None
        client = (await self.workspaces())[info.workspace or workspace or self.api_url]
        try:
            record = await read_provenance(client, UUID(run_id))
        except NotFound:
            return None
        return {f.uri: f for f in record.outputs}

    async def open_output(self, run_id: str, path: str, workspace: str | None = None) -> Any:
        """One of run ``run_id``'s output files, open for reading (``path`` as listed)."""
        handle, _ = await self.open_output_sized(run_id, path, workspace)
        return handle

    async def open_output_sized(
        self, run_id: str, path: str, workspace: str | None = None
    ) -> tuple[Any, int]:
        """One of run ``run_id``'s output files, open for reading, and its size;
        :class:`AlteredOutput` if it no longer holds what the run wrote."""
        from accelerator_prefect.errors import AlteredOutput
        from accelerator_prefect.outputs import is_altered, run_folder
        from accelerator_prefect.storage import Storage, check_path, to_uri

        info = await self.run_info(run_id, workspace)
        folder = run_folder(info.parameters, run_id)
        if folder is None:
            raise NotFound(f"run {run_id} has no output folder")
        uri = to_uri(check_path(folder + path))  # refuses `..` and other escapes
        if not uri.startswith(folder) or uri == folder:
            raise NotFound(f"{path!r} is not an output of run {run_id}")
        storage = Storage(self.storage_fs())
        entry, recorded = await asyncio.gather(
            asyncio.to_thread(storage.info, uri), self._recorded_outputs(run_id, info, workspace)
        )
        if entry.is_folder:
            raise NotFound(f"{path!r} is not an output file of run {run_id}")
        relative = uri[len(folder) :]
        altered = await asyncio.to_thread(
            is_altered, storage, uri, entry.size, relative, recorded, entry.modified
        )
        if altered:
            raise AlteredOutput(
                f"{relative} was changed after run {run_id} wrote it: it no longer holds what "
                "the run's provenance recorded, so it is not shown as the run's output"
            )
        return await asyncio.to_thread(storage.open, uri, "rb"), entry.size

    async def cancel(self, run_id: str, workspace: str | None = None) -> RunInfo:
        """Cancel run ``run_id`` (its launcher, its model's owner, operators).

        A run still waiting for a worker ends Cancelled at once; one a worker took
        (Pending or Running) is set Cancelling and its worker stops its process. Either
        way its secret blocks are deleted now, and partial outputs are marked
        incomplete. A run already ended is left as it is.
        """
        from prefect.states import Cancelled, Cancelling

        from accelerator_prefect.access import may_cancel_run
        from accelerator_prefect.errors import AccessDenied
        from accelerator_prefect.runs import RunInfo, read_run

        principal = await self.principal()
        flow_run, url = await self._readable_run(run_id, workspace)
        info = RunInfo.of(flow_run, url)
        tags = info.tags
        if not may_cancel_run(
            principal,
            launched_by=tags.get("user"),
            model_owner=tags.get("owner"),
            link_id=tags.get("link"),
        ):
            raise AccessDenied(f"run {run_id}: only its launcher, its model's owner or an operator")
        if info.final:
            return info
        client = (await self.workspaces())[url]
        # A Pending run's process may be starting: only its worker can stop it (a run set
        # Cancelled under it would be taken Running again by its engine).
        started = info.state_type in {"PENDING", "RUNNING", "CANCELLING"}
        state = (
            Cancelling(message=f"cancelled by {principal.name}")
            if started
            else Cancelled(message=f"cancelled by {principal.name} before it started")
        )
        await client.set_flow_run_state(flow_run.id, state, force=True)
        if tags.get("model"):
            await self._audit(
                "acc.model.run-cancelled",
                model=tags.get("model"),
                run=str(info.id),
                version=tags.get("version"),
            )
        await self._after_cancel(client, info)
        return RunInfo.of(await read_run(client, run_id), url)

    async def _after_cancel(self, client: PrefectClient, info: RunInfo) -> None:
        """Delete the run's secret blocks and mark its partial outputs incomplete."""
        from accelerator_prefect import secrets
        from accelerator_prefect.outputs import mark_folder_incomplete, run_folder
        from accelerator_prefect.storage import Storage

        blocks = ((info.parameters.get("secrets") or {}).get("blocks")) or {}
        names = [str(n) for n in blocks.values() if str(n).startswith(secrets.RUN_PREFIX)]
        if names:
            await secrets.delete(client, names)
        folder = run_folder(info.parameters, info.id)
        if folder is not None:
            storage = Storage(self.storage_fs())
            await asyncio.to_thread(mark_folder_incomplete, folder, storage, "Cancelled")

    async def launch(
        self,
        model: str,
        conf: Any = None,
        *,
        version: str | None = None,
        inputs: Any = None,
        output: Any = None,
        secrets: Mapping[str, Any] | None = None,
        remember: bool = False,
        via: str = "python",
        rerun_of: str | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[str, str, str | None]:
        """Launch ``model``; the new run's id, its workspace, and a deprecation notice if
        the version is deprecated (see ``Accelerator.launch``)."""
        info, notice = await self.launch_info(
            model,
            conf,
            version=version,
            inputs=inputs,
            output=output,
            secrets=secrets,
            remember=remember,
            via=via,
            rerun_of=rerun_of,
            idempotency_key=idempotency_key,
        )
        return info.id, info.workspace, notice

    async def launch_info(
        self,
        model: str,
        conf: Any = None,
        *,
        version: str | None = None,
        inputs: Any = None,
        output: Any = None,
        secrets: Mapping[str, Any] | None = None,
        remember: bool = False,
        via: str = "python",
        rerun_of: str | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[RunInfo, str | None]:
        """Launch ``model``; the new run as created, and a deprecation notice if the version
        is deprecated (see ``Accelerator.launch``)."""
        from accelerator_prefect.catalog import HostedModel
        from accelerator_prefect.launch import launch

        # Who is asking, the bound workspaces and the model are read once per launch.
        principal, found, client, workspace = await self._find(model)
        # Only the versions in the model's workspace: a run is created where its version lives.
        here = [v for v in found.versions if (v.workspace or self.api_url) == workspace]
        hosted, flow_run = await launch(
            client,
            model,
            found=HostedModel(name=found.name, versions=here),
            writes=self._launch_writes,
            principal=principal,
            version=version,
            conf=conf,
            inputs=inputs,
            output=output,
            secrets=secrets,
            remember=remember,
            via=via,
            storage=self.storage_fs(),
            rerun_of=rerun_of,
            idempotency_key=idempotency_key,
            max_active_runs=self.settings.max_active_runs_per_user,
            over_quota=self.quota_problem,
        )
        from accelerator_prefect.runs import RunInfo
        from accelerator_prefect.versions import deprecation_notice

        return RunInfo.of(flow_run, workspace), deprecation_notice(hosted)

    async def rerun(
        self, run_id: str, *, secrets: Mapping[str, Any] | None = None, via: str = "python"
    ) -> tuple[str, str, str | None]:
        """Launch run ``run_id``'s version again with its conf and inputs (see
        ``Accelerator.rerun``)."""
        from accelerator_prefect.runs import read_run, run_tags

        url = await self.visible_run(run_id)
        flow_run = await read_run((await self.workspaces())[url], run_id)
        tags = run_tags(flow_run)
        if "model" not in tags or "version" not in tags:
            raise NotFound(f"run {run_id!r} is not a run of a hosted model")
        parameters = flow_run.parameters
        inputs = parameters.get("inputs") or {}
        selection = {k: inputs.get(k) or [] for k in ("selected_files", "selected_folders")}
        return await self.launch(
            tags["model"],
            parameters.get("conf"),
            version=tags["version"],
            inputs=selection if any(selection.values()) else None,
            secrets=secrets,
            via=via,
            rerun_of=str(flow_run.id),
        )

    async def forget_secrets(self, model: str) -> int:
        from accelerator_prefect.secrets import forget

        principal = await self.principal()
        _, client = await self.locate(model)  # only models this principal may see
        return await forget(client, principal.name, model)

    async def sweep_secrets(self) -> int:
        from accelerator_prefect.access import require_operator
        from accelerator_prefect.secrets import sweep

        require_operator(await self.principal(), "sweep secrets")
        return sum([await sweep(client) for client in (await self.workspaces()).values()])

    async def retention_rules(self, *, fresh: bool = False) -> Rules:
        """The retention periods and quotas in force: the settings' defaults, each
        project's policy and users' own quotas (read again after :data:`RULES_TTL`)."""
        from accelerator_prefect.directory import list_policies, list_users
        from accelerator_prefect.retention import Rules

        held = self._rules
        if held is not None and not fresh and time.monotonic() - held[0] < RULES_TTL:
            return held[1]
        client = await self.client()
        policies, users = await asyncio.gather(list_policies(client), list_users(client))
        rules = Rules.read(self.settings, policies, users)
        self._rules = (time.monotonic(), rules)
        return rules

    async def quota_problem(self, uri: str, incoming: int = 0) -> str | None:
        """Why writing ``incoming`` bytes (0: not known) at ``uri`` would go over its
        area's quota, if it would (operators are not held by quotas)."""
        from accelerator_prefect.retention import quota_problem
        from accelerator_prefect.storage import check_path

        if (await self.principal()).operator:
            return None
        rules = await self.retention_rules()
        relative = check_path(uri)
        return await asyncio.to_thread(quota_problem, self.storage_fs(), rules, relative, incoming)

    async def quota_room(self, uri: str) -> int | None:
        """How many more bytes the area of ``uri`` may take now (``None``: no quota, or
        an operator, whom quotas do not hold)."""
        from accelerator_prefect.retention import quota_room
        from accelerator_prefect.storage import check_path

        if (await self.principal()).operator:
            return None
        rules = await self.retention_rules()
        return await asyncio.to_thread(quota_room, self.storage_fs(), rules, check_path(uri))

    async def storage_usage(self) -> list[AreaUsage]:
        """What each storage area this principal may use holds, against its quota
        (operators: every area that holds files)."""
        from accelerator_prefect.retention import area_usage

        return await area_usage(self)

    async def set_policy(
        self,
        project: str,
        *,
        keep_outputs: str | None = None,
        keep_uploads: str | None = None,
        quota: str | None = None,
    ) -> PolicyRecord:
        """Set ``project``'s own retention and quota (operators), e.g.
        ``set_policy("climate", keep_outputs="90 d")``: what is not given stays as it was,
        and ``"default"`` hands a value back to the platform's default."""
        from accelerator_prefect.access import require_operator
        from accelerator_prefect.directory import PolicyRecord, list_policies, save_policy

        require_operator(await self.principal(), f"set the policy of project {project}")
        known = {p.name: p for p in await list_policies(await self.client())}.get(project)
        fields: dict[str, Any] = known.model_dump() if known else {"name": project}
        # What is not given stays as it was; "default" hands it back to the platform's.
        for name, value in (
            ("keep_outputs", keep_outputs),
            ("keep_uploads", keep_uploads),
            ("quota", quota),
        ):
            if value is not None:
                fields[name] = None if value.strip().lower() == "default" else value
        record = PolicyRecord.model_validate(fields)
        await save_policy(await self.client(), record)
        self._rules = None
        from accelerator_prefect import audit

        await audit.record(
            await self.client(),
            "acc.project.policy-changed",
            {"prefect.resource.id": f"acc.project.{project}", "prefect.resource.name": project},
            actor=(await self.principal()).name,
            payload=record.model_dump(exclude={"name"}),
        )
        return record

    async def policies(self) -> list[PolicyRecord]:
        """Every project's own retention and quota (operators)."""
        from accelerator_prefect.access import require_operator
        from accelerator_prefect.directory import list_policies

        require_operator(await self.principal(), "list project policies")
        return await list_policies(await self.client())

    async def set_user_quota(self, user: str, quota: str | None) -> UserRecord:
        """Set the most ``user``'s own area may hold, e.g. ``"5 GB"`` (``None``: the
        platform's default; operators)."""
        from accelerator_prefect.access import require_operator
        from accelerator_prefect.directory import UserRecord, read_user, save_user

        require_operator(await self.principal(), f"set the quota of {user}")
        client = await self.client()
        record = await read_user(client, user)
        changed = UserRecord.model_validate({**record.model_dump(), "quota": quota})
        if quota is not None:
            from accelerator_prefect.mapping import parse_size

            try:
                parse_size(quota)
            except ValueError as exc:
                raise ValueError(f"quota: {exc}") from None
        await save_user(client, changed)
        self._rules = None
        await self._audit("acc.user.quota-changed", user=user, quota=quota)
        return changed

    async def sweep(self, now: datetime | None = None, dry_run: bool = False) -> list[Deleted]:
        """Delete run outputs, uploads and guest areas past their retention, and record
        what was deleted (operators; ``acc up`` does it every ``sweep_every`` seconds).
        ``dry_run``: say what would go, and delete nothing."""
        from accelerator_prefect.access import require_operator
        from accelerator_prefect.retention import sweep

        require_operator(await self.principal(), "sweep storage")
        return await sweep(self, now or datetime.now(UTC), dry_run)

    async def run_outputs_expired(self, run_id: str, workspace: str | None = None) -> str | None:
        """If retention deleted run ``run_id``'s outputs: when and why, in words."""
        from accelerator_prefect.outputs import run_folder
        from accelerator_prefect.retention import read_expiry

        info = await self.run_info(run_id, workspace)  # only a run this principal may read
        folder = run_folder(info.parameters, run_id)
        if folder is None or not info.final or info.ended is None:
            return None
        return await asyncio.to_thread(
            read_expiry, self.storage_fs(), folder, str(run_id), info.ended
        )

    async def sweep_guest_areas(self, now: datetime | None = None) -> list[str]:
        """Remove the areas (``acc://links/<link>/<guest>/``) of guest sessions past their
        link's retention, with their files and runs' outputs (operators; ``acc up`` does it
        every minute). Returns the ``acc://`` folders removed."""
        from accelerator_prefect.access import require_operator
        from accelerator_prefect.retention import expire_guest_areas

        require_operator(await self.principal(), "sweep guest areas")
        return [d.uri for d in await expire_guest_areas(self, now or datetime.now(UTC))]

    async def _managed(
        self, model: str, what: str = "manage it"
    ) -> tuple[HostedModel, PrefectClient]:
        """``model`` and its workspace's client if this principal may manage it; else
        not found or refused."""
        from accelerator_prefect.access import may_manage
        from accelerator_prefect.errors import AccessDenied

        principal = await self.principal()
        hosted, client = await self.locate(model)
        if not may_manage(principal, hosted.latest.record.owner):
            raise AccessDenied(f"{model}: only its owner or an operator may {what}")
        return hosted, client

    async def versions(self, model: str) -> list[VersionInfo]:
        """Every version of ``model``, newest first, with status and run counts."""
        from accelerator_prefect.versions import version_infos

        hosted, client = await self.locate(model)
        return await version_infos(client, hosted)

    async def set_status(
        self, model: str, version: str, status: Status, replaced_by: str | None = None
    ) -> HostedVersion:
        """Move ``model@version`` in its lifecycle (its owner or an operator)."""
        from accelerator_prefect.versions import set_status

        hosted, client = await self._managed(model)
        principal = await self.principal()
        changed = await set_status(
            client, hosted, version, status, by=principal.name, replaced_by=replaced_by
        )
        await self._audit(
            "acc.model.status-changed",
            model=model,
            version=version,
            status=status.value,
            replaced_by=replaced_by,
        )
        return changed

    async def set_access(self, model: str, scope: Scope | str) -> HostedModel:
        """Set who may see and run ``model``, every version at once (its owner or an
        operator): no code changes and nothing is published again. Recorded on each
        version (who, when) and in the audit log."""
        from accelerator_prefect.errors import ValidationFailed
        from accelerator_prefect.manifest import Scope
        from accelerator_prefect.versions import set_scope

        try:
            wanted = Scope(scope)
        except ValueError:
            choices = ", ".join(s.value for s in Scope)
            raise ValidationFailed(
                [f"scope: {scope!r} is not a scope (choose one of: {choices})"],
                what=f"access change of {model}",
            ) from None
        hosted, client = await self._managed(model)
        before = hosted.latest.record.scope
        if all(v.record.scope == wanted for v in hosted.versions):
            return hosted  # already so: nothing changes, nothing is recorded
        principal = await self.principal()
        changed = await set_scope(client, hosted, wanted, by=principal.name)
        await self._audit(
            "acc.model.access-changed", model=model, scope=wanted.value, before=before.value
        )
        return changed

    async def share_link(
        self,
        model: str,
        *,
        version: str | None = None,
        expires_in: timedelta | None = None,
        guest_days: int = 30,
    ) -> SharedLink:
        from accelerator_prefect.directory import create_link
        from accelerator_prefect.errors import AccessDenied
        from accelerator_prefect.manifest import Scope

        hosted, _ = await self._managed(model)
        if version is not None and version not in {v.version for v in hosted.versions}:
            known = ", ".join(v.version for v in hosted.versions)
            raise NotFound(f"{model}: version {version!r} not found (published: {known})")
        if hosted.latest.record.scope == Scope.private:
            raise AccessDenied(
                f"{model} is private, so a link would open nothing; set `access.scope` to "
                "link (or project, or public) in its manifest and publish it again"
            )
        principal = await self.principal()
        record, token = await create_link(
            await self.client(),
            model,
            version=version,
            created_by=principal.name,
            expires_in=expires_in,
            guest_days=guest_days,
        )
        await self._audit(
            "acc.model.link-created",
            model=model,
            link=record.id,
            version=version,
            expires=record.expires.isoformat() if record.expires else None,
        )
        return SharedLink.of(record, token, self.catalog_url)

    async def links(self, model: str | None = None) -> list[SharedLink]:
        from accelerator_prefect.directory import list_links

        principal = await self.principal()
        found = await list_links(await self.client(), model)
        if not principal.operator:
            mine = {m.name for m in await self.catalog() if m.latest.record.owner == principal.name}
            found = [link for link in found if link.model in mine]
        return [SharedLink.of(link, None, self.catalog_url) for link in found]

    async def revoke_link(self, link_id: str) -> SharedLink:
        from accelerator_prefect.directory import read_link, revoke_link
        from accelerator_prefect.errors import AccessDenied

        client = await self.client()
        record = await read_link(client, link_id)
        try:
            await self._managed(record.model)
        except (NotFound, AccessDenied):  # the same answer as for an id that does not exist
            raise NotFound(f"link {link_id!r} not found") from None
        revoked = await revoke_link(client, link_id)
        await self._audit("acc.model.link-revoked", model=record.model, link=link_id)
        return SharedLink.of(revoked, None, self.catalog_url)

    async def runs(self, query: RunQuery, limit: int = 200) -> list[RunSummary]:
        """Runs this principal may read, newest first (see ``Accelerator.runs``)."""
        from accelerator_prefect.runs import read_runs

        principal = await self.principal()
        if query.model is not None:
            await self.get(query.model)
        spaces = list((await self.workspaces()).values())
        found = await asyncio.gather(*(read_runs(c, principal, query, limit=limit) for c in spaces))
        runs = sorted(
            (r for batch in found for r in batch),
            key=lambda r: r.started or r.created or datetime.min.replace(tzinfo=UTC),
            reverse=True,
        )
        return runs[:limit]

    async def usage(
        self, model: str, since: datetime, until: datetime | None = None
    ) -> list[UsageRow]:
        """Per version and day: runs, users, success rate, durations (owner or operator)."""
        from accelerator_prefect.usage import read_usage

        _, client = await self._managed(model, "read its usage")
        return await read_usage(client, model, since, until)

    async def projects(self) -> list[ProjectRecord]:
        from accelerator_prefect.access import require_operator
        from accelerator_prefect.directory import list_projects

        require_operator(await self.principal(), "list bound projects")
        return await list_projects(await self.client())

    async def bind_project(
        self,
        project: str,
        api_url: str,
        work_pool: str | None = None,
        credential: str | None = None,
    ) -> ProjectRecord:
        from prefect.blocks.system import Secret

        from accelerator_prefect.access import require_operator
        from accelerator_prefect.directory import ProjectRecord, bind_project

        require_operator(await self.principal(), f"bind project {project}")
        key_block = None
        if credential:  # kept in a Secret block here, read only by the platform's services
            key_block = f"acc-workspace-{project}"
            await Secret(value=credential).asave(
                key_block, overwrite=True, client=await self.client()
            )
        record = ProjectRecord(
            name=project, api_url=api_url.rstrip("/"), work_pool=work_pool, api_key_block=key_block
        )
        bound = await bind_project(await self.client(), record)
        self._bindings.clear()  # read afresh on next use
        return bound


def _moment(value: datetime | timedelta | None) -> datetime | None:
    """A moment, given as one or as how long ago."""
    return datetime.now(UTC) - value if isinstance(value, timedelta) else value


class _Loop:
    """One daemon thread running an event loop for every sync facade in the process."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=loop.run_forever, name="accelerator-client", daemon=True
                ).start()
                cls._loop = loop
            return cls._loop


class Accelerator:
    """The Python API of accelerator-prefect, acting as one principal.

    Example:
        >>> acc = Accelerator.connect()  # doctest: +SKIP
        >>> run = acc.launch("climate-downscaling",
        ...                  conf={"scenario": "ssp245", "target_region": "alps"})  # doctest: +SKIP
        >>> run.wait(timeout=120)  # doctest: +SKIP
        'Completed'
    """

    def __init__(self, core: AsyncAccelerator) -> None:
        self._core = core
        self._storage: Storage | None = None

    @classmethod
    def connect(
        cls,
        api_url: str | None = None,
        *,
        home: str | Path | None = None,
        token: str | None = None,
        link: str | None = None,
        trusted_user: str | None = None,
        url: str | None = None,
    ) -> Accelerator:
        """A client acting for the holder of ``token`` (``ACC_TOKEN``): through the portal
        at ``url`` (``ACC_URL``), as every user does; or, for the platform's services and
        operators, straight to the Prefect API at ``api_url`` or the local platform.

        ``link`` (a shared link's URL or token) opens the model it names; with a
        link and no token the client is a guest who sees only that model and the
        runs launched through the link. An unknown, revoked or expired token or
        link raises :class:`~accelerator_prefect.AccessDenied`, and so does no
        credential at all. ``trusted_user`` is for the platform's own services only
        (the catalog acting for a user its identity provider signed in).
        """
        settings = get_settings(home=home)
        portal = url or (None if api_url or trusted_user else settings.url)
        if portal:  # a user's client: HTTP to the portal, nothing else
            from accelerator_prefect.remote import PortalService

            if token is None and settings.token is not None:
                token = settings.token.get_secret_value()
            # One facade over either service: the portal's has the same methods users hold.
            core = cast(AsyncAccelerator, PortalService(portal, token=token, link=link))
        else:
            core = AsyncAccelerator.connect(
                api_url, home=home, token=token, link=link, trusted_user=trusted_user
            )
        accelerator = cls(core)
        accelerator._run(core.principal())  # a bad credential fails here
        return accelerator

    @property
    def principal(self) -> Principal:
        """Who this client acts for: name, projects and roles, operator or not."""
        return self._run(self._core.principal())

    @property
    def guest_session(self) -> GuestSession | None:
        """The guest session this client opened with the shared link it was given (on its
        first call), if it holds only a link: keep its ``token`` to be the same guest again
        (``Accelerator.connect(link=session.token)``)."""
        if self._core.guest_session is None and getattr(self._core, "_link", None):
            self.principal  # noqa: B018 (the first call opens it)
        return self._core.guest_session

    def exchange_link(self) -> GuestSession:
        """A new guest session of the shared link this client holds, without becoming it:
        for a service handing guest tokens to its own visitors."""
        return self._run(self._core.exchange_link())

    @property
    def user(self) -> str:
        return self.principal.name

    @property
    def api_url(self) -> str:
        return self._core.api_url

    @property
    def ui_url(self) -> str:
        return self._core.ui_url

    @property
    def storage(self) -> Storage:
        """``acc://`` storage: ``put``, ``get``, ``ls``, ``open``.

        Example:
            >>> acc.storage.put("stations/", "acc://meteo/incoming/")  # doctest: +SKIP
        """
        from accelerator_prefect.storage import Storage

        if self._storage is None and self._over_http:
            from accelerator_prefect.remote import PortalService, PortalStorage

            self._storage = cast(Storage, PortalStorage(self, cast(PortalService, self._core)))
        if self._storage is None:
            # Asked on every operation, so a revocation or a changed membership counts at once.
            self._storage = Storage(
                self._core.storage_fs(),
                principal=lambda: self.principal,
                runs=lambda ids: self._run(self._core.named_runs(ids)),
                quotas=lambda path, size: self._run(self._core.quota_problem(path, size)),
            )
        return self._storage

    @property
    def _over_http(self) -> bool:
        return type(self._core).__name__ == "PortalService"

    def _run(self, coro: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapped(), _Loop.get()).result()

    def _call(self, fn: Callable[[PrefectClient], Awaitable[T]]) -> T:
        async def with_client() -> T:
            return await fn(await self._core.client())

        return self._run(with_client())

    def close(self) -> None:
        self._run(self._core.aclose())

    def __enter__(self) -> Accelerator:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def publish(
        self,
        manifest: str | Path,
        *,
        allow_dirty: bool = False,
        force: bool = False,
        repository: str | None = None,
    ) -> PublishResult:
        """Publish ``deployments/<model>.yaml`` as the deployment ``<model>@<version>``."""
        return self._run(
            self._core.publish(
                manifest, allow_dirty=allow_dirty, force=force, repository=repository
            )
        )

    def check_session(self, token_id: str, issued: datetime) -> Principal:
        """Resume a browser session (the catalog's, on a reload); see
        :meth:`AsyncAccelerator.check_session`."""
        return self._run(self._core.check_session(token_id, issued))

    def end_sessions(self) -> None:
        """Sign this client's user out of every browser, everywhere."""
        self._run(self._core.end_sessions())

    def add_user(
        self,
        name: str,
        projects: dict[str, str] | None = None,
        operator: bool = False,
        oidc_subject: str | None = None,
    ) -> tuple[UserRecord, str]:
        """Add a user, e.g. ``add_user("alice", {"climate": "author"})``; returns their
        record and a new token (shown once). Operators only. ``oidc_subject``: their
        account's ``sub`` at the catalog's identity provider, for single sign-on."""
        return self._run(self._core.add_user(name, projects, operator, oidc_subject))

    def users(self) -> list[UserRecord]:
        """Every user in the directory (operators only)."""
        return self._run(self._core.users())

    def add_token(self, user: str, expires_in: timedelta | None = None) -> str:
        """A new token for ``user``, shown once (operators only)."""
        return self._run(self._core.add_token(user, expires_in))

    def revoke_token(self, token_id: str) -> None:
        """Revoke a token by its id (``acc_<id>_…``); the next request with it fails."""
        self._run(self._core.revoke_token(token_id))

    def catalog(self) -> list[HostedModel]:
        """Every hosted model, with its versions newest first."""
        return self._run(self._core.catalog())

    def get(self, model: str) -> HostedModel:
        """One hosted model, or :class:`~accelerator_prefect.NotFound`."""
        return self._run(self._core.get(model))

    def launch(
        self,
        model: str,
        conf: Any = None,
        *,
        version: str | None = None,
        inputs: Any = None,
        output: Any = None,
        secrets: Mapping[str, Any] | None = None,
        remember: bool = False,
        via: str = "python",
        idempotency_key: str | None = None,
    ) -> Run:
        """Launch a run of ``model`` (its newest active version unless ``version``).

        ``conf`` is checked against the version's schema, and ``inputs`` (a list of
        ``acc://`` URIs, folders ending with ``/``, or ``{"selected_files": [...],
        "selected_folders": [...]}``) against the model's input mapping and the
        files in storage; inputs and outputs must lie under your projects or your
        own area ``acc://users/<you>/``. ``secrets`` maps each secret the model
        declares to its value: the values go into Prefect Secret blocks, never into
        the run (``remember=True`` keeps them for your next launches of this model).
        A refused launch raises :class:`~accelerator_prefect.InvalidConf`,
        :class:`~accelerator_prefect.InvalidInputs` or
        :class:`~accelerator_prefect.InvalidSecrets` and creates no run.

        ``idempotency_key``: the same key from the same user makes at most one run; send
        a launch again with it after a lost answer (a dropped connection, a killed
        process) and get the run the first one made, if it made one.
        """
        from accelerator_prefect.runs import Run

        run_id, workspace, notice = self._run(
            self._core.launch(
                model,
                conf,
                version=version,
                inputs=inputs,
                output=output,
                secrets=secrets,
                remember=remember,
                via=via,
                idempotency_key=idempotency_key,
            )
        )
        if notice:
            warnings.warn(notice, DeprecationWarning, stacklevel=2)
        return Run(self, run_id, workspace)

    def versions(self, model: str) -> list[VersionInfo]:
        """Every version of ``model`` (archived too), newest first: status, replacement,
        publication, code commit and how many runs it has had."""
        return self._run(self._core.versions(model))

    def deprecate(self, model: str, version: str, replaced_by: str | None = None) -> HostedVersion:
        """Deprecate ``model@version``: it still runs, but every launch warns and names
        ``replaced_by`` (default: the closest newer active version). Owner or operator."""
        from accelerator_prefect.manifest import Status

        return self._run(self._core.set_status(model, version, Status.deprecated, replaced_by))

    def archive(self, model: str, version: str) -> HostedVersion:
        """Archive ``model@version``: hidden from the catalog, its deployment paused, new
        launches refused; its runs and outputs stay readable. Owner or operator."""
        from accelerator_prefect.manifest import Status

        return self._run(self._core.set_status(model, version, Status.archived))

    def restore(self, model: str, version: str) -> HostedVersion:
        """Make a deprecated or archived version active again. Owner or operator."""
        from accelerator_prefect.manifest import Status

        return self._run(self._core.set_status(model, version, Status.active))

    def set_access(self, model: str, scope: Scope | str) -> HostedModel:
        """Set who may see and run ``model`` (``private``, ``project``, ``link`` or
        ``public``), every version at once, without publishing again. Owner or operator."""
        return self._run(self._core.set_access(model, scope))

    def rerun(
        self, run_id: str, *, secrets: Mapping[str, Any] | None = None, via: str = "python"
    ) -> Run:
        """Run ``run_id`` again: the same version with the same conf and inputs, as you.

        The new run writes to the version's default output folder and is tagged
        ``acc:rerun-of:<run_id>``; secrets are not kept with a run, so give them
        again (or have them remembered). Compare the two with :meth:`diff`.
        """
        from accelerator_prefect.runs import Run

        new_id, workspace, notice = self._run(self._core.rerun(run_id, secrets=secrets, via=via))
        if notice:
            warnings.warn(notice, DeprecationWarning, stacklevel=2)
        return Run(self, new_id, workspace)

    def diff(self, a: str, b: str) -> RunDiff:
        """What differed between runs ``a`` and ``b``: code, DVC data, conf, inputs and
        output hashes (and package versions), from their provenance."""
        from accelerator_prefect.provenance import diff

        return diff(self.run(a).provenance(), self.run(b).provenance())

    def forget_secrets(self, model: str) -> int:
        """Delete the secrets you asked to be remembered for ``model``; returns how many."""
        return self._run(self._core.forget_secrets(model))

    def sweep_secrets(self) -> int:
        """Delete Secret blocks left by runs that ended too hard to delete their own
        (operators; ``acc up`` does it every minute). Returns how many went."""
        return self._run(self._core.sweep_secrets())

    def sweep_guest_areas(self) -> list[str]:
        """Remove the areas of guest sessions past their link's retention (operators;
        ``acc up`` does it every minute). Returns the ``acc://`` folders removed."""
        return self._run(self._core.sweep_guest_areas())

    def share_link(
        self,
        model: str,
        *,
        version: str | None = None,
        expires_in: timedelta | None = None,
        guest_days: int = 30,
    ) -> SharedLink:
        """A new link opening ``model`` (only ``version``, if given) to whoever holds it.

        Only the owner and operators share a model; ``link.url`` is shown once. Each
        holder who opens it is a guest of their own, for ``guest_days``: then their
        files and their runs' outputs are removed.

        Example:
            >>> link = acc.share_link("climate-downscaling",
            ...                       expires_in=timedelta(days=30))  # doctest: +SKIP
            >>> guest = Accelerator.connect(link=link.url)  # doctest: +SKIP
        """
        return self._run(
            self._core.share_link(
                model, version=version, expires_in=expires_in, guest_days=guest_days
            )
        )

    def links(self, model: str | None = None) -> list[SharedLink]:
        """The links to models you manage (every link, for operators)."""
        return self._run(self._core.links(model))

    def revoke_link(self, link_id: str) -> SharedLink:
        """Revoke a link by its id; the next request holding it is refused."""
        return self._run(self._core.revoke_link(link_id))

    def runs(
        self,
        model: str | None = None,
        *,
        version: str | None = None,
        user: str | None = None,
        state: str | Sequence[str] | None = None,
        since: datetime | timedelta | None = None,
        until: datetime | None = None,
        limit: int = 200,
        phases: bool = False,
    ) -> list[RunSummary]:
        """The runs you may read, newest first: yours, every run of the models you own,
        and (operators) all; a guest sees the runs launched through their link.

        Narrow them by ``model``, ``version``, launching ``user``, ``state`` (a state
        name or several, e.g. ``"Failed"``) and a time window: ``since`` (a moment,
        or how long ago, e.g. ``timedelta(days=7)``) and ``until``. The server filters.
        ``phases``: also how long each waited for a worker (``queued``) and was being
        started (``starting``) before it computed (``duration``); one more read per run.
        """
        from accelerator_prefect.runs import RunQuery

        query = RunQuery(
            model=model,
            version=version,
            user=user,
            states=(state,) if isinstance(state, str) else tuple(state or ()),
            since=_moment(since),
            until=until,
            phases=phases,
        )
        return self._run(self._core.runs(query, limit))

    def audit(self, model: str, limit: int = 500) -> list[AuditEntry]:
        """``model``'s audit log, newest first: who published it, changed its lifecycle,
        shared or revoked a link, launched or cancelled a run. Its owner and operators."""
        return self._run(self._core.audit(model, limit))

    def usage(
        self,
        model: str,
        since: datetime | timedelta = timedelta(days=30),
        until: datetime | None = None,
    ) -> list[UsageRow]:
        """How ``model`` has been used, per version and per day (UTC), newest first: finished
        runs, distinct users, success rate, median and 95th-percentile duration of the
        completed ones. For its owner and operators.

        Example:
            >>> for row in acc.usage("climate-downscaling", since=timedelta(days=7)):
            ...     print(row.version, row.day, row.runs, row.success_rate)  # doctest: +SKIP
        """
        return self._run(self._core.usage(model, _moment(since) or datetime.now(UTC), until))

    def run(self, run_id: str) -> Run:
        """A handle on an existing run you launched, of a model you own, or (operators) any.

        Any other run is :class:`~accelerator_prefect.NotFound`, as if it did not exist.
        """
        from accelerator_prefect.runs import Run

        workspace = self._run(self._core.visible_run(run_id))
        return Run(self, run_id, workspace)

    def storage_usage(self) -> list[AreaUsage]:
        """What each storage area you may use holds, against its quota (operators: every
        area that holds files)."""
        return self._run(self._core.storage_usage())

    def set_policy(
        self,
        project: str,
        *,
        keep_outputs: str | None = None,
        keep_uploads: str | None = None,
        quota: str | None = None,
    ) -> PolicyRecord:
        """Set how long ``project`` keeps run outputs and uploads, and how much it may
        store (operators). Only what is given changes; ``"default"`` hands a value back to
        the platform's default.

        Example:
            >>> acc.set_policy("climate", keep_outputs="90 d", quota="500 GB")  # doctest: +SKIP
        """
        return self._run(
            self._core.set_policy(
                project, keep_outputs=keep_outputs, keep_uploads=keep_uploads, quota=quota
            )
        )

    def policies(self) -> list[PolicyRecord]:
        """Every project's own retention and quota (operators)."""
        return self._run(self._core.policies())

    def set_user_quota(self, user: str, quota: str | None) -> UserRecord:
        """Set the most ``user``'s own area may hold, e.g. ``"5 GB"`` (operators)."""
        return self._run(self._core.set_user_quota(user, quota))

    def sweep(self, dry_run: bool = False) -> list[Deleted]:
        """Delete run outputs, uploads and guest areas past their retention, and record
        what was deleted (operators). ``dry_run``: only say what would go."""
        return self._run(self._core.sweep(dry_run=dry_run))

    def projects(self) -> list[ProjectRecord]:
        """The projects bound to a Prefect API of their own (operators only)."""
        return self._run(self._core.projects())

    def bind_project(
        self,
        project: str,
        api_url: str,
        work_pool: str | None = None,
        credential: str | None = None,
    ) -> None:
        """Bind ``project`` to its own Prefect API (operators): its models are published,
        launched and run there, and still listed in one catalog. ``credential`` is that
        API's auth string (a Prefect server) or API key (Prefect Cloud)."""
        self._run(self._core.bind_project(project, api_url, work_pool, credential))
