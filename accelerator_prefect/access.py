"""Who is asking, and what they may see and do: the one place access is decided.

A :class:`Principal` is a signed-in user (with their projects and roles) or an
operator. :func:`may_see` decides visibility and :func:`may_run` launching;
every front end asks them, and a model a principal may not see is *not found*
for them, never "forbidden". Listing first narrows the deployments in the
server by tags (:func:`visible_tags`), then applies the exact rules here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from accelerator_prefect.manifest import Scope


class Role(StrEnum):
    """A user's role in one project."""

    member = "member"  # sees and runs the project's models
    author = "author"  # also publishes into the project


@dataclass(frozen=True)
class Principal:
    """A signed-in user: their projects (and roles in them), or an operator."""

    name: str
    projects: dict[str, Role] = field(default_factory=dict)
    operator: bool = False

    def member_of(self, project: str) -> bool:
        return self.operator or project in self.projects

    def author_in(self, project: str) -> bool:
        return self.operator or self.projects.get(project) == Role.author


def may_see(principal: Principal, owner: str, project: str, scope: Scope) -> bool:
    """Whether ``principal`` may see (and so find) a model with these access fields."""
    if principal.operator or principal.name == owner:
        return True
    if scope == Scope.public:
        return True
    if scope == Scope.project:
        return principal.member_of(project)
    return False  # private; link models are reached through a link only


def may_run(principal: Principal, owner: str, project: str, scope: Scope) -> bool:
    """Whether ``principal`` may launch it: whoever may see a model may run it."""
    return may_see(principal, owner, project, scope)


def may_publish(principal: Principal, owner: str, project: str) -> bool:
    """Authors publish into their projects, as themselves; operators for anyone."""
    return principal.operator or (principal.author_in(project) and principal.name == owner)


def may_read_run(principal: Principal, launched_by: str | None, model_owner: str | None) -> bool:
    """A run is seen by whoever launched it, the owner of its model, and operators."""
    return principal.operator or principal.name in {launched_by, model_owner}


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
    return [
        "acc:scope:public",
        f"acc:owner:{principal.name}",
        *(f"acc:project:{project}" for project in sorted(principal.projects)),
    ]
