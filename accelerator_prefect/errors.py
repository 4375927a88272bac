"""The error hierarchy every front end shows to users.

Each message names the thing, the field path and what was expected, so the
CLI, the catalog and the Python API can print it as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def field_path(parts: Iterable[int | str]) -> str:
    """``("conf", "layers", 0, "depth")`` -> ``conf.layers[0].depth``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


class AcceleratorError(Exception):
    """Root of every error this package raises on purpose."""


class NotFound(AcceleratorError):
    """The model, version or run does not exist (or is not visible to you)."""


class AccessDenied(AcceleratorError):
    """The principal may see the thing but not do this with it."""


class ManifestError(AcceleratorError):
    """A hosting manifest is missing, unreadable or invalid."""


class VersionArchived(AcceleratorError):
    """The version is archived: it takes no new runs; its runs and outputs stay readable."""


class RuntimeMismatch(AcceleratorError):
    """The version's locked runtime cannot talk to this platform's Prefect server: it is
    refused at launch rather than run on other libraries than it locked."""


class AlteredOutput(AcceleratorError):
    """An output file no longer holds what its run wrote (its hash differs from the one
    the run's provenance recorded): it is never served as the run's output."""


class PublishError(AcceleratorError):
    """A manifest is valid but cannot be published as asked."""


class ValidationFailed(AcceleratorError):
    """One or more fields were refused; ``problems`` lists one line per field."""

    def __init__(self, problems: Sequence[str], *, what: str = "launch") -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{what} refused, {len(self.problems)} problem(s):\n{lines}")


class InvalidConf(ValidationFailed):
    """The configuration does not match the version's conf schema."""


class InvalidInputs(ValidationFailed):
    """The selected inputs do not fit the model's input mapping."""


class InvalidSecrets(ValidationFailed):
    """Secrets are missing, unknown or not text (messages never carry a value)."""


class QuotaExceeded(AcceleratorError):
    """The caller already has as many runs waiting or running as they may."""


class StorageQuotaExceeded(AcceleratorError):
    """The storage area a write, an upload or a launch's outputs would go to holds its
    quota already (or could not hold the bytes announced)."""


class IdempotencyConflict(AcceleratorError):
    """An idempotency key was used again for a different request."""


class PlatformError(AcceleratorError):
    """The embedded platform could not be started, reached or stopped."""


class RunTimeout(AcceleratorError):
    """A run did not reach a final state within the time asked."""
