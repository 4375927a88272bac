"""The ``acc`` command line: a front end over the service layer, with no rules of its own."""

from __future__ import annotations

import json
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.panel import Panel
from rich.table import Table

from accelerator_prefect.errors import AcceleratorError, ValidationFailed
from accelerator_prefect.settings import get_settings

if TYPE_CHECKING:
    from rich.progress import Progress
    from rich.status import Status

    from accelerator_prefect.catalog import HostedVersion, HostingRecord
    from accelerator_prefect.client import Accelerator
    from accelerator_prefect.runs import Run
    from accelerator_prefect.storage import Storage

app = typer.Typer(
    name="acc",
    help="Host scientific computations on Prefect: publish models, launch and follow runs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True)


class _Options:
    home: Path | None = None
    api_url: str | None = None
    url: str | None = None
    link: str | None = None


options = _Options()


@app.callback()
def _global(
    home: Path | None = typer.Option(
        None, "--home", envvar="ACC_HOME", help="The platform's home folder."
    ),
    api_url: str | None = typer.Option(
        None, "--api-url", envvar="ACC_API_URL", help="A Prefect API instead of the local platform."
    ),
    url: str | None = typer.Option(
        None,
        "--url",
        envvar="ACC_URL",
        help="The portal's address: act through it with your token (ACC_TOKEN).",
    ),
    link: str | None = typer.Option(
        None, "--link", envvar="ACC_LINK", help="A shared link (its URL or token) to use."
    ),
) -> None:
    options.home, options.api_url, options.url, options.link = home, api_url, url, link


def _plain(exc: Exception) -> str:
    """An error in words: a refused field named with what was expected, no pydantic dump."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {str(e['msg']).removeprefix('Value error, ')}"
            for e in exc.errors()
        )
    return str(exc)


def fail(message: str, code: int = 1) -> NoReturn:
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def connect() -> Accelerator:
    from accelerator_prefect.client import Accelerator

    try:
        return Accelerator.connect(
            options.api_url, home=options.home, link=options.link, url=options.url
        )
    except AcceleratorError as exc:
        fail(str(exc))


def _home() -> Path:
    return get_settings(home=options.home).home


# -- the platform -----------------------------------------------------------------------------


def _step(status: Status, message: str) -> None:
    from rich.markup import escape

    style = "yellow" if message.startswith("not ") else "dim"  # what did not happen, and why
    console.print(f"[{style}]· {escape(message)}[/]", highlight=False)
    status.update(escape(message) + "…")


@app.command()
def up(
    port: int = typer.Option(4200, help="Port of the Prefect server (127.0.0.1)."),
    detach: bool = typer.Option(
        False, "--detach", "-d", help="Start and return; stop with `acc down`."
    ),
    examples: bool = typer.Option(True, help="Publish the bundled example models."),
    catalog_port: int = typer.Option(8501, help="Port of the Streamlit catalog (127.0.0.1)."),
    catalog: bool = typer.Option(True, help="Serve the Streamlit catalog."),
    portal_port: int = typer.Option(8600, help="Port of the portal, the users' HTTP API."),
    factor_port: int = typer.Option(
        8610, help="Port of the example emission-factor service emissions-impact reads from."
    ),
    database: str | None = typer.Option(
        None,
        help="The Prefect server's database, postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DB "
        "(default: ACC_DATABASE_URL, else SQLite in the home). Prefer ACC_DATABASE_URL: a "
        "command line is visible to the machine's other users.",
        show_default=False,
    ),
    workers: int | None = typer.Option(
        None,
        min=1,
        max=32,
        help="Workers on the pool (default: ACC_WORKERS, else 1).",
        show_default=False,
    ),
) -> None:
    """Start the embedded platform: Prefect server (locked with a generated auth string),
    workers, storage, the example models, the portal and the catalog. While it runs, a
    worker that dies is started again."""
    from accelerator_prefect import platform

    home = _home()
    started = time.monotonic()
    try:
        with console.status("starting the platform…") as status:
            info, published = platform.up(
                home,
                port=port,
                examples=None if examples else [],
                catalog_port=catalog_port if catalog else None,
                portal_port=portal_port,
                factor_port=factor_port,
                report=lambda message: _step(status, message),
                database=database,
                workers=workers,
            )
    except AcceleratorError as exc:
        fail(str(exc))
    ready = time.monotonic() - started
    for result in published:
        if isinstance(result, AcceleratorError):
            errors.print(f"[yellow]not published:[/] {result}", highlight=False)
        else:
            console.print(f"[green]published[/] {result}")
    table = Table.grid(padding=(0, 2))
    if info.catalog_url:
        table.add_row("Catalog", info.catalog_url)
    if info.portal_url:
        table.add_row("Portal", f"{info.portal_url}/api/v1 (docs: {info.portal_url}/api/v1/docs)")
    table.add_row("Prefect UI", f"{info.ui_url} (operators: sign in with the auth string)")
    table.add_row("Prefect API", info.api_url)
    table.add_row("database", info.database)
    table.add_row("workers", f"{len(info.workers())} on the pool {info.work_pool}")
    table.add_row("auth string", str(get_settings(home=info.home).auth_string_file))
    table.add_row("home", str(info.home))
    table.add_row("logs", str(info.home / "logs"))
    console.print(Panel(table, title=f"accelerator-prefect is up ({ready:.1f} s)", expand=False))
    if detach:
        console.print("Stop it with [bold]acc down[/].")
        return
    console.print("Press Ctrl-C to stop.")
    try:
        swept = retained = float("-inf")  # both at once at start
        every = get_settings(home=home).sweep_every
        while platform.read_platform(home) is not None:
            platform.supervise(home, report=lambda message: console.print(message))
            if time.monotonic() - swept > min(SWEEP_EVERY, every):
                swept = time.monotonic()
                due = swept - retained > every
                retained = swept if due else retained
                _sweep_quietly(info.api_url, retention=due)
            time.sleep(1.0)
        fail("the Prefect server stopped; see its log in " + str(info.home / "logs"))
    except KeyboardInterrupt:
        with console.status("stopping…"):
            platform.down(home)
        console.print("stopped.")


SWEEP_EVERY = 60.0  # seconds between sweeps of secrets left by crashed runs (and guest areas)


def _sweep_quietly(api_url: str, retention: bool = False) -> None:
    """Sweep leftover per-run secrets and guest areas past their retention, and with
    ``retention`` run outputs and uploads past theirs, as the local operator; say what
    was deleted, and say so when it fails."""
    from accelerator_prefect.client import Accelerator
    from accelerator_prefect.mapping import human_size

    try:
        with Accelerator.connect(api_url, home=_home()) as acc:
            acc.sweep_secrets()
            if not retention:
                acc.sweep_guest_areas()
                return
            deleted = acc.sweep()
            if deleted:
                size = human_size(sum(d.bytes for d in deleted))
                console.print(
                    f"[dim]retention: deleted {len(deleted)} item(s), {size} "
                    "(acc audit MODEL, or acc://.platform/retention/, says what)[/]"
                )
    except Exception as exc:  # the platform keeps running; the next sweep retries
        errors.print(f"[yellow]sweep failed:[/] {type(exc).__name__}: {exc}")


@app.command()
def down() -> None:
    """Stop the embedded platform started by `acc up`."""
    from accelerator_prefect import platform

    with console.status("stopping…"):
        stopped = platform.down(_home())
    console.print("stopped." if stopped else "nothing was running.")


# -- publishing and the catalog ---------------------------------------------------------------


@app.command()
def publish(
    manifests: list[Path] = typer.Argument(..., help="Manifests, e.g. deployments/model.yaml."),
    allow_dirty: bool = typer.Option(
        False, help="Publish uncommitted code (recorded on the deployment)."
    ),
    force: bool = typer.Option(False, help="Replace a published version that has other code."),
    repository: str | None = typer.Option(
        None, help="Clone URL workers use (default: this repository's local path)."
    ),
) -> None:
    """Publish manifests as versioned deployments `<model>@<version>`."""
    acc = connect()
    failed = False
    for manifest in manifests:
        try:
            with console.status(f"publishing {manifest}…"):
                result = acc.publish(
                    manifest, allow_dirty=allow_dirty, force=force, repository=repository
                )
        except AcceleratorError as exc:
            errors.print(f"[bold red]error:[/] {exc}", highlight=False)
            failed = True
            continue
        console.print(f"[green]published[/] {result}", highlight=False)
        for warning in result.warnings:
            errors.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
    if failed:
        raise typer.Exit(1)


@app.command()
def init(
    name: str = typer.Argument(..., help="The model's name, e.g. crop-yield."),
    folder: Path | None = typer.Option(
        None, "--dir", help="Where to write it (default: a new folder named like the model)."
    ),
    owner: str | None = typer.Option(
        None,
        help="Who owns it: your user name on the platform (default: the one `acc whoami` "
        "says, when ACC_TOKEN is set; else your login name).",
    ),
    project: str = typer.Option(..., prompt=True, help="The project it belongs to."),
    title: str | None = typer.Option(None, help="Its title in the catalog."),
) -> None:
    """Start a model's repository: jobflow, manifest, libraries, sample, test, README."""
    import getpass

    from accelerator_prefect.scaffold import Model, ScaffoldError, write

    target = folder or Path(name)
    if owner is None and get_settings(home=options.home).token is not None:
        from accelerator_prefect.client import Accelerator

        try:  # who ACC_TOKEN says you are
            with Accelerator.connect(options.api_url, home=options.home, url=options.url) as acc:
                owner = acc.principal.name
        except AcceleratorError:
            owner = None
    if owner is None:
        owner = getpass.getuser().lower()
        errors.print(
            f"owner: {owner} (your login name); publishing needs your user name on the "
            "platform: pass --owner NAME, or set ACC_TOKEN first",
            highlight=False,
        )
    model = Model(
        name=name,
        owner=owner,
        project=project,
        title=title or name.replace("-", " ").capitalize(),
    )
    try:
        written = write(target, model)
    except ScaffoldError as exc:
        fail(str(exc))
    table = Table("file", title=f"{name}: a model repository in {target}")
    for path in written:
        table.add_row(str(path.relative_to(target)))
    console.print(table)
    console.print(
        f"Next: `cd {target} && pytest` runs the jobflow here; the README says how to publish it.",
        highlight=False,
    )


@app.command("manifest-schema")
def manifest_schema() -> None:
    """Print the JSON Schema of hosting manifests (for editors)."""
    from accelerator_prefect.manifest import manifest_json_schema

    typer.echo(manifest_json_schema(), nl=False)


@app.command("list")
def list_models() -> None:
    """List the hosted models."""
    acc = connect()
    try:
        models = acc.catalog()
    except AcceleratorError as exc:
        fail(str(exc))
    if not models:
        console.print(
            "No models you may see (others' private models are not shown). Publish one with "
            "`acc publish deployments/x.yaml`."
        )
        return
    table = Table(
        "model",
        "title",
        "latest",
        "status",
        "scope",
        "project",
        "owner",
        caption="`acc versions MODEL` lists every version of a model.",
    )
    for model in models:
        latest = model.latest
        table.add_row(
            model.name,
            latest.title,
            latest.version,
            _status(latest),
            latest.record.scope.value,
            latest.record.project,
            latest.record.owner,
        )
    console.print(table)


def _status(hosted: HostedVersion) -> str:
    """``active``, ``deprecated → 1.1.0`` or ``archived``, coloured."""
    from accelerator_prefect.manifest import Status

    if hosted.status == Status.deprecated:
        instead = f" → {hosted.record.replaced_by}" if hosted.record.replaced_by else ""
        return f"[yellow]deprecated{instead}[/]"
    return "[dim]archived[/]" if hosted.status == Status.archived else "[green]active[/]"


def _node(root: dict[str, Any], node: Any) -> dict[str, Any]:
    """``node`` with its ``$ref`` (and a lone ``allOf`` wrapping one) resolved."""
    if not isinstance(node, dict):
        return {}
    wrapped = node.get("allOf")
    if isinstance(wrapped, list) and len(wrapped) == 1:
        node = {**_node(root, wrapped[0]), **{k: v for k, v in node.items() if k != "allOf"}}
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for key in ref[2:].split("/"):
            target = target.get(key, {}) if isinstance(target, dict) else {}
        node = {**_node(root, target), **{k: v for k, v in node.items() if k != "$ref"}}
    resolved: dict[str, Any] = node
    return resolved


def _optional(root: dict[str, Any], node: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The inner schema of ``X | None`` and whether ``None`` is allowed."""
    for key in ("anyOf", "oneOf"):
        branches = [_node(root, b) for b in node.get(key) or []]
        kept = [b for b in branches if b.get("type") != "null"]
        if branches and len(kept) < len(branches) and len(kept) == 1:
            outer = {k: v for k, v in node.items() if k != key}
            return {**kept[0], **outer}, True
    return node, node.get("type") == "null"


def _kind(root: dict[str, Any], node: dict[str, Any]) -> str:
    """A field's type in words: ``integer``, ``string (date)``, ``list of Gauge``…"""
    if "enum" in node:
        return "one of " + ", ".join(json.dumps(e) for e in node["enum"])
    if "const" in node:
        return f"always {json.dumps(node['const'])}"
    for key in ("anyOf", "oneOf"):
        if node.get(key):
            return " or ".join(_kind(root, _node(root, b)) for b in node[key])
    kind = node.get("type", "any")
    if isinstance(kind, list):
        return " or ".join(map(str, kind))
    if kind == "array":
        items = _node(root, node.get("items"))
        return f"list of {_kind(root, items)}" if items else "list"
    if kind == "object" and node.get("properties"):
        return str(node.get("title") or "group")
    if kind == "object":
        return "mapping"
    return f"{kind} ({node['format']})" if "format" in node else str(kind)


_LIMITS = (
    ("minimum", "≥ {}"),
    ("exclusiveMinimum", "> {}"),
    ("maximum", "≤ {}"),
    ("exclusiveMaximum", "< {}"),
    ("minLength", "at least {} characters"),
    ("maxLength", "at most {} characters"),
    ("minItems", "at least {} items"),
    ("maxItems", "at most {} items"),
)


def _bounds(schema: dict[str, Any]) -> str:
    parts = [text.format(schema[key]) for key, text in _LIMITS if key in schema]
    if "pattern" in schema:  # said in words where the author did, never as a regex
        from accelerator_prefect.validation import MESSAGE_KEY

        example = (schema.get("examples") or [None])[0]
        said = str(schema.get(MESSAGE_KEY) or "")
        if example is not None:
            parts.append(f"like {json.dumps(example)}")
        elif said.startswith(("is not", "does not")):
            parts.append(f"refused when it {said}")
        else:
            parts.append(said or "in a set form")
    return ", ".join(parts)


def _field_label(
    root: dict[str, Any], name: str, raw: Any, required: bool
) -> tuple[str, dict[str, Any] | None, bool]:
    """One line of the conf tree, the schema whose fields go under it (if any), and
    whether those are the fields of each item of a list."""
    from rich.markup import escape

    node, optional = _optional(root, _node(root, raw))
    kind = _kind(root, node)
    notes = [_bounds(node)] if _bounds(node) else []
    if "default" in node:
        notes.append(f"default {json.dumps(node['default'])}")
    label = f"[bold]{escape(name)}[/]: [cyan]{escape(kind)}[/]"
    label += " [red]required[/]" if required else " [dim]optional[/]" if optional else ""
    if notes:
        label += f" [dim]({escape('; '.join(notes))})[/]"
    if node.get("description"):
        label += f" — {escape(str(node['description']))}"
    listed = node.get("type") == "array"
    inner = _optional(root, _node(root, node.get("items")))[0] if listed else node
    return label, inner if inner.get("properties") else None, listed


def _add_fields(tree: Any, root: dict[str, Any], schema: dict[str, Any], depth: int = 0) -> None:
    required = set(schema.get("required", []))
    for name, raw in schema.get("properties", {}).items():
        label, inner, listed = _field_label(root, name, raw, name in required)
        branch = tree.add(label)
        if inner is not None and depth < 8:  # a schema may refer to itself
            under = branch.add("[dim]each item:[/]") if listed else branch
            _add_fields(under, root, inner, depth + 1)


def _conf_tree(hosted: HostedVersion) -> Any:
    """The conf as a tree: groups and the items of lists with their own fields, each with
    its type, format, choices, bounds, default and whether it is required or optional."""
    from rich.tree import Tree

    from accelerator_prefect.validation import grouped_fields

    root = hosted.parameter_schema
    tree = Tree("[bold]conf[/] [dim](set with --conf FIELD=VALUE or --conf-file FILE)[/]")
    conf = grouped_fields(root, "conf")  # allOf groups (nf-core style) read as one
    if not conf.get("properties"):
        tree.add("[dim]no settings[/]")
    _add_fields(tree, root, conf)
    return tree


@app.command()
def show(
    model: str,
    version: str | None = typer.Option(None, "--version", help="Show this version."),
    lock: bool = typer.Option(
        False, "--lock", help="Print only the version's locked environment (requirements.lock)."
    ),
) -> None:
    """Show a model: description, versions, libraries and its configuration form."""
    from accelerator_prefect.catalog import pick_version

    acc = connect()
    try:
        hosted_model = acc.get(model)
        hosted = pick_version(hosted_model, version)
    except AcceleratorError as exc:
        fail(str(exc))
    record = hosted.record
    if lock:
        if record.environment is None:
            fail(f"{hosted.name}@{hosted.version} declares no environment of its own")
        print(record.environment.lock, end="")
        return
    console.print(
        Panel(
            Markdown(hosted.description or "_no description_"),
            title=f"[bold]{record.title}[/] — {hosted.name}@{hosted.version}",
            subtitle=(
                f"owner {record.owner} · project {record.project} · scope {record.scope.value}"
            ),
        )
    )
    from accelerator_prefect.versions import deprecation_notice

    notice = deprecation_notice(hosted)
    if notice:
        errors.print(f"[bold yellow]warning:[/] {notice}", highlight=False)
    versions = Table("version", "status", "code", "published", "by", title="versions")
    for v in hosted_model.versions:
        pin = "working tree (dirty)" if v.record.dirty else (v.record.commit or "")[:12]
        versions.add_row(
            v.version,
            _status(v),
            pin,
            f"{v.record.published_at:%Y-%m-%d %H:%M}",
            v.record.published_by,
        )
    console.print(versions)
    for pinned in hosted.record.data:
        console.print(f"reference data: {pinned.path} (DVC md5 {pinned.md5})", highlight=False)
    _print_environment(hosted.record)
    console.print(_conf_tree(hosted))
    if hosted.secrets:
        needed = Table("secret", "required", "description", title="secrets (give with --secret)")
        for name, spec in hosted.secrets.items():
            needed.add_row(name, "yes" if spec.required else "no", spec.description)
        console.print(needed)
    if _sees_prefect_ui(acc):
        ui = (hosted.workspace or acc.api_url).removesuffix("/api")
        console.print(f"Prefect UI: {ui}/deployments/deployment/{hosted.deployment_id}")


def _sees_prefect_ui(acc: Accelerator) -> bool:
    """Whether to point at the Prefect UI: for operators reaching Prefect itself, not
    through the portal (users never sign in there)."""
    from accelerator_prefect.client import AsyncAccelerator

    return type(acc._core) is AsyncAccelerator and acc.principal.operator


def _print_environment(record: HostingRecord) -> None:
    """The version's environment: where it is declared, its lock, and each direct
    dependency with the version it is locked at."""
    environment = record.environment
    if environment is None:
        console.print("libraries: the platform's own (the repository declares no environment)")
        return
    console.print(
        f"libraries: declared in {environment.source}; Python {environment.python}, "
        f"runtime {environment.runtime} (acc show --lock prints the lock)\n"
        f"lock hash: {environment.hash}",
        highlight=False,
        soft_wrap=True,
    )
    from accelerator_prefect.environments import requirement_name

    locked = environment.packages
    table = Table("requirement", "locked at", title="libraries")
    for requirement in environment.requirements:
        table.add_row(requirement, locked.get(requirement_name(requirement), "?"))
    console.print(table)


# -- versions ---------------------------------------------------------------------------------


@app.command()
def versions(model: str) -> None:
    """List every version of a model: status, publication, code commit, runs."""
    acc = connect()
    try:
        infos = acc.versions(model)
        hosted = {v.version: v for v in acc.get(model).versions}
    except AcceleratorError as exc:
        fail(str(exc))
    table = Table("version", "status", "published", "by", "code", "runs", title=model)
    for info in infos:
        pin = "working tree (dirty)" if info.dirty else (info.commit or "")[:12]
        table.add_row(
            info.version,
            _status(hosted[info.version]),
            f"{info.published_at:%Y-%m-%d %H:%M}",
            info.published_by,
            pin,
            str(info.runs),
        )
    console.print(table)


def _lifecycle(model: str, version: str, status: str, replaced_by: str | None = None) -> None:
    acc = connect()
    try:
        if status == "deprecated":
            moved = acc.deprecate(model, version, replaced_by)
        else:
            moved = (
                acc.archive(model, version) if status == "archived" else acc.restore(model, version)
            )
    except AcceleratorError as exc:
        fail(str(exc))
    console.print(f"{moved.name}@{moved.version} is now {_status(moved)}")


@app.command()
def deprecate(
    model: str,
    version: str,
    replaced_by: str | None = typer.Option(
        None, "--replaced-by", help="The version to use instead (default: the next active one)."
    ),
) -> None:
    """Deprecate a version: it still runs, but every launch warns and names its replacement."""
    _lifecycle(model, version, "deprecated", replaced_by)


@app.command()
def archive(model: str, version: str) -> None:
    """Archive a version: hidden from the catalog, no new runs; its runs stay readable."""
    _lifecycle(model, version, "archived")


@app.command()
def restore(model: str, version: str) -> None:
    """Make a deprecated or archived version active again."""
    _lifecycle(model, version, "active")


# -- running ----------------------------------------------------------------------------------


def _coerce(text: str, schema: dict[str, Any]) -> Any:
    """A `--conf` value as the field's type says; JSON for anything structured."""
    kind = schema.get("type")
    if kind == "string" or ("enum" in schema and all(isinstance(e, str) for e in schema["enum"])):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_conf(pairs: list[str], schema: dict[str, Any]) -> dict[str, Any]:
    """``["a=1", "b.c=x"]`` -> ``{"a": 1, "b": {"c": "x"}}``, typed by the conf schema."""
    from accelerator_prefect.validation import field_schema

    conf: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--conf {pair!r}: expected FIELD=VALUE, e.g. --conf scenario=ssp245")
        *parents, leaf = key.split(".")
        target = conf
        for part in parents:
            target = target.setdefault(part, {})
        field = field_schema(schema, "conf", parents[0] if parents else leaf)
        target[leaf] = _coerce(value, {} if parents else field)
    return conf


def _as_json(value: Any) -> Any:
    """YAML's own values as JSON has them: dates and times become ISO 8601 text (what a
    `date`/`datetime` field's schema wants), numbers, lists and mappings stay as they are."""
    from datetime import date, time

    if isinstance(value, dict):
        return {str(k): _as_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_json(v) for v in value]
    if isinstance(value, date | time):  # datetime is a date
        return value.isoformat()
    return value


def _read_conf_file(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except OSError as exc:
        fail(f"--conf-file {path}: cannot read it ({exc.strerror})")
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        fail(f"--conf-file {path}: not valid JSON at {where}: {exc.msg}")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or exc
        fail(f"--conf-file {path}: not valid YAML{where}: {problem}")
    if not isinstance(data, dict):
        fail(f"--conf-file {path}: expected a mapping of conf fields, e.g. start: 1990-01-01")
    converted: dict[str, Any] = _as_json(data)
    return converted


@app.command()
def run(
    model: str,
    conf: list[str] = typer.Option([], "--conf", "-c", help="A conf field, FIELD=VALUE (repeat)."),
    conf_file: Path | None = typer.Option(None, help="Conf fields from a YAML or JSON file."),
    version: str | None = typer.Option(None, "--version", help="Run this version."),
    inputs: list[str] = typer.Option(
        [],
        "--input",
        "-i",
        help="An input file or folder (acc://…; folders end with /). Repeat for more.",
    ),
    output: str | None = typer.Option(None, help="Write results here (an acc:// folder)."),
    secret: list[str] = typer.Option(
        [],
        "--secret",
        "-s",
        help="A secret the model needs, by NAME: read from ACC_SECRET_<NAME>, else asked "
        "for without echo. Repeat for more.",
    ),
    remember: bool = typer.Option(False, help="Keep the secrets given for your next runs."),
    wait: bool = typer.Option(False, "--wait", "-w", help="Follow the run until it ends."),
    timeout: float = typer.Option(3600, help="With --wait: give up after this many seconds."),
) -> None:
    """Launch a run of a hosted model."""
    from accelerator_prefect.catalog import pick_version

    acc = connect()
    try:
        hosted = pick_version(acc.get(model), version)
        values = _read_conf_file(conf_file) if conf_file else {}
        values.update(parse_conf(conf, hosted.parameter_schema))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DeprecationWarning)
            handle = acc.launch(
                model,
                values,
                version=hosted.version,
                inputs=inputs or None,
                output=output,
                secrets=_secrets(secret),
                remember=remember,
                via="cli",
            )
    except ValidationFailed as exc:
        fail(str(exc), code=2)
    except AcceleratorError as exc:
        fail(str(exc))
    _launched(acc, f"{hosted.name}@{hosted.version}", handle, caught, wait, timeout)


def _launched(
    acc: Accelerator,
    what: str,
    handle: Run,
    caught: list[warnings.WarningMessage],
    wait: bool,
    timeout: float,
) -> None:
    """Report a launch (and its deprecation warnings); with ``wait``, follow it to the end."""
    for warning in caught:
        if issubclass(warning.category, DeprecationWarning):
            errors.print(f"[bold yellow]warning:[/] {warning.message}", highlight=False)
    console.print(f"[green]launched[/] {what} run [bold]{handle.id}[/]")
    if _sees_prefect_ui(acc):
        console.print(f"Prefect UI: {handle.url}")
    if not wait:
        console.print(f"Follow it with: acc logs --follow {handle.id}")
        return
    state = _follow(acc, str(handle.id), timeout)
    _print_outputs(acc, str(handle.id))
    if state != "Completed":
        raise typer.Exit(1)


@app.command()
def rerun(
    run_id: str,
    secret: list[str] = typer.Option(
        [], "--secret", "-s", help="A secret the model needs, by NAME (as for `acc run`)."
    ),
    wait: bool = typer.Option(False, "--wait", "-w", help="Follow the run until it ends."),
    timeout: float = typer.Option(3600, help="With --wait: give up after this many seconds."),
) -> None:
    """Run a run again: the same version, conf and inputs. Compare them with `acc diff`."""
    acc = connect()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DeprecationWarning)
            handle = acc.rerun(run_id, secrets=_secrets(secret), via="cli")
    except ValidationFailed as exc:
        fail(str(exc), code=2)
    except AcceleratorError as exc:
        fail(str(exc))
    _launched(acc, f"a rerun of {run_id}", handle, caught, wait, timeout)


def _value(value: object) -> str:
    if value is None:
        return "—"
    return value if isinstance(value, str) else json.dumps(value)


@app.command()
def diff(run_a: str, run_b: str) -> None:
    """Show what differed between two runs: code, data, conf, inputs, outputs, packages and
    environment."""
    acc = connect()
    try:
        found = acc.diff(run_a, run_b)
    except AcceleratorError as exc:
        fail(str(exc))
    table = Table("kind", "what", "run A", "run B", title=f"{run_a} (A) vs {run_b} (B)")
    for kind in ("code", "data", "conf", "inputs", "outputs", "packages", "environment"):
        changes = getattr(found, kind)
        if not changes:
            table.add_row(kind, "[green]identical[/]", "", "")
        for change in changes:
            short = kind in {"inputs", "outputs"}
            a = _value(change.a)[:12] if short and change.a else _value(change.a)
            b = _value(change.b)[:12] if short and change.b else _value(change.b)
            table.add_row(kind, change.what, a, b)
    console.print(table)
    verdict = "the same" if found.identical else "different"
    console.print(
        f"{found.same_outputs} output file(s) identical; the runs are [bold]{verdict}[/] "
        "in code, data, conf, inputs and outputs"
    )


@app.command()
def provenance(run_id: str) -> None:
    """Print a run's provenance record (JSON): code, data, conf, inputs, outputs, packages."""
    acc = connect()
    try:
        record = acc.run(run_id).provenance()
    except AcceleratorError as exc:
        fail(str(exc))
    typer.echo(record.model_dump_json(indent=2))


def _secrets(names: list[str]) -> dict[str, str]:
    """Each named secret's value, from ``ACC_SECRET_<NAME>`` or typed in without echo."""
    import os

    values = {}
    for name in names:
        if "=" in name:
            fail("--secret takes a NAME only; its value comes from ACC_SECRET_<NAME> or a prompt")
        value = os.environ.get(f"ACC_SECRET_{name}")
        if value is None:
            value = typer.prompt(f"{name}", hide_input=True)
        values[name] = value
    return values


def _follow(acc: Accelerator, run_id: str, timeout: float) -> str:
    """Print log lines as they arrive until the run ends; return the final state."""
    handle = acc.run(run_id)
    seen, deadline = 0, time.monotonic() + timeout
    with console.status("waiting for the run…") as status:
        while True:
            state = handle.state
            final = state in {"Completed", "Failed", "Crashed", "Cancelled"}
            if final:
                handle.wait()  # returns once the closing log lines are in
            lines = handle.logs()
            for line in lines[seen:]:
                console.print(line, highlight=False, markup=False)
            seen = len(lines)
            status.update(f"run is {state}")
            if final:
                break
            if time.monotonic() > deadline:
                fail(f"run {run_id} is still {state} after {timeout:g} s")
            time.sleep(1.0)
    colour = "green" if state == "Completed" else "red"
    console.print(f"[{colour}]{state}[/]")
    return state


@app.command()
def whoami() -> None:
    """Who you act as, and how: your name, projects and roles, the credential used, and
    how to act as yourself."""
    acc = connect()
    try:
        principal = acc.principal
    except AcceleratorError as exc:
        fail(str(exc))
    kind = "operator" if principal.operator else "guest" if principal.guest else "user"
    console.print(f"[bold]{principal.name}[/] — {kind}", highlight=False)
    console.print(f"acting {_credential()}", highlight=False, soft_wrap=True)
    if principal.projects:
        table = Table("project", "role", "may")
        for project, role in sorted(principal.projects.items()):
            may = "see, run and publish as owner " + principal.name
            table.add_row(project, role.value, may if role.value == "author" else "see and run")
        console.print(table)
    elif not principal.guest:
        console.print("projects: none", highlight=False)
    authoring = any(role.value == "author" for role in principal.projects.values())
    console.print(
        _how_to_act_as_yourself(principal.name, kind, authoring), highlight=False, soft_wrap=True
    )


def _credential() -> str:
    """How this CLI authenticates, in the order :func:`connect` uses."""
    settings = get_settings(home=options.home)
    token = settings.token is not None
    portal = options.url or (None if options.api_url else settings.url)
    if portal:
        held = "your personal token from ACC_TOKEN" if token else "no token"
        link = " and a shared link (--link / ACC_LINK)" if options.link else ""
        return f"through the portal at {portal} (ACC_URL), with {held}{link}"
    where = options.api_url or "the local platform"
    if token:
        return f"with your personal token from ACC_TOKEN, straight to the Prefect API of {where}"
    if options.link:
        return f"as a guest of a shared link (--link / ACC_LINK), on {where}"
    return (
        f"as the local platform's operator, with the operator token `acc up` keeps in "
        f"{settings.operator_token_file} (no ACC_TOKEN is set), on {where}"
    )


def _how_to_act_as_yourself(name: str, kind: str, authoring: bool = True) -> str:
    if kind == "user" and not authoring:
        return (
            f"You may run models but publish none: an operator makes you an author with "
            f"`acc users add {name} --project PROJECT:author`."
        )
    if kind == "user":
        return (
            f"You publish as yourself: write owner: {name} and a project where you are an "
            "author in your manifests."
        )
    return (
        "To act as yourself: an operator runs `acc users add YOUR-NAME --project "
        "PROJECT:author` (it prints your token once); then set ACC_TOKEN to that token (and "
        "ACC_URL to the portal's address, if you are not on the platform's machine) and "
        "write owner: YOUR-NAME in your manifests. `acc whoami` then shows your name."
    )


@app.command()
def cancel(run_id: str) -> None:
    """Cancel a run (its launcher, its model's owner, operators)."""
    acc = connect()
    try:
        state = acc.run(run_id).cancel()
    except AcceleratorError as exc:
        fail(str(exc))
    console.print(f"run {run_id} is {state}")


@app.command()
def portal(
    port: int = typer.Option(8600, help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (behind a proxy)."),
    workers: int = typer.Option(1, help="Worker processes (they share no state of their own)."),
) -> None:
    """Serve the portal, the users' HTTP API, on its own (e.g. behind a TLS proxy).

    It needs the Prefect API (ACC_API_URL or the local platform), its auth string
    (ACC_API_AUTH_STRING or the home's) and the storage settings; users need only
    its address and their token.
    """
    import uvicorn

    console.print(f"serving the portal on http://{host}:{port}/api/v1 (Ctrl-C stops it)")
    uvicorn.run(
        "accelerator_prefect.portal:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        server_header=False,
        proxy_headers=True,
        timeout_graceful_shutdown=10,
    )


@app.command()
def logs(
    run_id: str,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the run ends."),
) -> None:
    """Print a run's logs."""
    acc = connect()
    try:
        if follow:
            _follow(acc, run_id, timeout=24 * 3600)
            return
        for line in acc.run(run_id).logs():
            console.print(line, highlight=False, markup=False)
    except AcceleratorError as exc:
        fail(str(exc))


def _print_outputs(acc: Accelerator, run_id: str) -> None:
    from accelerator_prefect.mapping import human_size

    handle = acc.run(run_id)
    files = handle.outputs()
    if not files:
        expired = handle.outputs_expired
        if expired:
            console.print(expired, highlight=False)
        return
    complete = handle.outputs_complete
    said = f"outputs in {handle.output_location}" + ("" if complete else " (INCOMPLETE)")
    console.print(said, highlight=False, soft_wrap=True)  # whole, to copy
    table = Table("file", "size", "type")
    for f in files:
        altered = " [red](altered: not what the run wrote)[/]" if f.altered else ""
        table.add_row(f.path + altered, human_size(f.size), f.media_type)
    console.print(table)
    if any(f.altered for f in files):
        console.print(
            "[red]Files marked altered were changed after the run wrote them;[/] they are "
            "not its result."
        )
    console.print(f"Download them with: acc get {handle.output_location} .")


@app.command()
def outputs(run_id: str) -> None:
    """List the files a run wrote."""
    acc = connect()
    try:
        _print_outputs(acc, run_id)
    except AcceleratorError as exc:
        fail(str(exc))


# -- storage ----------------------------------------------------------------------------------


def _storage() -> Storage:
    """Storage as the signed-in principal may use it (their projects and own area)."""
    try:
        return connect().storage
    except AcceleratorError as exc:
        fail(str(exc))


def _storage_failed(exc: Exception) -> NoReturn:
    """Say what went wrong without a traceback: our own errors as they are, the
    backend's (S3 credentials, network …) named as such."""
    if isinstance(exc, AcceleratorError):
        fail(str(exc))
    if isinstance(exc, KeyboardInterrupt):
        raise exc
    fail(
        f"the storage backend refused: {type(exc).__name__}: {exc} (check ACC_STORAGE_URL, "
        "ACC_STORAGE_OPTIONS and the backend's credentials)"
    )


def _progress() -> Progress:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


@app.command()
def ls(uri: str = typer.Argument("acc://", help="An acc:// folder.")) -> None:
    """List files and folders in acc:// storage."""
    from accelerator_prefect.mapping import human_size

    try:
        entries = _storage().ls(uri)
    except Exception as exc:
        _storage_failed(exc)
    table = Table("name", "size", "modified", "type", title=uri, title_justify="left")
    for e in entries:
        table.add_row(
            e.name + ("/" if e.is_folder else ""),
            "" if e.is_folder else human_size(e.size),
            f"{e.modified:%Y-%m-%d %H:%M}" if e.modified else "",
            e.media_type or "folder",
        )
    console.print(table)


@app.command()
def quota() -> None:
    """What each storage area you may use holds, against its quota."""
    from accelerator_prefect.mapping import human_size

    try:
        areas = connect().storage_usage()
    except (AcceleratorError, OSError) as exc:
        fail(str(exc))
    table = Table("area", "stored", "quota", "used")
    for area in areas:
        share = f"{area.used / area.quota:.0%}" if area.quota else ""
        style = "[red]" if area.full else ""
        table.add_row(
            area.area,
            human_size(area.used),
            area.quota_text or "none",
            f"{style}{share}{' (full)' if area.full else ''}",
        )
    console.print(table)


@app.command()
def sweep(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be deleted."),
) -> None:
    """Delete run outputs, uploads and guest areas past their retention, and record what
    was deleted (operators; `acc up` does it every ACC_SWEEP_EVERY seconds)."""
    from accelerator_prefect.mapping import human_size

    acc = connect()
    try:
        with console.status("sweeping…"):
            deleted = acc.sweep(dry_run=dry_run)
    except (AcceleratorError, ValueError, OSError) as exc:
        fail(str(exc))
    if not deleted:
        console.print("nothing is past its retention.")
        return
    verb = "would delete" if dry_run else "deleted"
    table = Table("what", "where", "files", "size", "why", title=f"{verb}:", title_justify="left")
    for d in deleted:
        table.add_row(d.kind, d.uri, str(d.files), human_size(d.bytes), d.reason)
    console.print(table)
    if not dry_run:
        console.print(
            "[dim]Recorded in acc://.platform/retention/ and in each model's audit log; "
            "provenance and run history are kept.[/]"
        )


@app.command()
def put(
    sources: list[Path] = typer.Argument(..., help="Local files or folders."),
    destination: str = typer.Argument(..., help="An acc:// folder (ending with /) or file."),
) -> None:
    """Copy local files or folders into acc:// storage."""
    storage = _storage()
    try:
        plan = [pair for source in sources for pair in storage.plan_put(source, destination)]
        total = sum(local.stat().st_size for local, _ in plan)
        with _progress() as progress:
            task = progress.add_task(f"put {len(plan)} file(s)", total=total)
            for source in sources:
                storage.put(source, destination, lambda n: progress.advance(task, n))
    except Exception as exc:
        _storage_failed(exc)
    for _, uri in plan:
        console.print(f"[green]✓[/] {uri}", highlight=False)


@app.command()
def get(
    uri: str = typer.Argument(..., help="An acc:// file or folder."),
    destination: Path = typer.Argument(Path("."), help="A local folder or file name."),
) -> None:
    """Copy files or folders out of acc:// storage."""
    storage = _storage()
    try:
        plan = storage.plan_get(uri, destination)
        total = sum(entry.size for entry, _ in plan)
        with _progress() as progress:
            task = progress.add_task(f"get {len(plan)} file(s)", total=total)
            written = storage.get(uri, destination, lambda n: progress.advance(task, n))
    except Exception as exc:
        _storage_failed(exc)
    for path in written:
        console.print(f"[green]✓[/] {path}", highlight=False)


# -- users and tokens ---------------------------------------------------------------------------

users_app = typer.Typer(help="The directory of users (operators only).", no_args_is_help=True)
tokens_app = typer.Typer(help="Personal API tokens (operators only).", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")


def _projects(values: list[str]) -> dict[str, str]:
    projects = {}
    for value in values:
        project, _, role = value.partition(":")
        if role not in {"", "member", "author"}:
            fail(f"--project {value!r}: expected PROJECT or PROJECT:member or PROJECT:author")
        projects[project] = role or "member"
    return projects


@users_app.command("add")
def users_add(
    name: str,
    project: list[str] = typer.Option(
        [], "--project", "-p", help="PROJECT or PROJECT:author (repeat)."
    ),
    operator: bool = typer.Option(False, help="Operates the whole platform."),
    oidc_subject: str | None = typer.Option(
        None,
        "--oidc-subject",
        help="Their account's stable subject (`sub`) at the catalog's identity provider: "
        "single sign-on as that account is this user.",
    ),
) -> None:
    """Add a user (or change their projects) and print a new token for them, once."""
    acc = connect()
    try:
        record, token = acc.add_user(name, _projects(project), operator, oidc_subject)
    except (AcceleratorError, ValueError) as exc:
        fail(str(exc))
    roles = ", ".join(f"{p} ({r.value})" for p, r in record.projects.items()) or "no project"
    console.print(f"[green]user[/] {record.name}: {roles}" + (" · operator" if operator else ""))
    console.print(f"token (shown once; give it to {name}): [bold]{token}[/]", highlight=False)


@users_app.command("list")
def users_list() -> None:
    """List users, their projects and roles."""
    acc = connect()
    try:
        users = acc.users()
    except AcceleratorError as exc:
        fail(str(exc))
    table = Table("user", "projects", "operator")
    for user in users:
        roles = ", ".join(f"{p} ({r.value})" for p, r in user.projects.items())
        table.add_row(user.name, roles, "yes" if user.operator else "")
    console.print(table)


@users_app.command("quota")
def users_quota(
    name: str,
    quota: str | None = typer.Argument(
        None, help="Most their own area may hold, e.g. '5 GB'; none: the platform's default."
    ),
) -> None:
    """Set the most a user's own area (acc://users/NAME/) may hold."""
    acc = connect()
    try:
        record = acc.set_user_quota(name, quota)
    except (AcceleratorError, ValueError) as exc:
        fail(_plain(exc))
    console.print(f"{record.name}: quota {record.quota or 'the platform default'}")


def _lifetime(expires: str | None) -> timedelta | None:

    if not expires:
        return None
    number, unit = expires[:-1], expires[-1:]
    if not number.isdigit() or unit not in {"d", "h"}:
        fail(f"--expires {expires!r}: expected a number of days or hours, e.g. 30d or 12h")
    return timedelta(**{"days" if unit == "d" else "hours": int(number)})


@tokens_app.command("add")
def tokens_add(
    user: str,
    expires: str | None = typer.Option(None, help="Lifetime, e.g. 30d or 12h."),
) -> None:
    """Print a new token for a user, once."""
    lifetime = _lifetime(expires)
    acc = connect()
    try:
        token = acc.add_token(user, lifetime)
    except AcceleratorError as exc:
        fail(str(exc))
    console.print(f"token (shown once): [bold]{token}[/]", highlight=False)


@tokens_app.command("revoke")
def tokens_revoke(token_id: str) -> None:
    """Revoke a token by its id, the part after acc_ (effective at once)."""
    acc = connect()
    try:
        acc.revoke_token(token_id)
    except AcceleratorError as exc:
        fail(str(exc))
    console.print(f"revoked token {token_id}")


projects_app = typer.Typer(
    help="Projects bound to a Prefect API of their own (operators).", no_args_is_help=True
)
app.add_typer(projects_app, name="projects")


@projects_app.command("bind")
def projects_bind(
    project: str,
    api_url: str = typer.Option(..., "--to", help="The workspace's Prefect API URL."),
    work_pool: str | None = typer.Option(None, help="Its default work pool."),
    credential: str | None = typer.Option(
        None,
        envvar="ACC_WORKSPACE_CREDENTIAL",
        help="That API's auth string (a Prefect server) or API key (Prefect Cloud).",
    ),
) -> None:
    """Bind a project to its own Prefect API: its models are published and run there."""
    acc = connect()
    try:
        acc.bind_project(project, api_url, work_pool, credential)
    except (AcceleratorError, ValueError) as exc:
        fail(str(exc))
    console.print(f"project {project} now lives on {api_url}")


@projects_app.command("policy")
def projects_policy(
    project: str | None = typer.Argument(None, help="The project (none: list every policy)."),
    keep_outputs: str | None = typer.Option(
        None, help="How long its runs' output files are kept after they end, e.g. '90 d'."
    ),
    keep_uploads: str | None = typer.Option(
        None, help="How long files in its uploads/ folder are kept, e.g. '30 d'."
    ),
    quota: str | None = typer.Option(None, help="Most its folder may hold, e.g. '100 GB'."),
) -> None:
    """Set (or list) a project's retention and storage quota. Only what is given changes;
    'default' hands a value back to the platform's (ACC_KEEP_OUTPUTS, ACC_KEEP_UPLOADS,
    ACC_PROJECT_QUOTA)."""
    acc = connect()
    try:
        if project is not None:
            acc.set_policy(
                project, keep_outputs=keep_outputs, keep_uploads=keep_uploads, quota=quota
            )
        policies = acc.policies()
    except (AcceleratorError, ValueError) as exc:
        fail(_plain(exc))
    settings = get_settings(home=options.home)
    table = Table("project", "keeps outputs", "keeps uploads", "quota")
    table.add_row(
        "[dim](default)[/]",
        settings.keep_outputs or "always",
        settings.keep_uploads or "always",
        settings.project_quota or "none",
    )
    for p in policies:
        table.add_row(
            p.name,
            p.keep_outputs or "(default)",
            p.keep_uploads or "(default)",
            p.quota or "(default)",
        )
    console.print(table)


@projects_app.command("list")
def projects_list() -> None:
    """List the projects bound to a workspace of their own."""
    acc = connect()
    try:
        bound = acc.projects()
    except AcceleratorError as exc:
        fail(str(exc))
    table = Table("project", "Prefect API", "work pool")
    for project in bound:
        table.add_row(project.name, project.api_url, project.work_pool or "(default)")
    console.print(table)


# -- sharing, secrets, runs ---------------------------------------------------------------------


@app.command()
def share(
    model: str | None = typer.Argument(None, help="The model to share."),
    version: str | None = typer.Option(None, "--version", help="Open only this version."),
    expires: str | None = typer.Option(None, help="Lifetime, e.g. 30d or 12h."),
    guest_days: int = typer.Option(
        30, "--guest-days", min=1, help="Days each guest keeps their session, files and runs."
    ),
    list_links: bool = typer.Option(False, "--list", help="List the links (of MODEL, if given)."),
    revoke: str | None = typer.Option(None, "--revoke", help="Revoke the link with this id."),
    embed: bool = typer.Option(
        False, "--embed", help="Also print an <iframe> putting the launch form into a web page."
    ),
) -> None:
    """Share a model by link (printed once), list links, or revoke one."""
    acc = connect()
    try:
        if revoke:
            acc.revoke_link(revoke)
            console.print(f"revoked link {revoke}")
            return
        if list_links:
            table = Table("id", "model", "version", "created by", "created", "expires", "state")
            for link in acc.links(model):
                table.add_row(
                    link.id,
                    link.model,
                    link.version or "any",
                    link.created_by,
                    f"{link.created:%Y-%m-%d %H:%M}",
                    f"{link.expires:%Y-%m-%d %H:%M}" if link.expires else "never",
                    "active" if link.active else "[red]revoked or expired[/]",
                )
            console.print(table)
            return
        if model is None:
            fail("name the model to share, e.g. `acc share climate-downscaling`")
        title = acc.get(model).latest.title if embed else ""  # before the link: it shows once
        link = acc.share_link(
            model, version=version, expires_in=_lifetime(expires), guest_days=guest_days
        )
    except AcceleratorError as exc:
        fail(str(exc))
    what = f"{link.model}@{link.version}" if link.version else link.model
    until = f"until {link.expires:%Y-%m-%d %H:%M} UTC" if link.expires else "until revoked"
    console.print(f"[green]link {link.id}[/] opens {what} to whoever holds it, {until}")
    console.print(
        f"each person who opens it is a guest of their own, for {link.guest_days} days: "
        "then their files and runs' outputs are removed"
    )
    console.print(f"shown once: [bold]{link.url}[/]", highlight=False, soft_wrap=True)
    from accelerator_prefect.client import embed_snippet

    if embed and link.url:
        console.print("to put its launch form into a web page, paste this where it should go:")
        # Printed bare (no markup, no wrapping): it is copied as it is.
        snippet = embed_snippet(link.url, title)
        console.print(snippet, markup=False, highlight=False, soft_wrap=True)
    console.print(f"revoke it with: acc share --revoke {link.id}")


secrets_app = typer.Typer(help="Secrets kept for your runs.", no_args_is_help=True)
app.add_typer(secrets_app, name="secrets")


@secrets_app.command("forget")
def secrets_forget(model: str) -> None:
    """Delete the secrets you asked to be remembered for a model."""
    acc = connect()
    try:
        count = acc.forget_secrets(model)
    except AcceleratorError as exc:
        fail(str(exc))
    console.print(f"forgot {count} secret(s) for {model}")


@secrets_app.command("sweep")
def secrets_sweep() -> None:
    """Delete the Secret blocks of runs that ended without deleting them (operators)."""
    acc = connect()
    try:
        count = acc.sweep_secrets()
    except AcceleratorError as exc:
        fail(str(exc))
    console.print(f"deleted {count} leftover secret block(s)")


def _when(option: str, text: str | None) -> datetime | None:
    """``--since 7d`` / ``12h`` (ago) or an ISO date or date-time (UTC unless it says)."""
    if not text:
        return None
    number, unit = text[:-1], text[-1:]
    if number.isdigit() and unit in {"d", "h"}:
        return datetime.now(UTC) - timedelta(**{"days" if unit == "d" else "hours": int(number)})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{option} {text!r}: expected how long ago (7d, 12h) or a date such as 2026-11-01")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command()
def runs(
    model: str | None = typer.Argument(None, help="Only runs of this model."),
    version: str | None = typer.Option(None, "--version", help="Only runs of this version."),
    user: str | None = typer.Option(None, "--by", help="Only runs this user launched."),
    state: list[str] = typer.Option([], "--state", help="Only runs in this state (repeat)."),
    since: str | None = typer.Option(None, help="Since: how long ago (7d, 12h) or a date."),
    until: str | None = typer.Option(None, help="Until: a date or date-time."),
    limit: int = typer.Option(50, help="At most this many, newest first."),
    phases: bool = typer.Option(
        True, help="Show how long each run was queued and starting (one more read per run)."
    ),
) -> None:
    """List the runs you may read: yours, and every run of the models you own, with where
    their time went: queued for a worker, starting, computing."""
    acc = connect()
    try:
        found = acc.runs(
            model,
            version=version,
            user=user,
            state=[s.title() for s in state],
            since=_when("--since", since),
            until=_when("--until", until),
            limit=limit,
            phases=phases,
        )
    except AcceleratorError as exc:
        fail(str(exc))
    columns = ["run", "model", "version", "user", "via", "state", "started"]
    table = Table(*columns, *(["queued", "starting"] if phases else []), "computing")
    for r in found:
        table.add_row(
            r.id,
            r.model,
            r.version,
            r.user,
            r.via,
            r.state,
            f"{r.started:%Y-%m-%d %H:%M:%S}" if r.started else "",
            *([_seconds(r.queued), _seconds(r.starting)] if phases else []),
            _seconds(r.duration),
        )
    console.print(table)


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f} s"


@app.command()
def access(
    model: str,
    scope: str | None = typer.Option(
        None, "--scope", help="Set it: private, project, link or public (every version)."
    ),
) -> None:
    """Who may see and run a model; with --scope, set it for every version at once (its
    owner or an operator), without publishing again."""
    acc = connect()
    try:
        hosted = acc.set_access(model, scope) if scope else acc.get(model)
    except AcceleratorError as exc:
        fail(str(exc))
    record = hosted.latest.record
    said = f"{model} is {record.scope.value}"
    if record.scope_changed_by and record.scope_changed_at:
        said += f" (set by {record.scope_changed_by}, {record.scope_changed_at:%Y-%m-%d %H:%M})"
    if scope:
        said += f": every version ({', '.join(v.version for v in hosted.versions)})"
    console.print(said, highlight=False)


@app.command()
def audit(
    model: str,
    limit: int = typer.Option(100, help="At most this many entries, newest first."),
) -> None:
    """Who did what to a model: publications, lifecycle, links, launches, cancels."""
    acc = connect()
    try:
        entries = acc.audit(model, limit)
    except AcceleratorError as exc:
        fail(str(exc))
    table = Table("when (UTC)", "who", "what", "details", title=f"audit log of {model}")
    for entry in entries:
        details = ", ".join(f"{k} {v}" for k, v in entry.details.items() if v not in (None, ""))
        table.add_row(
            f"{entry.occurred:%Y-%m-%d %H:%M:%S}", entry.actor or "—", entry.action, details
        )
    console.print(table if entries else f"nothing recorded for {model} yet")


@app.command()
def usage(
    model: str,
    since: str = typer.Option("30d", help="Since: how long ago (30d, 12h) or a date."),
    until: str | None = typer.Option(None, help="Until: a date or date-time."),
) -> None:
    """How a model has been used, per version and day: runs, users, success, durations."""
    acc = connect()
    try:
        rows = acc.usage(
            model, since=_when("--since", since) or datetime.now(), until=_when("--until", until)
        )
    except AcceleratorError as exc:
        fail(str(exc))
    table = Table(
        "version",
        "day",
        "runs",
        "users",
        "success",
        "queued",
        "starting",
        "computing",
        "computing p95",
        "launch to end",
        title=f"{model} since {since} (medians of completed runs)",
    )
    for row in rows:
        table.add_row(
            row.version,
            f"{row.day:%Y-%m-%d}",
            str(row.runs),
            str(row.users),
            f"{row.success_rate:.0%}",
            _seconds(row.median_queued_seconds),
            _seconds(row.median_starting_seconds),
            _seconds(row.median_seconds),
            _seconds(row.p95_seconds),
            _seconds(row.median_total_seconds),
        )
    console.print(table if rows else f"No finished runs of {model} since {since}.")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
