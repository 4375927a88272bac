"""The portal: the one door users have. Real uvicorn on a loopback port, the session's real
Prefect server and worker; users hold only the portal's address and a token."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from accelerator_prefect import Accelerator, AccessDenied, InvalidConf, NotFound
from accelerator_prefect.platform import PlatformInfo
from tests.conftest import ModelRepo

pytestmark = pytest.mark.scale  # run on PostgreSQL too (make test-postgres)

SLOW_FLOW = """
import time

from pydantic import Field

from accelerator_prefect import Conf, Output, Secrets, jobflow, routine


class SlowConf(Conf):
    seconds: float = Field(default=0.0, ge=0, le=600, description="How long to work.")
    size: int = Field(default=10, ge=0, le=10_000_000, description="Bytes to write.")


@routine
def work(conf: SlowConf, output: Output) -> int:
    with output.open("data.bin", "wb") as f:
        f.write(bytes(range(256)) * (conf.size // 256) + bytes(range(conf.size % 256)))
    print(f"wrote {{conf.size}} bytes")
    time.sleep(conf.seconds)
    return conf.size


@jobflow(name="slow")
def slow(conf: SlowConf, output: Output, secrets: Secrets) -> dict:
    print("the key has", len(secrets.get("API_KEY")), "characters")
    return {{"size": work(conf, output)}}
"""

SLOW_MANIFEST = """
name: {name}
title: Slow
version: 1.0.0
jobflow: flows/slow.py:slow
owner: {owner}
project: {project}
access:
  scope: project
secrets:
  API_KEY:
    description: A key
    required: true
"""


@pytest.fixture(scope="module")
def people(acc: Accelerator) -> dict[str, str]:
    """Tokens and names: an author and a member of one project, and an outsider."""
    suffix = uuid.uuid4().hex[:6]
    project = f"portal-{suffix}"
    found = {"project": project}
    for who, projects in (
        ("author", {project: "author"}),
        ("member", {project: "member"}),
        ("outsider", {}),
    ):
        name = f"{who}-{suffix}"
        _, found[who] = acc.add_user(name, projects)
        found[f"{who}-name"] = name
    return found


@pytest.fixture(scope="module")
def slow_model(
    acc: Accelerator, people: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> str:
    name = f"slow-{uuid.uuid4().hex[:6]}"
    repo = ModelRepo(tmp_path_factory.mktemp("slow") / "models", name)
    repo.write("flows/slow.py", SLOW_FLOW.format())
    repo.write(
        f"deployments/{name}.yaml",
        SLOW_MANIFEST.format(name=name, owner=people["author-name"], project=people["project"]),
    )
    repo.commit("slow")
    acc.publish(repo.manifest)
    return name


def _http(portal: str, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=f"{portal}/api/v1", headers=headers, timeout=120)


SECRET = "sk-live-" + uuid.uuid4().hex


# -- the back end is locked ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/deployments/filter", {}),
        ("POST", "/flow_runs/filter", {}),
        ("POST", "/block_documents/filter", {"include_secrets": True}),
        ("POST", "/variables/filter", {}),
        ("PATCH", "/variables/name/acc-user-operator", {"value": {"operator": True}}),
        ("GET", "/block_types/slug/secret/block_documents?include_secrets=true", None),
    ],
)
def test_the_prefect_api_refuses_anyone_without_its_auth_string(
    platform: PlatformInfo, people: dict[str, str], method: str, path: str, body: object
) -> None:
    for headers in ({}, {"Authorization": f"Bearer {people['member']}"}):
        response = httpx.request(
            method, platform.api_url + path, json=body, headers=headers, timeout=10
        )
        assert response.status_code == 401, (path, headers, response.text[:200])


def test_the_auth_string_is_kept_for_the_platform_only(platform: PlatformInfo) -> None:
    from accelerator_prefect.settings import get_settings

    path = get_settings(home=platform.home).auth_string_file
    assert path.stat().st_mode & 0o077 == 0
    assert len(path.read_text().strip()) >= 32


def test_connect_without_a_credential_is_refused(tmp_path: Path, platform: PlatformInfo) -> None:
    with pytest.raises(AccessDenied, match="no credential"):
        Accelerator.connect(platform.api_url, home=tmp_path)  # no token, no operator file
    with pytest.raises(AccessDenied, match="no credential"):
        Accelerator.connect(url="http://127.0.0.1:9", home=tmp_path)


# -- callers -------------------------------------------------------------------------------------


def test_no_token_or_a_bad_one_is_401_problem_json(portal: str) -> None:
    for token in (None, "acc_000000000000_" + "x" * 43, "garbage"):
        response = _http(portal, token).get("/models")
        assert response.status_code == 401, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["status"] == 401 and problem["title"] and problem["detail"]


# What the portal answers without a credential, besides its own description (the OpenAPI
# document and its docs page, which are not among its routes).
PUBLIC_ROUTES = {("GET", "/api/v1/health")}


def test_every_route_but_the_public_ones_refuses_a_caller_without_a_valid_token(
    portal: str,
) -> None:
    """Every route of the portal's own OpenAPI document, with each of its methods, knocked
    on with no token and with a forged one: each answers 401 before reading anything (or
    429 once refused credentials come too often from one caller)."""
    document = httpx.get(f"{portal}/api/v1/openapi.json", timeout=10).json()
    routes = [
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
        if method in {"get", "post", "put", "patch", "delete"}
    ]
    assert len(routes) > 25 and ("GET", "/api/v1/storage/usage") in routes
    assert set(routes) >= PUBLIC_ROUTES  # the allowance names real routes
    answered: list[str] = []
    for token in (None, "acc_000000000000_" + "x" * 43):
        with httpx.Client(base_url=portal, timeout=30) as http:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            for method, path in routes:
                if (method, path) in PUBLIC_ROUTES:
                    continue
                # Path parameters get plausible values, so only the credential is wrong.
                url = path.format_map(_Anything())
                response = http.request(method, url, headers=headers, json={})
                if response.status_code == 429:  # refused credentials came too often
                    assert response.json()["type"].endswith("rate-limited"), response.text
                elif response.status_code != 401:
                    answered.append(
                        f"{method} {url} ({token and 'forged'}): {response.status_code}"
                    )
    assert not answered, answered


class _Anything(dict[str, str]):
    """Any path parameter: a run id-shaped value for ``run_id``, else a plain name."""

    def __missing__(self, key: str) -> str:
        return str(uuid.uuid4()) if key.endswith("_id") else "climate-downscaling"


def test_what_a_caller_may_not_see_is_404_like_what_does_not_exist(
    portal: str, people: dict[str, str], slow_model: str
) -> None:
    member, outsider = _http(portal, people["member"]), _http(portal, people["outsider"])
    assert slow_model in {m["name"] for m in member.get("/models").json()}
    assert slow_model not in {m["name"] for m in outsider.get("/models").json()}
    hidden = outsider.get(f"/models/{slow_model}")
    missing = outsider.get("/models/no-such-model-here")
    assert hidden.status_code == missing.status_code == 404
    launched = outsider.post(f"/models/{slow_model}/launch", json={"secrets": {"API_KEY": "x"}})
    assert launched.status_code == 404


def test_a_model_is_served_with_its_schemas_and_no_back_end_address(
    portal: str, people: dict[str, str], slow_model: str, platform: PlatformInfo
) -> None:
    response = _http(portal, people["member"]).get(f"/models/{slow_model}")
    assert response.status_code == 200
    version = response.json()["versions"][0]
    assert "seconds" in json.dumps(version["parameter_schema"])
    assert version["record"]["manifest"]["secrets"]["API_KEY"]["required"] is True
    assert platform.api_url not in response.text and str(platform.port) not in response.text


# -- launching through the portal ----------------------------------------------------------------


def test_a_user_with_only_the_portal_and_a_token_launches_and_reads_everything(
    portal: str, people: dict[str, str], slow_model: str
) -> None:
    user = Accelerator.connect(url=portal, token=people["member"])
    assert user.user == people["member-name"]
    run = user.launch(slow_model, {"size": 1000}, secrets={"API_KEY": SECRET})
    assert run.wait(timeout=180) == "Completed"
    assert run.result() == {"size": 1000}
    assert any("wrote 1000 bytes" in line for line in run.logs())
    files = run.outputs()
    assert [(f.path, f.size) for f in files] == [("data.bin", 1000)]
    assert run.outputs_complete
    with run.open_output("data.bin") as f:
        assert f.read() == (bytes(range(256)) * 3 + bytes(range(232)))
    assert run.provenance().model == slow_model
    assert str(run.id) in {r.id for r in user.runs(slow_model)}
    user.close()


def test_a_refused_launch_lists_every_problem_and_creates_no_run(
    portal: str, people: dict[str, str], slow_model: str, acc: Accelerator
) -> None:
    before = len(acc.runs(slow_model, limit=200))
    http = _http(portal, people["member"])
    response = http.post(
        f"/models/{slow_model}/launch", json={"conf": {"seconds": -1, "size": "big"}}
    )
    assert response.status_code == 422
    problem = response.json()
    pointers = {e["pointer"] for e in problem["errors"]}
    assert {"conf.seconds", "conf.size"} <= pointers, problem
    assert any(p.startswith("secrets") for p in pointers), problem
    user = Accelerator.connect(url=portal, token=people["member"])
    with pytest.raises(InvalidConf) as refused:
        user.launch(slow_model, {"seconds": 9999}, secrets={"API_KEY": "x"})
    assert "conf.seconds" in str(refused.value)
    assert len(acc.runs(slow_model, limit=200)) == before


def test_prefer_wait_answers_with_the_final_state(
    portal: str, people: dict[str, str], slow_model: str
) -> None:
    body = json.dumps({"secrets": {"API_KEY": SECRET}}).encode()
    response = _http(portal, people["member"]).post(
        f"/models/{slow_model}/launch",
        content=iter([body[:10], body[10:]]),  # in chunks, no length declared: read whole
        headers={"Prefer": "wait=120", "Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["state"] == "Completed"
    assert response.headers["Preference-Applied"] == "wait=120"


def test_one_idempotency_key_makes_one_run_even_sent_at_once(
    portal: str, people: dict[str, str], slow_model: str, acc: Accelerator
) -> None:
    key = uuid.uuid4().hex
    body = {"conf": {"size": 7}, "secrets": {"API_KEY": SECRET}}
    answers: list[httpx.Response] = []

    def send() -> None:
        answers.append(
            _http(portal, people["member"]).post(
                f"/models/{slow_model}/launch", json=body, headers={"Idempotency-Key": key}
            )
        )

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    again = _http(portal, people["member"]).post(
        f"/models/{slow_model}/launch", json=body, headers={"Idempotency-Key": key}
    )
    ids = {a.json()["id"] for a in [*answers, again]}
    assert all(a.status_code == 201 for a in answers), [a.text for a in answers]
    assert len(ids) == 1
    other = _http(portal, people["member"]).post(
        f"/models/{slow_model}/launch",
        json={**body, "conf": {"size": 8}},
        headers={"Idempotency-Key": key},
    )
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["detail"]
    # The same key from someone else is their own.
    author = _http(portal, people["author"]).post(
        f"/models/{slow_model}/launch", json=body, headers={"Idempotency-Key": key}
    )
    assert author.status_code == 201 and author.json()["id"] not in ids


def test_cancel_stops_the_run_and_deletes_its_secrets(
    portal: str, people: dict[str, str], slow_model: str, acc: Accelerator
) -> None:
    user = Accelerator.connect(url=portal, token=people["member"])
    run = user.launch(slow_model, {"seconds": 300, "size": 100}, secrets={"API_KEY": SECRET})
    deadline = time.monotonic() + 120
    while run.state != "Running":
        assert time.monotonic() < deadline, run.state
        time.sleep(0.2)
    # Someone else may not cancel it.
    refused = _http(portal, people["outsider"]).post(f"/runs/{run.id}/cancel")
    assert refused.status_code == 404
    response = _http(portal, people["member"]).post(f"/runs/{run.id}/cancel")
    assert response.status_code == 200, response.text
    assert run.wait(timeout=120) == "Cancelled"
    blocks = run.parameters["secrets"]["blocks"].values()

    async def remaining() -> list[str]:
        from accelerator_prefect.secrets import existing
        from accelerator_prefect.transport import prefect_client

        async with prefect_client(acc.api_url) as client:
            return sorted(await existing(client, list(blocks)))

    import asyncio

    assert asyncio.run(remaining()) == []


def test_logs_stream_as_server_sent_events_until_the_run_ends(
    portal: str, people: dict[str, str], slow_model: str
) -> None:
    http = _http(portal, people["member"])
    run = http.post(
        f"/models/{slow_model}/launch", json={"conf": {"size": 5}, "secrets": {"API_KEY": SECRET}}
    ).json()
    events: list[tuple[str, str]] = []
    with http.stream("GET", f"/runs/{run['id']}/logs/stream", timeout=180) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        kind = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((kind, json.loads(line.removeprefix("data: "))))
    assert events[-1] == ("end", {"state": "Completed"})
    assert any(kind == "log" and "wrote 5 bytes" in text for kind, text in events)
    assert SECRET not in json.dumps(events)


def test_a_resumed_log_stream_asks_for_a_credential_and_the_right_to_read_the_run(
    portal: str, people: dict[str, str], slow_model: str, acc: Accelerator
) -> None:
    """Resuming with ``Last-Event-ID`` is a new request, decided like the first: no token,
    another user's token, another link's guest get no line of the run."""
    member = _http(portal, people["member"])
    body = {"conf": {"size": 3}, "secrets": {"API_KEY": SECRET}}
    run = member.post(f"/models/{slow_model}/launch", json=body).json()
    path = f"/runs/{run['id']}/logs/stream"
    assert acc.run(run["id"]).wait(timeout=120) == "Completed"
    with member.stream("GET", path, headers={"Last-Event-ID": "0"}) as own:
        assert own.status_code == 200
        assert any(line.startswith("data: ") for line in own.iter_lines())
    # A guest of the model's link: their own runs only, not a member's.
    link = acc.share_link(slow_model).token
    guest = httpx.post(
        f"{portal}/api/v1/guest-sessions", headers={"Authorization": f"Bearer {link}"}
    ).json()["token"]
    for token, status in (
        (None, 401),
        ("acc_000000000000_" + "x" * 43, 401),
        (people["outsider"], 404),
        (guest, 404),
    ):
        with _http(portal, token).stream("GET", path, headers={"Last-Event-ID": "1"}) as knock:
            body = knock.read().decode()
            assert knock.status_code == status, (token, knock.status_code, body)
            assert knock.headers["content-type"].startswith("application/problem+json")
            assert "event:" not in body and "wrote" not in body


def test_an_output_downloads_whole_and_by_range(
    portal: str, people: dict[str, str], slow_model: str
) -> None:
    http = _http(portal, people["member"])
    run = http.post(
        f"/models/{slow_model}/launch",
        json={"conf": {"size": 5000}, "secrets": {"API_KEY": SECRET}},
        headers={"Prefer": "wait=120"},
    ).json()
    expected = bytes(range(256)) * 19 + bytes(range(136))
    whole = http.get(f"/runs/{run['id']}/outputs/data.bin")
    assert whole.status_code == 200 and whole.content == expected
    part = http.get(f"/runs/{run['id']}/outputs/data.bin", headers={"Range": "bytes=100-299"})
    assert part.status_code == 206 and part.content == expected[100:300]
    assert part.headers["Content-Range"] == "bytes 100-299/5000"
    tail = http.get(f"/runs/{run['id']}/outputs/data.bin", headers={"Range": "bytes=-10"})
    assert tail.content == expected[-10:]
    escape = http.get(f"/runs/{run['id']}/outputs/..%2F..%2Fsecrets.txt")
    assert escape.status_code in {400, 404}
    bad = http.get(f"/runs/{run['id']}/outputs/data.bin", headers={"Range": "bytes=9000-"})
    assert bad.status_code == 416


def test_storage_uploads_and_downloads_only_inside_the_callers_areas(
    portal: str, people: dict[str, str]
) -> None:
    http = _http(portal, people["member"])
    mine = f"acc://users/{people['member-name']}/up/table.csv"
    put = http.put("/storage/file", params={"path": mine}, content=b"a,b\n1,2\n")
    assert put.status_code == 201, put.text
    assert http.get("/storage/file", params={"path": mine}).content == b"a,b\n1,2\n"
    listed = http.get("/storage", params={"path": f"acc://users/{people['member-name']}/up/"})
    assert [e["uri"] for e in listed.json()] == [mine]
    theirs = f"acc://users/{people['outsider-name']}/x.csv"
    assert http.put("/storage/file", params={"path": theirs}, content=b"x").status_code == 403
    outsider = _http(portal, people["outsider"])
    assert outsider.get("/storage/file", params={"path": mine}).status_code == 403
    escape = http.get("/storage/file", params={"path": "acc://users/../../etc/passwd"})
    assert escape.status_code in {400, 403, 404}


def test_no_response_and_no_log_line_carries_a_secret(
    portal: str, people: dict[str, str], slow_model: str
) -> None:
    http = _http(portal, people["member"])
    run = http.post(
        f"/models/{slow_model}/launch",
        json={"conf": {"size": 3}, "secrets": {"API_KEY": SECRET}},
        headers={"Prefer": "wait=120"},
    )
    run_id = run.json()["id"]
    bodies = [run.text]
    for path in (
        "/runs",
        f"/runs/{run_id}",
        f"/runs/{run_id}/logs",
        f"/runs/{run_id}/result",
        f"/runs/{run_id}/provenance",
        f"/runs/{run_id}/outputs",
        f"/runs/{run_id}/progress",
        f"/models/{slow_model}",
    ):
        response = http.get(path)
        assert response.status_code == 200, (path, response.text)
        bodies.append(response.text)
    assert not [b for b in bodies if SECRET in b]


def test_the_openapi_document_and_docs_page_are_served(portal: str) -> None:
    document = httpx.get(f"{portal}/api/v1/openapi.json", timeout=10).json()
    assert "/api/v1/models/{model}/launch" in document["paths"]
    assert httpx.get(f"{portal}/api/v1/docs", timeout=10).status_code == 200


def test_a_guest_link_opens_one_model_through_the_portal(
    portal: str, people: dict[str, str], slow_model: str, acc: Accelerator
) -> None:
    author = Accelerator.connect(url=portal, token=people["author"])
    with pytest.raises(AccessDenied):  # a project model: a link would not open it to guests
        Accelerator.connect(url=portal, token=people["member"]).share_link(slow_model)
    models = {m.name for m in acc.catalog()}
    other = next(iter(models - {slow_model}), None)
    guest_http = None
    link = None
    try:
        link = author.share_link(slow_model)
    except AccessDenied:
        pytest.skip("the model's scope admits no links")
    assert link.token
    # The link's own token opens guest sessions, nothing else.
    refused = _http(portal, link.token).get("/models")
    assert refused.status_code == 401 and "POST /api/v1/guest-sessions" in refused.text
    sessions = [_http(portal, link.token).post("/guest-sessions") for _ in range(2)]
    assert [r.status_code for r in sessions] == [201, 201], [r.text for r in sessions]
    one, two = (r.json() for r in sessions)
    assert one["token"].startswith("accg_") and one["model"] == slow_model
    guest_http, other_guest = _http(portal, one["token"]), _http(portal, two["token"])
    me, them = guest_http.get("/me").json(), other_guest.get("/me").json()
    assert me["guest"] and them["guest"] and me["name"] != them["name"]
    assert me["area"] == one["area"] != them["area"] == two["area"]
    # Only a link's own token opens one: not a guest token, a personal one, or nothing.
    assert guest_http.post("/guest-sessions").status_code == 401
    assert _http(portal, people["member"]).post("/guest-sessions").status_code == 401
    assert _http(portal, None).post("/guest-sessions").status_code == 401
    # One guest's file is theirs alone.
    mine = f"{one['area']}uploads/mine.txt"
    put = guest_http.put("/storage/file", params={"path": mine}, content=b"guest one")
    assert put.status_code in (200, 201), put.text
    assert guest_http.get("/storage/file", params={"path": mine}).content == b"guest one"
    assert other_guest.get("/storage/file", params={"path": mine}).status_code in (403, 404)
    assert other_guest.get("/storage", params={"path": one["area"]}).status_code in (403, 404)
    # One guest's run too: another guest of the same link finds nothing by its id; the
    # link's owner sees it.
    launched = guest_http.post(
        f"/models/{slow_model}/launch", json={"secrets": {"API_KEY": SECRET}}
    )
    assert launched.status_code == 201, launched.text
    run_id = launched.json()["id"]
    assert guest_http.get(f"/runs/{run_id}").status_code == 200
    for method, path in (
        ("GET", f"/runs/{run_id}"),
        ("GET", f"/runs/{run_id}/logs"),
        ("GET", f"/runs/{run_id}/outputs"),
        ("POST", f"/runs/{run_id}/cancel"),
        ("POST", f"/runs/{run_id}/rerun"),
    ):
        assert other_guest.request(method, path).status_code == 404, (method, path)
    assert run_id not in {r["id"] for r in other_guest.get("/runs").json()}
    assert _http(portal, people["author"]).get(f"/runs/{run_id}").status_code == 200
    assert [m["name"] for m in guest_http.get("/models").json()] == [slow_model]
    if other:
        assert guest_http.get(f"/models/{other}").status_code == 404
    author.revoke_link(link.id)
    assert guest_http.get("/models").status_code == 401
    assert _http(portal, link.token).post("/guest-sessions").status_code == 401
    with pytest.raises(NotFound):
        author.get("no-such-model")


def test_the_cli_works_through_the_portal_with_only_its_address_and_a_token(
    portal: str, people: dict[str, str], slow_model: str, tmp_path: Path
) -> None:
    """`acc` with ACC_URL and ACC_TOKEN, on a machine with no platform home at all."""
    import os
    import subprocess
    import sys

    bare = {k: v for k, v in os.environ.items() if not k.startswith(("ACC_", "PREFECT_", "AWS_"))}
    env = {
        **bare,
        "ACC_URL": portal,
        "ACC_TOKEN": people["member"],
        "ACC_HOME": str(tmp_path / "no-platform-here"),
        "COLUMNS": "200",
    }
    acc_bin = str(Path(sys.executable).parent / "acc")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [acc_bin, *args], env=env, capture_output=True, text=True, timeout=300
        )

    who = cli("whoami")
    assert who.returncode == 0 and people["member-name"] in who.stdout, who.stderr
    listed = cli("list")
    assert slow_model in listed.stdout, listed.stderr
    local = tmp_path / "in"
    local.mkdir()
    (local / "a.csv").write_text("x\n1\n")
    area = f"acc://users/{people['member-name']}/cli/"
    put = cli("put", str(local), area)
    assert put.returncode == 0, put.stderr
    assert "a.csv" in cli("ls", area + "in").stdout
    got = cli("get", area + "in/a.csv", str(tmp_path))
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "a.csv").read_text() == "x\n1\n"
    env["ACC_SECRET_API_KEY"] = SECRET
    run = cli("run", slow_model, "-c", "size=12", "--secret", "API_KEY", "--wait")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Completed" in run.stdout and "data.bin" in run.stdout
    assert SECRET not in run.stdout + run.stderr


def test_a_folder_sent_through_the_portal_is_refused_whole_for_a_dot_name_and_long_names_travel(
    portal: str, people: dict[str, str], tmp_path: Path
) -> None:
    """A folder holding a dot-file deep down is refused before any of its files is sent;
    a name of 250 bytes goes up and comes back down whole."""
    from accelerator_prefect.storage import StoragePathError

    member = Accelerator.connect(url=portal, token=people["member"])
    area = f"acc://{people['project']}/dots-{uuid.uuid4().hex[:6]}/"
    folder = tmp_path / "batch"
    (folder / "deep").mkdir(parents=True)
    (folder / "a.csv").write_text("x\n1\n")
    (folder / "deep" / ".env").write_text("SECRET=1\n")
    with pytest.raises(StoragePathError, match=r"'\.env' starts with a dot"):
        member.storage.put(folder, area)
    assert not member.storage.exists(area + "batch/a.csv")  # nothing was sent

    long = tmp_path / ("n" * 246 + ".csv")
    long.write_text("x\n2\n")
    (uploaded,) = member.storage.put(long, area)
    (tmp_path / "down").mkdir()
    (down,) = member.storage.get(uploaded.uri, tmp_path / "down")
    assert down.name == long.name and down.read_text() == "x\n2\n"
    assert [p.name for p in down.parent.iterdir()] == [long.name]  # no partial file left
