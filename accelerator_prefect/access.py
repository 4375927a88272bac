"""Who is asking, and what they may see and do: the one place access is decided.

A :class:`Principal` is a signed-in user (with their projects and roles), an
operator, or a guest holding a shared link. :func:`may_see` decides visibility
and :func:`may_run` launching; every front end asks them, and a model a
principal may not see is *not found* for them, never "forbidden". Listing first
narrows the deployments in the server by tags (:func:`visible_tags`), then
applies the exact rules here. :func:`may_use_path` decides which ``acc://``
folders a principal may select inputs from and write outputs to;
:func:`may_read_path` adds what they may only read: the sample inputs of the
model versions they may run (:func:`readable_samples`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from accelerator_prefect.manifest import Scope

USERS_AREA = "users"  # acc://users/<name>/: each user's own storage
LINKS_AREA = "links"  # acc://links/<link id>/<guest id>/: each guest's own scratch space
RESERVED_AREAS = frozenset({USERS_AREA, LINKS_AREA})


class Role(StrEnum):
    """A user's role in one project."""

    member = "member"  # sees and runs the project's models
    author = "author"  # also publishes into the project


@dataclass(frozen=True)
class LinkGrant:
    """What a valid shared link opens: one model, or one version of it; for a guest
    session (a guest token the link was exchanged for), which ``guest`` holds it."""

    link_id: str
    model: str
    version: str | None = None
    guest: str | None = None

    def opens(self, model: str, version: str) -> bool:
        return self.model == model and self.version in (None, version)


@dataclass(frozen=True)
class Principal:
    """Who is asking: a user with their projects (and roles), an operator, or a guest.

    A guest is nobody in the directory: they hold a guest token, exchanged for a
    shared link, and reach only what the link opens, in an area of their own. Each
    exchange is another guest. A signed-in user may hold links too.
    """

    name: str
    projects: dict[str, Role] = field(default_factory=dict)
    operator: bool = False
    links: tuple[LinkGrant, ...] = ()
    guest: bool = False

    def member_of(self, project: str) -> bool:
        return self.operator or (not self.guest and project in self.projects)

    def author_in(self, project: str) -> bool:
        return self.operator or (not self.guest and self.projects.get(project) == Role.author)

    def link_for(self, model: str, version: str) -> LinkGrant | None:
        """The link this principal holds that opens ``model@version``, if any."""
        return next((g for g in self.links if g.opens(model, version)), None)

    @property
    def own_area(self) -> str:
        """Their own storage folder (relative to ``acc://``): the user's, or the guest's
        under their link."""
        if self.guest and self.links:
            grant = self.links[0]
            return f"{LINKS_AREA}/{grant.link_id}/{grant.guest or 'shared'}"
        return f"{USERS_AREA}/{self.name}"


def guest(grant: LinkGrant) -> Principal:
    """The principal of the guest holding ``grant``: one identity per guest session."""
    name = f"guest-{grant.link_id}" + (f"-{grant.guest}" if grant.guest else "")
    return Principal(name, links=(grant,), guest=True)


def may_see(
    principal: Principal, *, model: str, version: str, owner: str, project: str, scope: Scope
) -> bool:
    """Whether ``principal`` may see (and so find) one version of a model."""
    if principal.operator or (principal.name == owner and not principal.guest):
        return True
    if scope != Scope.private and principal.link_for(model, version) is not None:
        return True  # a link opens what it names, unless the owner made it private since
    if principal.guest:
        return False
    if scope == Scope.public:
        return True
    if scope == Scope.project:
        return principal.member_of(project)
    return False  # private; link models are reached through a link only


def may_run(
    principal: Principal, *, model: str, version: str, owner: str, project: str, scope: Scope
) -> bool:
    """Whether ``principal`` may launch it: whoever may see a version may run it."""
    return may_see(
        principal, model=model, version=version, owner=owner, project=project, scope=scope
    )


def may_manage(principal: Principal, owner: str) -> bool:
    """Whether ``principal`` may manage a model (share it, change its lifecycle)."""
    return principal.operator or (principal.name == owner and not principal.guest)


def may_publish(principal: Principal, owner: str, project: str) -> bool:
    """Authors publish into their projects, as themselves; operators for anyone."""
    return principal.operator or (principal.author_in(project) and principal.name == owner)


def may_read_run(
    principal: Principal,
    *,
    launched_by: str | None,
    model_owner: str | None,
    link_id: str | None = None,
) -> bool:
    """A run is read by whoever launched it, the owner of its model, and operators;
    a guest reads the runs they launched through their link, never another guest's."""
    if principal.operator:
        return True
    if principal.guest:
        return (
            link_id is not None
            and launched_by == principal.name
            and any(g.link_id == link_id for g in principal.links)
        )
    return principal.name in {launched_by, model_owner}


def may_cancel_run(
    principal: Principal,
    *,
    launched_by: str | None,
    model_owner: str | None,
    link_id: str | None = None,
) -> bool:
    """A run is cancelled by whoever launched it (a guest: through their link), the owner
    of its model, and operators: the same people who read it."""
    return may_read_run(
        principal, launched_by=launched_by, model_owner=model_owner, link_id=link_id
    )


def may_use_path(principal: Principal, relative: str) -> bool:
    """Whether ``principal`` may read inputs from and write outputs to ``acc://relative``.

    Users work under the projects they belong to and their own area
    (``acc://users/<name>/``); guests only in their own area under their link;
    operators everywhere.
    """
    if principal.operator:
        return True
    top = relative.split("/", 1)[0]
    if top not in RESERVED_AREAS and principal.member_of(top):
        return True
    area = principal.own_area
    return relative == area or relative.startswith(area + "/")


class SampleSource(Protocol):
    """A hosted version as far as its samples go (a ``catalog.HostedVersion``)."""

    @property
    def input_samples(self) -> list[str]: ...

    @property
    def status(self) -> str: ...

    def runnable_by(self, principal: Principal) -> bool: ...


def readable_samples(principal: Principal, versions: Iterable[SampleSource]) -> tuple[str, ...]:
    """The sample paths (relative to ``acc://``; a folder ends with ``/``) that
    ``principal`` may read: those of the ``versions`` they may run."""
    found: list[str] = []
    for version in versions:
        if version.status == "archived":  # takes no runs: its samples close with it
            continue
        if version.runnable_by(principal):
            found += (s.removeprefix("acc://") for s in version.input_samples)
    # Checked when the manifest was read; checked again, as a door must not open wide.
    return tuple(s for s in dict.fromkeys(found) if _narrow(s))


def _narrow(sample: str) -> bool:
    """A sample names a file or folder below a project folder, nothing wider."""
    parts = sample.removesuffix("/").split("/")
    return (
        len(parts) >= 2
        and parts[0] not in RESERVED_AREAS
        and not any(p in ("", ".", "..") or "\\" in p for p in parts)
    )


def in_sample(relative: str, sample: str) -> bool:
    """Whether ``acc://relative`` is the sample ``sample`` or lies inside it (a folder
    sample ends with ``/``); never a path beside it or above it."""
    if sample.endswith("/"):
        return relative == sample.rstrip("/") or relative.startswith(sample)
    return relative == sample


def may_read_path(principal: Principal, relative: str, samples: Iterable[str] = ()) -> bool:
    """Whether ``principal`` may read (list, open, take as an input) ``acc://relative``:
    what they may use, and the ``samples`` they may read (see :func:`readable_samples`),
    which they never write."""
    return may_use_path(principal, relative) or any(in_sample(relative, s) for s in samples)


def usable_areas(principal: Principal) -> list[str]:
    """The ``acc://`` folders ``principal`` may use, for messages and listings."""
    if principal.operator:
        return ["acc://"]
    projects = [] if principal.guest else [f"acc://{p}/" for p in sorted(principal.projects)]
    return [*projects, f"acc://{principal.own_area}/"]


def require_operator(principal: Principal, what: str) -> None:
    """Refuse ``what`` unless ``principal`` operates the platform."""
    if not principal.operator:
        from accelerator_prefect.errors import AccessDenied

        raise AccessDenied(f"{what}: only an operator may do this")


def visible_tags(principal: Principal) -> list[str] | None:
    """Deployment tags of which a visible model carries at least one (``None``: all).

    A superset the server can filter on; :func:`may_see` then decides exactly.
    """
    if principal.operator:
        return None
    linked = sorted({f"acc:model:{g.model}" for g in principal.links})
    if principal.guest:
        return linked
    return [
        "acc:scope:public",
        f"acc:owner:{principal.name}",
        *(f"acc:members:{project}" for project in sorted(principal.projects)),
        *linked,
    ]
