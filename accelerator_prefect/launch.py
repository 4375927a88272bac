"""Launch a hosted model version: resolve, validate, then create one flow run.

Everything is checked before anything is dispatched: a refused launch creates
no flow run, and every problem is reported at once with its field path.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from accelerator_prefect.access import Principal, may_run
from accelerator_prefect.catalog import HostedVersion, pick_version, read_model, tag
from accelerator_prefect.errors import InvalidConf, InvalidInputs, NotFound
from accelerator_prefect.manifest import Status
from accelerator_prefect.mapping import input_problems, output_problems
from accelerator_prefect.validation import parameter_problems

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun

    from accelerator_prefect.storage import AccFileSystem

VIA = ("python", "cli", "catalog", "portal", "link")


def _plain(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def _inputs(value: Any, accepted: list[str]) -> dict[str, Any]:
    """The ``inputs`` parameter from a mapping, an ``Inputs`` or a list of URIs.

    In a list, URIs ending with ``/`` are folders and the others files.
    """
    if isinstance(value, list | tuple):
        value = {
            "selected_files": [str(u) for u in value if not str(u).endswith("/")],
            "selected_folders": [str(u) for u in value if str(u).endswith("/")],
        }
    plain = dict(_plain(value) or {})
    plain.setdefault("selected_files", [])
    plain.setdefault("selected_folders", [])
    plain["accepted_types"] = accepted  # always the manifest's, whatever the caller sent
    return plain


def build_parameters(
    hosted: HostedVersion,
    *,
    user: str,
    conf: Any = None,
    inputs: Any = None,
    output: Any = None,
) -> dict[str, Any]:
    """The flow run's parameters: the caller's values over the version's defaults."""
    accepted = hosted.parameter_schema.get("properties", {})
    parameters: dict[str, Any] = {}
    if conf is not None or "conf" in accepted:
        parameters["conf"] = _plain(conf) if conf is not None else {}
    if inputs is not None or "inputs" in accepted:
        mapping = hosted.input_mapping
        parameters["inputs"] = _inputs(inputs, list(mapping.accepted_types))
    if output is not None:
        parameters["output"] = {"location": output} if isinstance(output, str) else _plain(output)
    elif "output" in hosted.default_parameters:
        default = dict(hosted.default_parameters["output"])
        default["location"] = str(default["location"]).replace("{user}", user)
        parameters["output"] = default
    return parameters


def _mapping_problems(
    hosted: HostedVersion, parameters: dict[str, Any], storage: AccFileSystem | None
) -> list[str]:
    """The selection and the output location, checked against storage as it is now
    (when their shape is right; the schema reports it otherwise)."""
    problems = []
    inputs, output = parameters.get("inputs"), parameters.get("output")
    if isinstance(inputs, dict) and all(
        isinstance(inputs.get(k, []), list) and all(isinstance(u, str) for u in inputs.get(k, []))
        for k in ("selected_files", "selected_folders")
    ):
        problems += input_problems(hosted.input_mapping, inputs, storage)
    if isinstance(output, dict) and isinstance(output.get("location"), str):
        problems += output_problems(output["location"], storage)
    return problems


def run_name(hosted: HostedVersion, user: str) -> str:
    from prefect.utilities.names import generate_slug

    return f"{hosted.name} {hosted.version} · {user} · {generate_slug(2)}"


async def launch(
    client: PrefectClient,
    model: str,
    *,
    user: str,
    version: str | None = None,
    conf: Any = None,
    inputs: Any = None,
    output: Any = None,
    via: str = "python",
    storage: AccFileSystem | None = None,
    principal: Principal | None = None,
) -> tuple[HostedVersion, FlowRun]:
    """Validate and create exactly one flow run of ``model`` (or raise, creating none).

    A model ``principal`` may not run is not found for them.
    """
    if via not in VIA:
        raise ValueError(f"via: expected one of {', '.join(VIA)}, got {via!r}")
    hosted = pick_version(await read_model(client, model, principal), version)
    record = hosted.record
    if principal is not None and not may_run(principal, record.owner, record.project, record.scope):
        raise NotFound(f"model {model!r} not found (see `acc list` for the hosted models)")
    if hosted.status == Status.archived:
        raise NotFound(f"{hosted.name}@{hosted.version} is archived and cannot be launched")
    parameters = build_parameters(hosted, user=user, conf=conf, inputs=inputs, output=output)
    what = f"launch of {hosted.name}@{hosted.version}"
    problems = parameter_problems(hosted.parameter_schema, parameters)
    flagged = {p.split(":", 1)[0] for p in problems}
    problems += [
        p
        for p in await asyncio.to_thread(_mapping_problems, hosted, parameters, storage)
        if p.split(":", 1)[0] not in flagged
    ]
    if problems:
        kind = InvalidConf if any(p.startswith("conf") for p in problems) else InvalidInputs
        raise kind(problems, what=what)
    flow_run = await client.create_flow_run_from_deployment(
        hosted.deployment_id,
        parameters=parameters,
        name=run_name(hosted, user),
        tags=[
            tag("model", hosted.name),
            tag("version", hosted.version),
            tag("project", hosted.record.project),
            tag("user", user),
            tag("via", via),
        ],
    )
    return hosted, flow_run
