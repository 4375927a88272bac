"""The portal's request and response bodies (pydantic), kept apart from the routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from accelerator_prefect.outputs import OutputFile


class Caller(BaseModel):
    """Who a request acts for."""

    name: str
    operator: bool
    guest: bool
    projects: dict[str, str]
    area: str = Field(description="Their own acc:// folder (a guest's, under their link).")


VersionAction = Literal["deprecate", "archive", "restore"]
"""What ``POST /models/{model}/versions/{version}/{action}`` does to a version."""


class InputSelection(BaseModel):
    """The files and folders a run reads: ``acc://`` paths, or cloud URLs the model allows."""

    model_config = ConfigDict(extra="forbid")

    selected_files: list[str] = Field(default_factory=list, description="Files, one each.")
    selected_folders: list[str] = Field(
        default_factory=list, description="Folders, each read whole."
    )


class OutputLocation(BaseModel):
    """Where a run writes."""

    model_config = ConfigDict(extra="forbid")

    location: str = Field(description="An acc:// folder.")


class LaunchRequest(BaseModel):
    """What ``Accelerator.launch`` takes: a version, conf, inputs, output and secrets."""

    model_config = ConfigDict(extra="forbid")

    version: str | None = Field(
        default=None, description="A published version; newest active when unset."
    )
    conf: dict[str, Any] | None = Field(
        default=None,
        description="The configuration, checked against the version's conf schema; its "
        "defaults when unset.",
    )
    inputs: list[str] | InputSelection | None = Field(
        default=None,
        description="acc:// files and folders (folders ending with /), or the selection as "
        "an object.",
    )
    output: str | OutputLocation | None = Field(
        default=None, description="An acc:// output folder; the version's default when unset."
    )
    # Values as sent: a secret that is not text is refused with the launch's other problems.
    secrets: dict[str, Any] | None = Field(
        default=None,
        description="Each secret the model declares, by name, as text (never stored with the run).",
    )
    remember: bool = Field(default=False, description="Keep the secrets for your next launches.")
    webhook: str | None = Field(
        default=None,
        max_length=2000,
        description="An http(s) URL the run's summary is POSTed to once it ends, signed with "
        "your webhook secret (GET /me/webhook-secret) in X-Acc-Signature; its host must be "
        "one the operator allows.",
    )


class WebhookSecret(BaseModel):
    """The secret a caller's webhooks are signed with, and how."""

    secret: str
    header: str = "X-Acc-Signature"
    scheme: str = (
        "t=<unix time>,v1=<hex HMAC-SHA256 of '<t>.<body>' keyed with the secret>; refuse "
        "a t more than 5 minutes away"
    )


class RerunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secrets: dict[str, Any] | None = Field(default=None, description="As for a launch.")


class Forgotten(BaseModel):
    """How many remembered secrets were deleted."""

    forgotten: int


class RunOut(BaseModel):
    """One run: who ran which version, its state and times, and what it was launched with."""

    id: str
    name: str
    model: str
    version: str
    user: str
    via: str
    state: str
    state_type: str
    message: str | None = None
    final: bool
    completed: bool
    created: datetime | None = None
    started: datetime | None = None
    ended: datetime | None = None
    duration: float | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    notice: str | None = Field(default=None, description="A deprecation notice, at launch.")


class LinkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str | None = None
    expires_in_days: float | None = Field(
        default=None,
        gt=0,
        le=36600,
        description="Days until the link stops opening (at most 100 years).",
    )
    guest_days: int = Field(
        default=30,
        ge=1,
        le=3660,
        description="Days each guest session lasts; its files and runs' outputs are then removed.",
    )


class StatusRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replaced_by: str | None = None


class AccessRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: str = Field(
        description="Who may see and run the model: private, project, link or public."
    )


class OutputsOut(BaseModel):
    """What a run wrote, and whether it finished writing it all."""

    complete: bool
    files: list[OutputFile]
    expired: str | None = Field(
        default=None,
        description="When and why retention deleted the run's output files, if it did "
        "(its provenance is kept)",
    )


class AreaUsageOut(BaseModel):
    """What one storage area holds, against its quota."""

    area: str = Field(description="The area, e.g. acc://climate/ or acc://users/alice/")
    used: int = Field(description="Bytes it holds")
    quota: int | None = Field(default=None, description="Bytes it may hold (none: no quota)")
    quota_text: str | None = Field(default=None, description="The quota as set, e.g. 10 GB")
