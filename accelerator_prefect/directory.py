"""The directory: users, their personal API tokens, shared links and projects.

All of it lives in Prefect's database as Variables, so every machine of an
installation sees the same directory:

- ``acc-user-<name>``: a user's projects, roles and whether they operate the platform;
- ``acc-token-<id>``: a personal token, ``acc_<id>_<secret>``;
- ``acc-link-<id>``: a shared link to a model, ``accl_<id>_<secret>``. Its holders
  exchange it for guest tokens (``accg_<link id>_<guest id>_<signature>``), one per
  guest session: nothing is stored for a guest, whose token is signed with a key only
  the link's record holds;
- ``acc-project-<name>``: a project bound to its own Prefect API (a workspace);
- ``acc-policy-<name>``: how long a project keeps run outputs and uploads, and how much
  it may store (see :mod:`accelerator_prefect.retention`).

Tokens and links keep only a salted scrypt hash of their secret, so a copy of
the database reveals none; each is shown once, when created. Every way a token
or link can be wrong gets the same answer, so nobody learns which exist.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, field_validator

from accelerator_prefect.access import RESERVED_AREAS, LinkGrant, Principal, Role
from accelerator_prefect.errors import AccessDenied, NotFound

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

USER_PREFIX = "acc-user-"
TOKEN_PREFIX = "acc-token-"
LINK_PREFIX = "acc-link-"
PROJECT_PREFIX = "acc-project-"
POLICY_PREFIX = "acc-policy-"
_TOKEN = re.compile(r"^acc_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_LINK = re.compile(r"^accl_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_GUEST = re.compile(r"^accg_([0-9a-f]{12})_([0-9a-f]{16})_([0-9a-f]{32})$")
_ID = re.compile(r"^[0-9a-f]{12}$")
GUEST_ID = re.compile(r"^[0-9a-f]{16}$")  # the issue time (8 hex digits), then 8 random
GUEST_DAYS = 30  # how long a guest session, and its area, last unless the link says
_USER = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# scrypt at 16 MiB of memory: slow to guess offline, ~50 ms to check.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
INVALID_TOKEN = "invalid or expired token; ask an operator for a new one"
INVALID_LINK = "this link is invalid, expired or revoked; ask the model's owner for a new one"
EXCHANGE_FIRST = (
    "a shared link's token opens guest sessions: exchange it first (POST /api/v1/guest-sessions "
    "with it), then send the guest token (accg_…) it gives"
)
NOT_A_LINK = "send the shared link's own token (accl_…) to open a guest session"
GUEST_ENDED = (
    "this guest session has ended (its link was revoked or the session is past its "
    "retention); open the shared link again"
)


class UserRecord(BaseModel):
    """A user as the directory keeps them."""

    name: str
    projects: dict[str, Role] = {}
    operator: bool = False
    # "Sign out everywhere": browser sessions begun before this moment no longer hold.
    signed_out_at: datetime | None = None
    # The identity provider's stable subject (its `sub` claim) single sign-on maps here.
    oidc_subject: str | None = None
    # Most their own area (acc://users/<name>/) may hold, e.g. "5 GB"; None: the
    # platform's default (the setting `user_quota`).
    quota: str | None = None

    @field_validator("projects")
    @classmethod
    def _project_names(cls, value: dict[str, Role]) -> dict[str, Role]:
        for project in value:
            if project in RESERVED_AREAS or not _USER.match(project):
                raise ValueError(
                    f"project {project!r}: expected lowercase letters, digits and dashes, "
                    f"not one of {', '.join(sorted(RESERVED_AREAS))}"
                )
        return value

    def principal(self) -> Principal:
        return Principal(self.name, dict(self.projects), self.operator)


class _Credential(BaseModel):
    """What tokens and links share: an id, the salted hash of a secret, a lifetime."""

    id: str
    salt: str
    hash: str
    created: datetime
    expires: datetime | None = None
    revoked: bool = False

    @property
    def active(self) -> bool:
        expired = self.expires is not None and self.expires <= datetime.now(UTC)
        return not (self.revoked or expired)


def _new_credential(expires_in: timedelta | None) -> tuple[dict[str, Any], str]:
    """The fields of a new credential, and its secret (shown once, then only hashed)."""
    secret, salt, now = secrets.token_urlsafe(32), secrets.token_hex(16), datetime.now(UTC)
    fields = {
        "id": secrets.token_hex(6),
        "salt": salt,
        "hash": _digest(secret, salt),
        "created": now,
        "expires": now + expires_in if expires_in else None,
    }
    return fields, secret


class TokenRecord(_Credential):
    """A token as the directory keeps it: its owner and the hash of its secret."""

    user: str


def _digest(secret: str, salt: str) -> str:
    return hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt), **_SCRYPT).hex()


async def _read(client: PrefectClient, name: str) -> Any:
    variable = await client.read_variable_by_name(name)
    return None if variable is None else variable.value


async def _write(client: PrefectClient, name: str, value: dict[str, Any], tag: str) -> None:
    from prefect.client.schemas.actions import VariableCreate, VariableUpdate

    if await client.read_variable_by_name(name) is None:
        await client.create_variable(VariableCreate(name=name, value=value, tags=[tag]))
    else:
        await client.update_variable(VariableUpdate(name=name, value=value, tags=[tag]))


async def read_user(client: PrefectClient, name: str) -> UserRecord:
    value = await _read(client, USER_PREFIX + name) if _USER.match(name) else None
    if value is None:
        raise NotFound(f"user {name!r} not found")
    return UserRecord.model_validate(value)


async def save_user(client: PrefectClient, user: UserRecord) -> UserRecord:
    """Create or replace a user (their projects and roles)."""
    if not _USER.match(user.name) or user.name.startswith("guest-"):
        raise ValueError(
            f"user {user.name!r}: expected lowercase letters, digits and dashes, "
            "not starting with guest- (the names of link guests)"
        )
    await _write(client, USER_PREFIX + user.name, user.model_dump(mode="json"), "acc:user")
    return user


async def read_named(
    client: PrefectClient, collection: str, prefix: str, **body: Any
) -> list[dict[str, Any]]:
    """Every object of ``collection`` (``variables``, ``block_documents``) whose name
    starts with ``prefix``, filtered in the server and read page by page."""
    found: list[dict[str, Any]] = []
    offset, page = 0, 200
    while True:
        response = await client.request(
            "POST",
            f"/{collection}/filter",
            json={
                collection: {"name": {"like_": prefix}},
                **body,
                "offset": offset,
                "limit": page,
            },
        )
        batch = response.json()
        found += [item for item in batch if str(item["name"]).startswith(prefix)]
        if len(batch) < page:
            return found
        offset += page


async def _values(client: PrefectClient, prefix: str) -> list[Any]:
    """The values of every Variable named ``<prefix>…``."""
    return [v["value"] for v in await read_named(client, "variables", prefix)]


async def list_users(client: PrefectClient) -> list[UserRecord]:
    users = [UserRecord.model_validate(v) for v in await _values(client, USER_PREFIX)]
    return sorted(users, key=lambda u: u.name)


def _oidc_refusal(subject: str) -> AccessDenied:
    linked = f" (acc users add NAME --oidc-subject {subject})" if subject else ""
    return AccessDenied(
        "your identity provider's account is not linked to a user here; ask an operator to "
        f"link it{linked}"
    )


async def oidc_user_name(
    client: PrefectClient, claims: Mapping[str, Any], email_domains: Iterable[str]
) -> str:
    """The directory user an identity provider's sign-in (its ID token's ``claims``) is:
    the user whose recorded subject is the token's stable ``sub``; else, only when the
    provider says the e-mail address is verified and its domain is one of
    ``email_domains``, the user named by the part before the ``@``. Names the user picks
    (``preferred_username``) never count, and an e-mail never maps to an operator."""
    subject = str(claims.get("sub") or "")
    if subject:
        for user in await list_users(client):
            if user.oidc_subject == subject:
                return user.name
    email = str(claims.get("email") or "")
    local, _, domain = email.rpartition("@")
    allowed = {d.strip().lower().lstrip("@") for d in email_domains if d.strip()}
    if not (local and claims.get("email_verified") is True and domain.lower() in allowed):
        raise _oidc_refusal(subject)
    name = local.lower()
    if not _USER.match(name):
        raise _oidc_refusal(subject)
    try:
        user = await read_user(client, name)
    except NotFound:
        return name  # signed in, in no project yet
    if user.operator or (user.oidc_subject is not None and user.oidc_subject != subject):
        raise _oidc_refusal(subject)  # an operator, or someone else's account
    return name


async def create_token(
    client: PrefectClient, user: str, expires_in: timedelta | None = None
) -> tuple[TokenRecord, str]:
    """A new token for ``user``: its record and the token itself (shown once)."""
    await read_user(client, user)
    fields, secret = _new_credential(expires_in)
    record = TokenRecord(user=user, **fields)
    await _write(client, TOKEN_PREFIX + record.id, record.model_dump(mode="json"), "acc:token")
    return record, f"acc_{record.id}_{secret}"


async def revoke_token(client: PrefectClient, token_id: str) -> TokenRecord:
    """Revoke a token by its id (the ``<id>`` in ``acc_<id>_…``); effective at once."""
    value = await _read(client, TOKEN_PREFIX + token_id) if _ID.match(token_id) else None
    if value is None:
        raise NotFound(f"token {token_id!r} not found")
    record = TokenRecord.model_validate(value).model_copy(update={"revoked": True})
    await _write(client, TOKEN_PREFIX + token_id, record.model_dump(mode="json"), "acc:token")
    return record


async def _read_many(client: PrefectClient, names: list[str]) -> dict[str, Any]:
    """The values of those Variables ``names`` that exist, read in one request."""
    response = await client.request(
        "POST",
        "/variables/filter",
        json={"variables": {"name": {"any_": names}}, "limit": len(names)},
    )
    return {item["name"]: item["value"] for item in response.json()}


async def _token_and_owner(
    client: PrefectClient, token_id: str | None, user: str | None
) -> tuple[TokenRecord | None, UserRecord | None]:
    """The record of the token ``token_id`` and of ``user``, read together in one request
    (``None`` for either that does not exist or has a malformed name)."""
    token_name = TOKEN_PREFIX + token_id if token_id and _ID.match(token_id) else None
    user_name = USER_PREFIX + user if user and _USER.match(user) else None
    names = [n for n in (token_name, user_name) if n is not None]
    values = await _read_many(client, names) if names else {}
    token_value = values.get(token_name) if token_name else None
    user_value = values.get(user_name) if user_name else None
    return (
        TokenRecord.model_validate(token_value) if token_value is not None else None,
        UserRecord.model_validate(user_value) if user_value is not None else None,
    )


async def authenticate(
    client: PrefectClient,
    token: str,
    verified: set[tuple[str, str]] | None = None,
    user: str | None = None,
) -> Principal:
    """The principal a token stands for, or :class:`AccessDenied` (always the same).

    The token's record is read on every call, so a revocation counts at once;
    ``verified`` remembers (token, hash) pairs already checked, so a client
    pays the slow hash once per token, not per request. ``user``: whom the token
    stood for last time (a token never changes hands), read in the same request.
    """
    match = _TOKEN.match(token.strip())
    record, person = await _token_and_owner(client, match.group(1) if match else None, user)
    salt, stored = (record.salt, record.hash) if record else (None, None)
    if not _matches(match, salt, stored, verified) or record is None or not record.active:
        raise AccessDenied(INVALID_TOKEN)
    if person is not None and person.name == record.user:
        return person.principal()
    try:
        return (await read_user(client, record.user)).principal()
    except NotFound:
        raise AccessDenied(INVALID_TOKEN) from None


SESSION_ENDED = "your session has ended; sign in again"


def token_id(token: str) -> str | None:
    """The id part of a personal token (``acc_<id>_<secret>``), or ``None``."""
    match = _TOKEN.match(token.strip())
    return match.group(1) if match else None


async def check_session(
    client: PrefectClient, user: str, token: str, issued: datetime
) -> Principal:
    """Whom a browser session stands for: ``user``, who signed in with the token whose id is
    ``token`` at ``issued``. It holds while that token is active and theirs, and they have
    not signed out everywhere since; else :class:`AccessDenied` (always the same)."""
    record, person = await _token_and_owner(client, token, user)
    if record is None or person is None:
        raise AccessDenied(SESSION_ENDED)
    ended = person.signed_out_at is not None and issued <= person.signed_out_at
    if not record.active or record.user != user or ended:
        raise AccessDenied(SESSION_ENDED)
    return person.principal()


async def end_sessions(client: PrefectClient, user: str) -> None:
    """Sign ``user`` out everywhere: every browser session they began before now ends."""
    person = await read_user(client, user)
    person.signed_out_at = datetime.now(UTC)
    await save_user(client, person)


def _matches(
    match: re.Match[str] | None,
    salt: str | None,
    stored: str | None,
    verified: set[tuple[str, str]] | None,
) -> bool:
    """Whether the secret in ``match`` hashes to ``stored`` (constant work when unknown)."""
    secret = match.group(2) if match else ""
    if stored is not None and verified is not None and (secret, stored) in verified:
        return True
    # Spend the same work whether or not the record exists: no timing oracle.
    presented = _digest(secret, salt or "00" * 16)
    if stored is None or not hmac.compare_digest(presented, stored):
        return False
    if verified is not None:
        verified.add((secret, stored))
    return True


class LinkRecord(_Credential):
    """A shared link as the directory keeps it: what it opens and the hash of its secret."""

    model: str
    version: str | None = None
    created_by: str
    # How long each guest session lasts, and its area with its runs' files is kept.
    guest_days: int = GUEST_DAYS

    def grant(self, guest: str | None = None) -> LinkGrant:
        return LinkGrant(self.id, self.model, self.version, guest)

    def guest_expires(self, guest: str) -> datetime:
        """When the guest session ``guest`` (and its area) ends."""
        return guest_issued(guest) + timedelta(days=self.guest_days)


async def create_link(
    client: PrefectClient,
    model: str,
    *,
    version: str | None,
    created_by: str,
    expires_in: timedelta | None = None,
    guest_days: int = GUEST_DAYS,
) -> tuple[LinkRecord, str]:
    """A new link to ``model`` (one ``version`` of it, if given): its record and its
    token (shown once). Each guest session it opens lasts ``guest_days``."""
    if guest_days < 1:
        raise ValueError(f"guest_days: expected a whole number of days ≥ 1, got {guest_days}")
    fields, secret = _new_credential(expires_in)
    record = LinkRecord(
        model=model, version=version, created_by=created_by, guest_days=guest_days, **fields
    )
    await _write(client, LINK_PREFIX + record.id, record.model_dump(mode="json"), "acc:link")
    return record, f"accl_{record.id}_{secret}"


async def list_links(client: PrefectClient, model: str | None = None) -> list[LinkRecord]:
    links = [LinkRecord.model_validate(v) for v in await _values(client, LINK_PREFIX)]
    return sorted(
        (link for link in links if model is None or link.model == model),
        key=lambda link: link.created,
    )


async def _stored_link(client: PrefectClient, link_id: str | None) -> LinkRecord | None:
    """The record of link ``link_id``, if there is one (an id of the wrong shape: none)."""
    value = await _read(client, LINK_PREFIX + link_id) if link_id and _ID.match(link_id) else None
    return LinkRecord.model_validate(value) if value is not None else None


async def read_link(client: PrefectClient, link_id: str) -> LinkRecord:
    record = await _stored_link(client, link_id)
    if record is None:
        raise NotFound(f"link {link_id!r} not found")
    return record


async def revoke_link(client: PrefectClient, link_id: str) -> LinkRecord:
    """Revoke a link by its id; the next request holding it is refused."""
    record = (await read_link(client, link_id)).model_copy(update={"revoked": True})
    await _write(client, LINK_PREFIX + link_id, record.model_dump(mode="json"), "acc:link")
    return record


def link_token(value: str) -> str:
    """The link token in ``value``: the token itself, or a link URL carrying it."""
    from urllib.parse import parse_qs, urlsplit

    value = value.strip()
    if "://" in value or "?" in value:
        return (parse_qs(urlsplit(value).query).get("link") or [""])[0]
    return value


async def open_link(
    client: PrefectClient, token: str, verified: set[tuple[str, str]] | None = None
) -> LinkGrant:
    """What a link token (or link URL) opens, or :class:`AccessDenied` (always the same).

    Read on every call, like :func:`authenticate`: a revoked link stops at once.
    """
    return (await _link_record(client, token, verified)).grant()


async def _link_record(
    client: PrefectClient, token: str, verified: set[tuple[str, str]] | None
) -> LinkRecord:
    match = _LINK.match(link_token(token))
    record = await _stored_link(client, match.group(1) if match else None)
    salt, stored = (record.salt, record.hash) if record else (None, None)
    if not _matches(match, salt, stored, verified) or record is None or not record.active:
        raise AccessDenied(INVALID_LINK)
    return record


def guest_issued(guest: str) -> datetime:
    """When the guest session ``guest`` began (its id starts with the time, in hex)."""
    return datetime.fromtimestamp(int(guest[:8], 16), UTC)


def _guest_signature(record: LinkRecord, guest: str) -> str:
    # Keyed by the hash of the link's secret, which only the directory holds: a link's
    # holder cannot make a guest token, and revoking the link ends all of them.
    key = hashlib.sha256(b"acc guest sessions\0" + bytes.fromhex(record.hash)).digest()
    message = f"{record.id}:{guest}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:32]


def is_guest_token(value: str) -> bool:
    return value.startswith("accg_")


async def exchange_link(
    client: PrefectClient,
    token: str,
    verified: set[tuple[str, str]] | None = None,
    *,
    at: datetime | None = None,
) -> tuple[str, LinkGrant, datetime]:
    """A new guest session for the holder of link ``token``: its guest token, what it
    opens, and when it ends. Every exchange is another guest."""
    record = await _link_record(client, token, verified)
    issued = int((at or datetime.now(UTC)).timestamp())
    guest = f"{issued:08x}{secrets.token_hex(4)}"
    signed = f"accg_{record.id}_{guest}_{_guest_signature(record, guest)}"
    return signed, record.grant(guest), record.guest_expires(guest)


async def open_guest(client: PrefectClient, token: str) -> LinkGrant:
    """What the guest token ``token`` opens, for which guest; :class:`AccessDenied` (always
    the same) once its link is revoked or expired, or the session is past its retention."""
    match = _GUEST.match(token.strip())
    record = await _stored_link(client, match.group(1) if match else None)
    if match is None or record is None:
        raise AccessDenied(GUEST_ENDED)
    guest = match.group(2)
    signed = hmac.compare_digest(_guest_signature(record, guest), match.group(3))
    if not signed or not record.active or record.guest_expires(guest) <= datetime.now(UTC):
        raise AccessDenied(GUEST_ENDED)
    return record.grant(guest)


class ProjectRecord(BaseModel):
    """A project bound to its own Prefect API (a Prefect Cloud workspace or another
    server): its models are published, launched and run there."""

    name: str
    api_url: str
    work_pool: str | None = None
    api_key_block: str | None = None  # a Secret block (here) holding the API key, if any


async def bind_project(client: PrefectClient, project: ProjectRecord) -> ProjectRecord:
    if project.name in RESERVED_AREAS or not _USER.match(project.name):
        raise ValueError(f"project {project.name!r}: expected lowercase letters, digits and dashes")
    await _write(
        client, PROJECT_PREFIX + project.name, project.model_dump(mode="json"), "acc:project"
    )
    return project


async def list_projects(client: PrefectClient) -> list[ProjectRecord]:
    """Every project bound to a workspace of its own (the others live on this server)."""
    projects = [ProjectRecord.model_validate(v) for v in await _values(client, PROJECT_PREFIX)]
    return sorted(projects, key=lambda p: p.name)


class PolicyRecord(BaseModel):
    """A project's own retention and quota, where they differ from the platform's
    defaults (the settings ``keep_outputs``, ``keep_uploads``, ``project_quota``).

    Durations such as ``"90 d"``, sizes such as ``"10 GB"``; ``None`` follows the default.
    """

    name: str
    keep_outputs: str | None = None
    keep_uploads: str | None = None
    quota: str | None = None

    @field_validator("keep_outputs", "keep_uploads")
    @classmethod
    def _period(cls, value: str | None) -> str | None:
        from accelerator_prefect.retention import check_period

        return check_period(value) if value is not None else None

    @field_validator("quota")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        from accelerator_prefect.retention import check_size

        return check_size(value) if value is not None else None


async def save_policy(client: PrefectClient, policy: PolicyRecord) -> PolicyRecord:
    if policy.name in RESERVED_AREAS or not _USER.match(policy.name):
        raise ValueError(f"project {policy.name!r}: expected lowercase letters, digits and dashes")
    await _write(client, POLICY_PREFIX + policy.name, policy.model_dump(mode="json"), "acc:policy")
    return policy


async def list_policies(client: PrefectClient) -> list[PolicyRecord]:
    """Every project's own retention and quota (projects without one follow the defaults)."""
    policies = [PolicyRecord.model_validate(v) for v in await _values(client, POLICY_PREFIX)]
    return sorted(policies, key=lambda p: p.name)
