"""Settings of one installation, read from ``ACC_*`` environment variables.

Worker processes on other machines receive the same settings through their
environment (or Prefect job variables), never through a shared local file.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path.home() / ".accelerator"


class Settings(BaseSettings):
    """Where the platform lives and how a client reaches it.

    Example:
        >>> Settings(home="/tmp/acc").platform_file.name
        'platform.json'
    """

    model_config = SettingsConfigDict(env_prefix="ACC_", extra="ignore")

    home: Path = Field(default_factory=_default_home, description="The platform's home folder.")
    api_url: str | None = Field(
        default=None,
        description="Prefect API URL; when unset, the local platform under `home` is used.",
    )
    url: str | None = Field(
        default=None,
        description="The portal's address (http://…): users' clients speak HTTP to it and need "
        "nothing else but a token.",
    )
    token: SecretStr | None = Field(
        default=None, description="A personal API token (acc_<id>_<secret>): who acts."
    )
    api_auth_string: SecretStr | None = Field(
        default=None,
        description="The Prefect API's auth string (Prefect's `server.api.auth_string`), held "
        "by the platform's services and operators only; when unset, PREFECT_API_AUTH_STRING, "
        "then the file `acc up` keeps in the home.",
    )
    worker: Literal["warm", "process"] = Field(
        default="warm",
        description="The worker `acc up` runs: `warm` (runs start in a process forked from a "
        "warm parent, in well under a second) or `process` (Prefect's process worker: a fresh "
        "Python per run).",
    )
    work_pool: str | None = Field(
        default=None,
        description="Default work pool for models; when unset, `acc-warm` or `acc-process` "
        "after `worker`.",
    )
    catalog_url: str | None = Field(
        default=None,
        description="Where the catalog is served (in links); when unset, where `acc up` serves it.",
    )
    storage_url: str | None = Field(
        default=None,
        description="Backing URL of acc:// storage; a folder under `home` when unset.",
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options of the backing filesystem, as JSON "
        '(e.g. {"endpoint_url": "http://127.0.0.1:9000"}); credentials come from the '
        "backend's own environment (AWS_ACCESS_KEY_ID …).",
    )

    cloud_schemes: list[str] = Field(
        default_factory=lambda: ["s3", "gs", "gcs", "az", "abfs", "abfss", "https", "http"],
        description='URL schemes a cloud input may use, as JSON (e.g. ["s3", "https"]).',
    )
    cloud_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts a cloud input may come from even when they resolve to loopback, "
        "private, link-local or metadata addresses (refused otherwise), as JSON, e.g. "
        '["127.0.0.1:9000"] for a local S3 stand-in. Names (and host:port) match exactly.',
    )

    webhook_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts completion webhooks may be sent to, as JSON, e.g. "
        '["hooks.example.org", "127.0.0.1:8080"]: `host` (any port) or `host:port`, matched '
        "exactly, case aside. None by default: no webhooks.",
    )
    webhook_key: SecretStr | None = Field(
        default=None,
        description="The key each caller's webhook signing secret is derived from; when "
        "unset, a key made on first use and kept in the home (`webhook-key`, mode 0600). "
        "Set it when portals run on several machines.",
    )
    publish_repository_roots: list[Path] = Field(
        default_factory=list,
        description="Folders whose git repositories authors may name by file:// URL or path "
        "when publishing through the portal, as JSON; none by default.",
    )
    publish_repository_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts (host or host:port) a repository URL may name even when they "
        "resolve to private addresses, as JSON.",
    )
    publish_max_bundle_bytes: int = Field(
        default=256 << 20, ge=1, description="The largest code bundle an author may upload."
    )
    publish_schema_timeout: float = Field(
        default=120.0, gt=0, description="Seconds the import deriving a schema may take."
    )
    portal_cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins whose pages may call the portal from a browser, as JSON "
        '(e.g. ["https://lab.example.org"]); none by default.',
    )
    portal_max_body_bytes: int = Field(
        default=1 << 20, description="The largest JSON request body the portal reads."
    )
    portal_max_upload_bytes: int = Field(
        default=5 << 30, description="The largest file a portal upload may write."
    )

    portal_rate_per_second: float = Field(
        default=20.0,
        ge=0,
        description="Requests a second one token or link may make through the portal, "
        "sustained (0: no limit); kept in Prefect's global concurrency limits, so every "
        "portal process shares it.",
    )
    portal_rate_burst: int = Field(
        default=60, ge=1, description="Requests one token or link may make at once."
    )
    signin_failures_per_minute: float = Field(
        default=30.0,
        ge=0,
        description="Refused credentials one address may present a minute before it waits "
        "(0: no limit).",
    )
    max_active_runs_per_user: int = Field(
        default=20,
        ge=0,
        description="Runs one user (or one link's guests) may have waiting or running at "
        "once (0: no limit).",
    )
    work_pool_concurrency: int | None = Field(
        default=4,
        ge=1,
        description="Runs the embedded work pool starts at once; more wait their turn "
        "(unset: no limit).",
    )

    oidc_email_domains: list[str] = Field(
        default_factory=list,
        description="E-mail domains whose verified addresses single sign-on maps to the user "
        'of the same name (before the @), e.g. ["uni.example"]; empty: only accounts an '
        "operator linked (acc users add NAME --oidc-subject SUB) sign in.",
    )
    package_index: str | None = Field(
        default=None,
        description="The package index models' environments are locked and built from "
        "(uv's default index when unset).",
    )
    environment_image: str | None = Field(
        default=None,
        description="The image of each environment on work pools that start containers "
        "(Docker, Kubernetes): a name with {hash}, the lock's hash (24 characters), e.g. "
        "registry.example.org/acc-env:{hash}. Publishing sets it as the `image` job "
        "variable of versions that declare an environment, on pools that have one.",
    )

    database_url: SecretStr | None = Field(
        default=None,
        description="The Prefect server's database for `acc up`, e.g. "
        "postgresql+asyncpg://prefect:…@db.example.org:5432/prefect; SQLite under `home` "
        "when unset. Only the server receives it.",
    )
    workers: int = Field(
        default=1, ge=1, le=32, description="Warm (or process) workers `acc up` runs on its pool."
    )
    run_timeout: str | None = Field(
        default=None,
        description="Longest a run may last when its manifest sets no limits.timeout, e.g. "
        "'6 h' (units s, min, h, d); unset: no limit.",
    )
    run_memory: str | None = Field(
        default=None,
        description="Most memory a run's process may hold when its manifest sets no "
        "limits.memory, e.g. '8 GB'; unset: no limit.",
    )
    run_cpu_time: str | None = Field(
        default=None,
        description="Most processor time a run may use when its manifest sets no "
        "limits.cpu_time, e.g. '12 h'; unset: no limit.",
    )
    run_output_size: str | None = Field(
        default=None,
        description="Largest file a run may write when its manifest sets no "
        "limits.output_size, e.g. '50 GB'; unset: no limit.",
    )

    keep_outputs: str | None = Field(
        default=None,
        description="How long a run's output files are kept after it ends, unless its "
        "project says otherwise (`acc projects policy`), e.g. '90 d'; unset: kept. Their "
        "provenance and the run's history stay.",
    )
    keep_uploads: str | None = Field(
        default=None,
        description="How long files in an `uploads/` folder (of a user or a project) are "
        "kept after they were written, unless the project says otherwise, e.g. '30 d'; "
        "unset: kept.",
    )
    project_quota: str | None = Field(
        default=None,
        description="Most a project's folder may hold, unless the project says otherwise, "
        "e.g. '100 GB'; checked at upload and at launch. Unset: no quota.",
    )
    user_quota: str | None = Field(
        default=None,
        description="Most a user's own area (and a guest's) may hold, unless the user's "
        "record says otherwise, e.g. '5 GB'. Unset: no quota.",
    )
    sweep_every: float = Field(
        default=600.0,
        gt=0,
        description="Seconds between the sweeps `acc up` makes of outputs and uploads past "
        "their retention (secrets of ended runs and expired guest areas: every minute).",
    )

    dvc_remote: str | None = Field(
        default=None,
        description="DVC remote for models' reference data whose repository names none; "
        "a folder under `home` when unset.",
    )

    @field_validator("keep_outputs", "keep_uploads")
    @classmethod
    def _period(cls, value: str | None) -> str | None:
        from accelerator_prefect.retention import check_period

        return check_period(value)

    @field_validator("project_quota", "user_quota")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        from accelerator_prefect.retention import check_size

        return check_size(value)

    @property
    def pool(self) -> str:
        """The work pool models go to unless their manifest or project names another."""
        return self.work_pool or f"acc-{self.worker}"

    @property
    def data_remote(self) -> str:
        return self.dvc_remote or str(self.home / "dvc-remote")

    @cached_property
    def platform_file(self) -> Path:
        return self.home / "platform.json"

    @property
    def operator_token_file(self) -> Path:
        """The embedded platform's operator token, for the local CLI (mode 0600)."""
        return self.home / "operator.token"

    @property
    def auth_string_file(self) -> Path:
        """The Prefect API's auth string, generated by ``acc up`` (mode 0600)."""
        return self.home / "api-auth-string"

    def service_auth_string(self) -> str | None:
        """The Prefect API's auth string, if this process holds it: ``ACC_API_AUTH_STRING``,
        then the home's file, then Prefect's own ``PREFECT_API_AUTH_STRING``."""
        if self.api_auth_string is not None:
            return self.api_auth_string.get_secret_value()
        try:
            kept = self.auth_string_file.read_text().strip()
        except OSError:  # not this machine's platform, or not readable by this user
            kept = ""
        return kept or os.environ.get("PREFECT_API_AUTH_STRING") or None

    @property
    def storage_root(self) -> str:
        return self.storage_url or (self.home / "storage").as_uri()


def get_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides winning."""
    values = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**values)  # type: ignore[arg-type]
