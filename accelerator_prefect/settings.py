"""Settings of one installation, read from ``ACC_*`` environment variables.

Worker processes on other machines receive the same settings through their
environment (or Prefect job variables), never through a shared local file.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
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
    user: str = Field(
        default="operator",
        description="Who acts, on a trusted network without a token (looked up in the directory).",
    )
    token: SecretStr | None = Field(
        default=None, description="A personal API token (acc_<id>_<secret>): who acts."
    )
    work_pool: str = Field(default="acc-process", description="Default work pool for models.")
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

    dvc_remote: str | None = Field(
        default=None,
        description="DVC remote for models' reference data whose repository names none; "
        "a folder under `home` when unset.",
    )

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
    def storage_root(self) -> str:
        return self.storage_url or (self.home / "storage").as_uri()


def get_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides winning."""
    values = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**values)  # type: ignore[arg-type]
