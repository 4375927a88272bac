"""Launch a hosted model version: resolve, validate, then create one flow run.

Everything is checked before anything is dispatched: a refused launch creates
no flow run (and leaves no secret behind), and every problem is reported at
once with its field path.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from accelerator_prefect import secrets as run_secrets
from accelerator_prefect.access import (
    Principal,
    may_read_path,
    may_use_path,
    readable_samples,
    usable_areas,
)
from accelerator_prefect.catalog import HostedModel, HostedVersion, pick_version, read_model, tag
from accelerator_prefect.errors import (
    IdempotencyConflict,
    InvalidConf,
    InvalidInputs,
    InvalidSecrets,
    NotFound,
    QuotaExceeded,
)
from accelerator_prefect.manifest import LaunchCheck, Status
from accelerator_prefect.mapping import input_problems, output_problems
from accelerator_prefect.storage import PREFIX, StoragePathError, check_path, run_ids
from accelerator_prefect.validation import failed_checks, parameter_problems
from accelerator_prefect.versions import refuse_archived, refuse_mismatched_runtime

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
    if isinstance(value, str | bytes | int | float | bool):
        raise InvalidInputs(
            [
                "inputs: expected a list of acc:// paths (folders ending with /) or "
                f'{{"selected_files": [...], "selected_folders": [...]}}, not {value!r}'
            ]
        )
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


def default_output(hosted: HostedVersion, principal: Principal) -> str | None:
    """Where a run writes unless the caller chooses: the manifest's template, or the
    launcher's own area when the template points where they may not write (guests
    always get a scratch folder of their own for each run)."""
    default = hosted.default_parameters.get("output")
    if default is None:
        return None
    if principal.guest:
        return f"{PREFIX}{principal.own_area}/runs/{{run_id}}/"
    location = str(default["location"]).replace("{user}", principal.name)
    relative = location.removeprefix(PREFIX).replace("{run_id}", "run")
    if location.startswith(PREFIX) and may_use_path(principal, relative):
        return location
    return f"{PREFIX}{principal.own_area}/results/{hosted.name}/{hosted.version}/{{run_id}}/"


def build_parameters(
    hosted: HostedVersion,
    *,
    principal: Principal,
    conf: Any = None,
    inputs: Any = None,
    output: Any = None,
    secret_blocks: Mapping[str, str] | None = None,
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
    elif (location := default_output(hosted, principal)) is not None:
        parameters["output"] = {"location": location}
    if secret_blocks or "secrets" in accepted:
        parameters["secrets"] = {"blocks": dict(secret_blocks or {})}
    return parameters


def _selection(parameters: dict[str, Any]) -> list[tuple[str, str]]:
    """Each chosen ``acc://`` location with its field path (when its shape is right)."""
    chosen: list[tuple[str, str]] = []
    inputs, output = parameters.get("inputs"), parameters.get("output")
    if isinstance(inputs, dict):
        for key in ("selected_files", "selected_folders"):
            values = inputs.get(key)
            if isinstance(values, list):
                chosen += [
                    (f"inputs.{key}[{i}]", u) for i, u in enumerate(values) if isinstance(u, str)
                ]
    if isinstance(output, dict) and isinstance(output.get("location"), str):
        chosen.append(("output.location", output["location"]))
    return chosen


def _inside_storage(uri: str, storage: AccFileSystem | None) -> str | None:
    """The ``acc://``-relative path of a cloud URL that points into storage's own
    backend (``s3://<bucket>/<prefix>/…``), else ``None``."""
    if storage is None:
        return None
    scheme, sep, rest = uri.partition("://")
    protocols = storage.fs.protocol
    protocols = (protocols,) if isinstance(protocols, str) else tuple(protocols)
    root = str(storage.path).rstrip("/")
    if not sep or scheme not in protocols:
        return None
    if not (rest == root or rest.startswith(root + "/")):
        return None
    inside = rest[len(root) :].strip("/")
    try:
        return check_path(inside) if inside else inside
    except StoragePathError:
        # '..' and the like: where it lands is the backend's to say, so it is nowhere
        # anyone may use (the root itself, which no one but operators may).
        return ""


def area_problems(
    principal: Principal,
    parameters: dict[str, Any],
    storage: AccFileSystem | None = None,
    samples: tuple[str, ...] = (),
) -> list[str]:
    """Chosen ``acc://`` locations outside the storage ``principal`` may use; inputs may
    also lie in the ``samples`` they may read (never the output).

    Decided on the path alone, before storage is touched, so the answer says
    nothing about what exists there. A cloud URL into storage's own backend
    obeys the same rule, as the ``acc://`` path it is.
    """

    def allowed(where: str, relative: str) -> bool:
        if where.startswith("inputs"):
            return may_read_path(principal, relative, samples)
        return may_use_path(principal, relative)

    problems = []
    for where, uri in _selection(parameters):
        if not uri.startswith(PREFIX):
            inside = _inside_storage(uri, storage)
            if inside is not None and not allowed(where, inside):
                problems.append(
                    f"{where}: {uri} lies in acc:// storage outside what you may use "
                    f"({', '.join(usable_areas(principal))})"
                )
            continue  # other cloud URLs: the input mapping decides whether they are allowed
        try:
            relative = check_path(uri.replace("{run_id}", "run"))
        except StoragePathError:
            continue  # the mapping checks report it
        if not allowed(where, relative):
            problems.append(
                f"{where}: {uri} is outside the storage you may use "
                f"({', '.join(usable_areas(principal))})"
            )
    return problems


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


async def _inputs_of_hidden_runs(
    client: PrefectClient, principal: Principal, parameters: dict[str, Any]
) -> list[str]:
    """Inputs inside the output folder of a run the launcher may not read (a colleague's):
    the run would read for them what the storage keeps from them."""
    from accelerator_prefect.runs import hidden_runs

    inputs = parameters.get("inputs")
    if not isinstance(inputs, dict):
        return []
    named = [
        (f"inputs.{key}[{index}]", uri, run_ids(uri))
        for key in ("selected_files", "selected_folders")
        for index, uri in enumerate(inputs.get(key) or [])
        if isinstance(uri, str)
    ]
    ids = sorted({i for _, _, found in named for i in found})
    hidden = await hidden_runs(client, principal, ids)
    return [
        f"{where}: {uri} is in the output folder of a run you may not read"
        for where, uri, found in named
        if found & hidden
    ]


async def _other_runs_folder(client: PrefectClient, location: str) -> list[str]:
    """A chosen output folder may not be, or lie in, another run's, ended or still
    running: one whose path names the id of a run on this server (a run's folder holds
    its records only once it has ended)."""
    from accelerator_prefect.runs import runs_by_id

    if not await runs_by_id(client, run_ids(location)):
        return []
    return [
        f"output.location: {location} is in the output folder of another run; choose a new folder"
    ]


def _folder_in_use(location: str, storage: AccFileSystem | None) -> list[str]:
    """A chosen output folder must be new or empty: what a run leaves there is its own
    (its provenance lists it, and retention deletes it), so nobody else's files may be."""
    from accelerator_prefect.storage import AccFileSystem

    if "{" in location or not location.startswith(PREFIX):
        return []  # a folder of each run's own, or not acc:// storage
    fs = storage or AccFileSystem()
    try:
        held = fs.find(location, maxdepth=None, withdirs=False)
    except (FileNotFoundError, NotADirectoryError):
        return []
    if not held:
        return []
    return [
        f"output.location: {location} already holds files; a run writes into a new or "
        "empty folder of its own"
    ]


def _input_names(inputs: dict[str, Any], storage: AccFileSystem | None) -> list[str]:
    """The names of the files a run would get: folders expanded as the run expands them
    (accepted types only, no earlier runs' outputs)."""
    from accelerator_prefect.mapping import expand
    from accelerator_prefect.storage import AccFileSystem, folder_files

    accepted = list(inputs.get("accepted_types") or [])
    names = [str(u).rstrip("/").rsplit("/", 1)[-1] for u in inputs.get("selected_files", [])]
    fs = storage or AccFileSystem()
    cloud = []
    for uri in inputs.get("selected_folders", []):
        if not uri.startswith(PREFIX):
            cloud.append(uri)
            continue
        names += [relative.rsplit("/", 1)[-1] for relative, _ in folder_files(fs, uri, accepted)]
    if cloud:
        names += [f.name for f in expand([], cloud, accepted)]
    return names


def _check_problems(
    hosted: HostedVersion,
    parameters: dict[str, Any],
    storage: AccFileSystem | None,
    flagged: set[str],
) -> list[str]:
    """The model's own checks across settings and inputs (see ``LaunchCheck``), for the
    checks whose settings the schema found nothing wrong with."""
    checks = [
        check
        for check in map(LaunchCheck.model_validate, hosted.record.manifest.get("checks") or [])
        if not any(
            where == name or where.startswith((f"{name}.", f"{name}["))
            for where in flagged
            for name in check.settings
        )
    ]
    inputs = parameters.get("inputs")
    if not checks or not isinstance(inputs, dict):
        return []
    try:
        names = _input_names(inputs, storage)
    except InvalidInputs as exc:  # a cloud folder refused on a second look
        return exc.problems
    return failed_checks(checks, parameters.get("conf"), names)


def run_name(hosted: HostedVersion, user: str) -> str:
    from prefect.utilities.names import generate_slug

    return f"{hosted.name} {hosted.version} · {user} · {generate_slug(2)}"


async def _secret_problems(
    client: PrefectClient,
    hosted: HostedVersion,
    principal: Principal,
    values: Mapping[str, Any],
    remember: bool,
) -> tuple[list[str], dict[str, str]]:
    """Problems with the supplied secrets, and the remembered block of each secret the
    caller did not supply but saved before."""
    specs = hosted.secrets
    if specs and "secrets" not in hosted.parameter_schema.get("properties", {}):
        return [f"secrets: {hosted.name}@{hosted.version} declares secrets it cannot read"], {}
    problems = []
    if remember and principal.guest:
        problems.append("secrets: a guest cannot have secrets remembered; sign in to do so")
    saved: dict[str, str] = {}
    if not principal.guest:
        wanted = {
            name: run_secrets.saved_block(principal.name, hosted.name, name)
            for name in specs
            if name not in values
        }
        found = await run_secrets.existing(client, list(wanted.values()))
        saved = {name: block for name, block in wanted.items() if block in found}
    problems += run_secrets.secret_problems(specs, values, set(saved))
    return problems, saved


async def launch(
    client: PrefectClient,
    model: str,
    *,
    principal: Principal,
    version: str | None = None,
    conf: Any = None,
    inputs: Any = None,
    output: Any = None,
    secrets: Mapping[str, Any] | None = None,
    remember: bool = False,
    via: str = "python",
    storage: AccFileSystem | None = None,
    rerun_of: str | None = None,
    found: HostedModel | None = None,
    writes: asyncio.Semaphore | None = None,
    idempotency_key: str | None = None,
    max_active_runs: int = 0,
    over_quota: Callable[[str], Awaitable[str | None]] | None = None,
) -> tuple[HostedVersion, FlowRun]:
    """Validate and create exactly one flow run of ``model`` (or raise, creating none).

    A model ``principal`` may not run is not found for them. Secret values go
    into Secret blocks; the run's parameters name the blocks.

    ``found``: the model as ``principal`` sees it on ``client``, when the caller has
    just read it (else it is read here). ``writes``: held while the launch writes
    (its secrets, its flow run), to bound how many launches write at once.
    ``over_quota``: why the storage area of an output folder is full, if it is.
    """
    if via not in VIA:
        raise ValueError(f"via: expected one of {', '.join(VIA)}, got {via!r}")
    if found is None:
        found = await read_model(client, model, principal)
    hosted = pick_version(found, version)
    if not hosted.runnable_by(principal):
        raise NotFound(f"model {model!r} not found (see `acc list` for the hosted models)")
    refuse_archived(found, hosted)
    await refuse_mismatched_runtime(client, hosted)
    values = dict(secrets or {})
    launch_id = run_secrets.new_launch_id()
    secret_problems, saved = await _secret_problems(client, hosted, principal, values, remember)
    blocks = {
        name: run_secrets.saved_block(principal.name, hosted.name, name)
        if remember
        else run_secrets.run_block(launch_id, name)
        for name in values
    }
    parameters = build_parameters(
        hosted,
        principal=principal,
        conf=conf,
        inputs=inputs,
        output=output,
        secret_blocks={**saved, **blocks},
    )
    problems = parameter_problems(hosted.parameter_schema, parameters)
    if principal.guest and output is not None:
        problems.append("output: a guest's results go to a scratch folder of their run")
    flagged = {p.split(":", 1)[0] for p in problems}
    # The samples of the version launched are its launcher's to read (they may run it).
    outside = area_problems(principal, parameters, storage, readable_samples(principal, [hosted]))
    problems += outside
    if not outside:
        problems += await _inputs_of_hidden_runs(client, principal, parameters)
        problems += [
            p
            for p in await asyncio.to_thread(_mapping_problems, hosted, parameters, storage)
            if p.split(":", 1)[0] not in flagged
        ]
        if not any(p.startswith("inputs") for p in problems):
            # Only on a selection that holds: its files are what the checks look at.
            wrong = {p.split(":", 1)[0] for p in problems}
            problems += await asyncio.to_thread(_check_problems, hosted, parameters, storage, wrong)
        if output is not None and not any(p.startswith("output") for p in problems):
            problems += await _other_runs_folder(client, parameters["output"]["location"])
            if not any(p.startswith("output") for p in problems):
                chosen = str(parameters["output"]["location"])
                problems += await asyncio.to_thread(_folder_in_use, chosen, storage)
        location = (parameters.get("output") or {}).get("location")
        if (
            over_quota is not None
            and location
            and not any(p.startswith("output") for p in problems)
        ):
            # The run's output size is not known: the quota counts what the area holds.
            full = await over_quota(str(location).split("{", 1)[0])
            if full is not None:
                problems.append(f"output.location: {full}")
    problems += secret_problems
    if problems:
        raise _refusal(problems, f"launch of {hosted.name}@{hosted.version}")
    user = principal.name
    tags = [
        tag("model", hosted.name),
        tag("version", hosted.version),
        tag("project", hosted.record.project),
        tag("user", user),
        tag("via", "link" if principal.guest else via),
    ]
    if principal.guest:
        tags.append(tag("link", principal.links[0].link_id))
    if rerun_of is not None:
        tags.append(tag("rerun-of", rerun_of))
    if hosted.status == Status.deprecated:
        tags.append("acc:deprecated")
        if hosted.record.replaced_by:
            tags.append(tag("replaced-by", hosted.record.replaced_by))
    if values:
        tags.append(run_secrets.LAUNCH_TAG + launch_id)
    prefect_key = None
    if idempotency_key is not None:
        # Prefect's key is unique per flow: the one it sees names who asked, and what.
        prefect_key, request_tag = idempotency_keys(principal, idempotency_key, hosted, parameters)
        tags.append(request_tag)
    async with writes if writes is not None else contextlib.nullcontext():
        # Counted where the runs are written, one launch at a time: a burst waits its turn.
        await check_quota(client, principal, max_active_runs, existing=prefect_key)
        if values:
            await run_secrets.store(
                client, {blocks[name]: str(run_secrets.plain(v)) for name, v in values.items()}
            )
        try:
            flow_run = await client.create_flow_run_from_deployment(
                hosted.deployment_id,
                parameters=parameters,
                name=run_name(hosted, user),
                tags=tags,
                idempotency_key=prefect_key,
            )
        except BaseException:
            if values and not remember:
                await run_secrets.delete(client, list(blocks.values()))
            raise
    if prefect_key is not None and set(tags) - set(flow_run.tags):
        # An earlier request with this key made the run: this one's secrets are not used.
        if values and not remember:
            await run_secrets.delete(client, list(blocks.values()))
        if request_tag not in flow_run.tags:
            raise IdempotencyConflict(
                "Idempotency-Key: this key was used for a different launch; use a new key"
            )
    return hosted, flow_run


ACTIVE_TYPES = ["SCHEDULED", "PENDING", "RUNNING", "CANCELLING", "PAUSED"]


async def check_quota(
    client: PrefectClient, principal: Principal, limit: int, existing: str | None = None
) -> None:
    """:class:`QuotaExceeded` if ``principal`` (a guest: everyone on their link) already has
    ``limit`` runs waiting or running. Operators have no quota; 0 is no limit. A launch
    repeating an idempotency key (``existing``) makes no new run, so it is not counted."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterIdempotencyKey,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType

    if limit <= 0 or principal.operator:
        return
    if existing is not None:
        repeat = FlowRunFilter(idempotency_key=FlowRunFilterIdempotencyKey(any_=[existing]))
        if await client.count_flow_runs(flow_run_filter=repeat):
            return
    who = (
        tag("link", principal.links[0].link_id) if principal.guest else tag("user", principal.name)
    )
    active = await client.count_flow_runs(
        flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=[who]),
            state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType(t) for t in ACTIVE_TYPES])
            ),
        )
    )
    if active >= limit:
        whose = "this link's guests have" if principal.guest else "you have"
        raise QuotaExceeded(
            f"{whose} {active} run(s) waiting or running, the most allowed at once here; "
            "launch again when one has finished (or cancel one)"
        )


def idempotency_keys(
    principal: Principal, key: str, hosted: HostedVersion, parameters: dict[str, Any]
) -> tuple[str, str]:
    """The key Prefect sees for ``key`` from ``principal``, and the tag naming the request
    (what was launched, with what), so a key reused for another request is told apart."""
    import hashlib
    import json

    caller = hashlib.sha256(f"{principal.name}\x00{key}".encode()).hexdigest()
    request = json.dumps(
        [hosted.name, hosted.version, _without_secret_blocks(parameters)],
        sort_keys=True,
        default=str,
    )
    fingerprint = hashlib.sha256(request.encode()).hexdigest()[:24]
    return f"acc:{caller}", tag("request", fingerprint)


def _without_secret_blocks(parameters: dict[str, Any]) -> dict[str, Any]:
    """The parameters without the per-launch secret block names (new on every request)."""
    return {k: v for k, v in parameters.items() if k != "secrets"}


def _refusal(problems: list[str], what: str) -> InvalidConf | InvalidInputs | InvalidSecrets:
    if any(p.startswith("conf") for p in problems):
        return InvalidConf(problems, what=what)
    if any(p.startswith(("inputs", "output")) for p in problems):
        return InvalidInputs(problems, what=what)
    return InvalidSecrets(problems, what=what)
