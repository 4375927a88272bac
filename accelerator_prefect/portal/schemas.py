"""The portal's request and response bodies (pydantic), kept apart from the routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from accelerator_prefect.outputs import OutputFile


class Caller(BaseModel):
    """Who a request acts for."""

    name: str
    operator: bool
    guest: bool
    projects: dict[str, str]


class LaunchRequest(BaseModel):
    """What ``Accelerator.launch`` takes: a version, conf, inputs, output and secrets."""

    model_config = ConfigDict(extra="forbid")

    version: str | None = Field(
        default=None, description="A published version; newest active when unset."
    )
    conf: Any = Field(
        default=None, description="The configuration, checked against the version's schema."
    )
    inputs: Any = Field(
        default=None,
        description='acc:// files and folders (ending with /), or {"selected_files": [...], '
        '"selected_folders": [...]}.',
    )
    output: Any = Field(
        default=None, description="An acc:// output folder; the version's default when unset."
    )
    secrets: dict[str, str] | None = Field(
        default=None,
        description="Each secret the model declares, by name (never stored with the run).",
    )
    remember: bool = Field(default=False, description="Keep the secrets for your next launches.")


class RerunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secrets: dict[str, str] | None = None


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
    expires_in_days: float | None = Field(default=None, gt=0)


class StatusRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replaced_by: str | None = None


class OutputsOut(BaseModel):
    """What a run wrote, and whether it finished writing it all."""

    complete: bool
    files: list[OutputFile]
