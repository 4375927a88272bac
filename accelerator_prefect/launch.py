"""Launch a hosted model version: resolve, validate, then create one flow run.

Everything is checked before anything is dispatched: a refused launch creates
no flow run, and every problem is reported at once with its field path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from accelerator_prefect.catalog import HostedVersion, pick_version, read_model, tag
from accelerator_prefect.errors import InvalidConf, NotFound
from accelerator_prefect.manifest import Status
from accelerator_prefect.validation import parameter_problems

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun

VIA = ("python", "cli", "catalog", "portal", "link")


def _plain(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


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
    if inputs is not None:
        parameters["inputs"] = _plain(inputs)
    if output is not None:
        parameters["output"] = {"location": output} if isinstance(output, str) else _plain(output)
    elif "output" in hosted.default_parameters:
        default = dict(hosted.default_parameters["output"])
        default["location"] = str(default["location"]).replace("{user}", user)
        parameters["output"] = default
    return parameters


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
) -> tuple[HostedVersion, FlowRun]:
    """Validate and create exactly one flow run of ``model`` (or raise, creating none)."""
    if via not in VIA:
        raise ValueError(f"via: expected one of {', '.join(VIA)}, got {via!r}")
    hosted = pick_version(await read_model(client, model), version)
    if hosted.status == Status.archived:
        raise NotFound(f"{hosted.name}@{hosted.version} is archived and cannot be launched")
    parameters = build_parameters(hosted, user=user, conf=conf, inputs=inputs, output=output)
    problems = parameter_problems(hosted.parameter_schema, parameters)
    if problems:
        raise InvalidConf(problems, what=f"launch of {hosted.name}@{hosted.version}")
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
