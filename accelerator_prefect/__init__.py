"""accelerator-prefect: host scientific computations on Prefect.

Authors write routines and jobflows and describe them in a manifest; users
launch them through :class:`Accelerator`, the CLI or the catalog.

Example:
    >>> from accelerator_prefect import Accelerator
    >>> acc = Accelerator.connect()  # doctest: +SKIP
    >>> run = acc.launch("climate-downscaling", conf={"scenario": "ssp245",
    ...                  "target_region": "alps"})  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from accelerator_prefect.errors import (
    AcceleratorError,
    AccessDenied,
    InvalidConf,
    InvalidInputs,
    InvalidSecrets,
    ManifestError,
    NotFound,
    PlatformError,
    PublishError,
    RuntimeMismatch,
    RunTimeout,
    ValidationFailed,
    VersionArchived,
)
from accelerator_prefect.jobflow import Conf, Inputs, Output, Secrets, jobflow, routine

if TYPE_CHECKING:
    from accelerator_prefect.access import Principal
    from accelerator_prefect.client import Accelerator, AsyncAccelerator, SharedLink
    from accelerator_prefect.mapping import InputFile
    from accelerator_prefect.outputs import OutputFile
    from accelerator_prefect.runs import Run, RunSummary
    from accelerator_prefect.storage import Storage
    from accelerator_prefect.versions import VersionInfo

__all__ = [
    "Accelerator",
    "AcceleratorError",
    "AccessDenied",
    "AsyncAccelerator",
    "Conf",
    "InputFile",
    "Inputs",
    "InvalidConf",
    "InvalidInputs",
    "InvalidSecrets",
    "ManifestError",
    "NotFound",
    "Output",
    "OutputFile",
    "PlatformError",
    "Principal",
    "PublishError",
    "Run",
    "RunSummary",
    "RunTimeout",
    "RuntimeMismatch",
    "Secrets",
    "SharedLink",
    "Storage",
    "ValidationFailed",
    "VersionArchived",
    "VersionInfo",
    "jobflow",
    "routine",
]

_LAZY = {
    "Accelerator": "accelerator_prefect.client",
    "AsyncAccelerator": "accelerator_prefect.client",
    "Run": "accelerator_prefect.runs",
    "RunSummary": "accelerator_prefect.runs",
    "SharedLink": "accelerator_prefect.client",
    "Principal": "accelerator_prefect.access",
    "InputFile": "accelerator_prefect.mapping",
    "OutputFile": "accelerator_prefect.outputs",
    "Storage": "accelerator_prefect.storage",
    "VersionInfo": "accelerator_prefect.versions",
}


def __getattr__(name: str) -> Any:
    # The client side pulls in more than a jobflow process needs: load it on use.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'accelerator_prefect' has no attribute {name!r}")
