"""The audit log: who published, changed a model's scope or lifecycle, shared or revoked
a link, added a user or a token, launched or cancelled a run.

Each action is a Prefect event, so operators see them all in the Prefect UI's event
feed, beside Prefect's own:

- ``acc.model.published`` (and with it any change of scope), ``acc.model.status-changed``,
  ``acc.model.link-created``, ``acc.model.link-revoked``, ``acc.model.run-cancelled``:
  resource ``acc.model.<name>``;
- ``acc.user.added``, ``acc.user.token-created``, ``acc.user.token-revoked``: resource
  ``acc.user.<name>``;
- launches are Prefect's own run event (``prefect.flow-run.Scheduled``, made by the
  server when the platform creates the run), which names the model and who launched
  through the run's tags.

A run's own code reaches Prefect through its run-scoped proxy, which passes neither
``acc.*`` events nor flow-run events (but its heartbeat), and a run may set its own state:
so who cancelled a run is the platform's event, never read from a state's message.

Every ``acc.*`` event names who acted (a related resource of role ``actor``). Recording
is best effort: the action has happened when it is recorded, and a failure to record is
logged by the process that acted, never undoes it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import uuid4

from pydantic import BaseModel

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

_log = logging.getLogger(__name__)
RUN_EVENTS = ("prefect.flow-run.Scheduled",)


def model_resource(model: str) -> dict[str, str]:
    return {"prefect.resource.id": f"acc.model.{model}", "prefect.resource.name": model}


def user_resource(user: str) -> dict[str, str]:
    return {"prefect.resource.id": f"acc.user.{user}", "prefect.resource.name": user}


async def record(
    client: PrefectClient,
    event: str,
    resource: dict[str, str],
    *,
    actor: str,
    payload: dict[str, Any] | None = None,
) -> None:
    """Send the event ``event`` about ``resource``, done by ``actor``."""
    body = {
        "id": str(uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": event,
        "resource": resource,
        "related": [{**user_resource(actor), "prefect.resource.role": "actor"}],
        "payload": payload or {},
    }
    try:
        response = await client.request("POST", "/events", json=[body])  # type: ignore[arg-type]
        response.raise_for_status()
    except Exception as exc:  # the action stands; say that its record is missing
        _log.warning("could not record %s for %s: %s", event, resource, exc)


class AuditEntry(BaseModel):
    """One line of a model's audit log."""

    occurred: datetime
    actor: str | None
    action: str
    details: dict[str, Any]


def _entry(event: dict[str, Any]) -> AuditEntry | None:
    name = str(event.get("event", ""))
    related = event.get("related") or []
    payload = event.get("payload") or {}
    if name.startswith("acc."):
        actor = next(
            (
                r.get("prefect.resource.name")
                for r in related
                if r.get("prefect.resource.role") == "actor"
            ),
            None,
        )
        action = name.removeprefix("acc.model.").removeprefix("acc.")
        return AuditEntry(
            occurred=event["occurred"],
            actor=actor,
            action="cancelled" if action == "run-cancelled" else action,
            details=payload,
        )
    tags = {
        str(r.get("prefect.resource.id", "")).removeprefix("prefect.tag.")
        for r in related
        if str(r.get("prefect.resource.id", "")).startswith("prefect.tag.")
    }
    values = dict(
        t.removeprefix("acc:").split(":", 1)
        for t in tags
        if t.count(":") >= 2 and t.startswith("acc:")
    )
    run = str(event.get("resource", {}).get("prefect.resource.id", "")).removeprefix(
        "prefect.flow-run."
    )
    if name == "prefect.flow-run.Scheduled":
        return AuditEntry(
            occurred=event["occurred"],
            actor=values.get("user")
            or (f"guest of link {values['link']}" if "link" in values else None),
            action="launched",
            details={"run": run, "version": values.get("version"), "via": values.get("via")},
        )
    return None


async def read(client: PrefectClient, model: str, limit: int = 500) -> list[AuditEntry]:
    """The audit log of ``model``, newest first: its ``acc.model.*`` events and the
    launches and cancels of its runs."""
    wanted = {
        "filter": {
            "any_resource": {"id": [f"acc.model.{model}", f"prefect.tag.acc:model:{model}"]},
            "event": {"prefix": ["acc.model.", *RUN_EVENTS]},
            "order": "DESC",
        },
        "limit": 50,
    }
    response = await client.request("POST", "/events/filter", json=wanted)  # type: ignore[arg-type]
    response.raise_for_status()
    page = response.json()
    events = list(page.get("events", []))
    while page.get("next_page") and len(events) < limit:
        response = await client._client.get(page["next_page"])
        response.raise_for_status()
        page = response.json()
        events += page.get("events", [])
    entries = list(filter(None, map(_entry, events[:limit])))
    return sorted(entries, key=lambda e: e.occurred, reverse=True)
