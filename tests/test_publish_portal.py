"""Authors publish through the portal: the manifest and the code (a git bundle of a commit, or
a repository URL the platform fetches), the schema derived in a process of its own holding no
credentials. Real uvicorn, real git, the session's real Prefect server and worker."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from git import Repo

from accelerator_prefect import Accelerator, AccessDenied, ManifestError, NotFound, PublishError
from accelerator_prefect.derive import derive_schema
from accelerator_prefect.platform import PlatformInfo, free_port, start_portal, stop_process
from accelerator_prefect.publish import PublishResult
from accelerator_prefect.settings import get_settings
from accelerator_prefect.storage import AccFileSystem
from tests.conftest import ECHO_MANIFEST, ModelRepo

ROOT = Path(__file__).resolve().parents[1]
CREDENTIALS = ("PREFECT_API_AUTH_STRING", "ACC_API_AUTH_STRING", "AWS_SECRET_ACCESS_KEY")

SPY_FLOW = """
import json
import os
from pathlib import Path

from accelerator_prefect import Conf, jobflow

Path({seen!r}).write_text(
    json.dumps({{"environ": dict(os.environ), "pid": os.getpid(), "cwd": os.getcwd()}})
)
print("importing the spy: this must not spoil the answer")


class SpyConf(Conf):
    message: str = "hello"


@jobflow(name="spy")
def spy(conf: SpyConf) -> str:
    return conf.message
"""

FAILING_FLOW = """
from accelerator_prefect import Conf, jobflow


def probe_devices():
    raise RuntimeError("no GPU on this machine")


probe_devices()


@jobflow(name="broken")
def broken(conf: Conf) -> None:
    pass
"""


@dataclass(frozen=True)
class Portal:
    url: str
    pid: int
    roots: Path  # where the operator admits local repositories (ACC_PUBLISH_REPOSITORY_ROOTS)


@dataclass(frozen=True)
class People:
    project: str
    author: str
    author_token: str
    member: str
    member_token: str
    other: str  # an author of another project
    other_project: str
    other_token: str


@pytest.fixture(scope="module")
def portal(platform: PlatformInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    """A portal admitting one folder of repositories. Its own environment holds the Prefect
    auth string twice (PREFECT_ and ACC_) and the session's storage keys (AWS_*): what the
    derivation must not see."""
    roots = tmp_path_factory.mktemp("admitted-repositories")
    auth_string = get_settings(home=platform.home).service_auth_string() or ""
    assert os.environ.get("AWS_SECRET_ACCESS_KEY")  # set by the session's S3 stand-in
    env = {
        "ACC_API_AUTH_STRING": auth_string,
        "ACC_PUBLISH_REPOSITORY_ROOTS": json.dumps([str(roots)]),
        "ACC_PORTAL_RATE_PER_SECOND": "0",
    }
    pid, url = start_portal(platform.home, platform.api_url, free_port(), env=env)
    yield Portal(url, pid, roots)
    stop_process(pid)


@pytest.fixture(scope="module")
def people(acc: Accelerator) -> People:
    suffix = uuid.uuid4().hex[:6]
    project, elsewhere = f"pub-{suffix}", f"elsewhere-{suffix}"
    author, member, other = f"author-{suffix}", f"member-{suffix}", f"other-{suffix}"
    _, author_token = acc.add_user(author, {project: "author"})
    _, member_token = acc.add_user(member, {project: "member"})
    _, other_token = acc.add_user(other, {elsewhere: "author"})
    return People(
        project, author, author_token, member, member_token, other, elsewhere, other_token
    )


def model_repo(
    path: Path,
    owner: str,
    project: str,
    *,
    version: str = "1.0.0",
    code_version: str = "v1",
    name: str | None = None,
) -> ModelRepo:
    """An echo model of ``owner`` in ``project``, committed."""
    repo = ModelRepo(path, name or f"echo-{uuid.uuid4().hex[:8]}").echo(version, code_version)
    write_manifest(repo, owner, project, version)
    repo.commit(f"echo {version}")
    return repo


def write_manifest(repo: ModelRepo, owner: str, project: str, version: str) -> None:
    text = ECHO_MANIFEST.format(name=repo.name, version=version)
    text = text.replace("owner: alice", f"owner: {owner}").replace(
        "project: demo", f"project: {project}"
    )
    repo.write(f"deployments/{repo.name}.yaml", text)


def publish_through(portal: Portal, token: str, manifest: Path, **options: Any) -> PublishResult:
    """What an author's client does: ``Accelerator.connect(url=…, token=…).publish``."""
    with Accelerator.connect(url=portal.url, token=token) as author:
        return author.publish(manifest, **options)


def bundle_of(repo: ModelRepo, folder: Path) -> bytes:
    target = folder / f"{uuid.uuid4().hex[:8]}.bundle"
    repo.repo.git.bundle("create", str(target), "HEAD")
    return target.read_bytes()


def post(
    portal: Portal,
    token: str,
    manifest: Path,
    *,
    bundle: bytes | None = None,
    repository: str | None = None,
    commit: str | None = None,
) -> httpx.Response:
    files: dict[str, Any] = {"manifest": (manifest.name, manifest.read_bytes(), "application/yaml")}
    if bundle is not None:
        files["bundle"] = ("code.bundle", bundle, "application/x-git-bundle")
    form = {k: v for k, v in {"repository": repository, "commit": commit}.items() if v}
    return httpx.post(
        f"{portal.url}/api/v1/publish",
        files=files,
        data=form,
        headers={"Authorization": f"Bearer {token}"},
        timeout=600,
    )


def assert_not_published(acc: Accelerator, model: str) -> None:
    with pytest.raises(NotFound):
        acc.get(model)
    assert not AccFileSystem().exists(f"acc://.platform/code/{model}")


# -- publishing ------------------------------------------------------------------------------------


def test_an_author_publishes_a_bundle_and_a_member_runs_that_very_commit(
    portal: Portal, people: People, acc: Accelerator, tmp_path: Path
) -> None:
    repo = model_repo(tmp_path / "models", people.author, people.project)
    first = publish_through(portal, people.author_token, repo.manifest)
    assert (first.model, first.version, first.status) == (repo.name, "1.0.0", "created")
    assert first.commit == repo.repo.head.commit.hexsha and not first.dirty

    # 1.1.0 runs other code; 1.0.0 keeps running its own commit, from the platform's bundle
    repo.echo(version="1.1.0", code_version="v2")
    write_manifest(repo, people.author, people.project, "1.1.0")
    repo.commit("echo 1.1.0")
    assert publish_through(portal, people.author_token, repo.manifest).status == "created"
    assert publish_through(portal, people.author_token, repo.manifest).status == "unchanged"

    pinned = next(v for v in acc.get(repo.name).versions if v.version == "1.0.0").record
    bundle = f"acc://.platform/code/{repo.name}/{first.commit}.bundle"
    assert (pinned.repository, pinned.commit) == (bundle, first.commit)
    assert AccFileSystem().exists(bundle)
    author = {"Authorization": f"Bearer {people.author_token}"}
    for method in ("GET", "PUT"):  # the platform's code area is no user's to read or write
        answer = httpx.request(
            method,
            f"{portal.url}/api/v1/storage/file",
            params={"path": bundle},
            content=b"other code" if method == "PUT" else None,
            headers=author,
            timeout=30,
        )
        assert answer.status_code == 403, answer.text

    with Accelerator.connect(url=portal.url, token=people.member_token) as member:
        run = member.launch(repo.name, {"message": "hi"}, version="1.0.0")
        assert run.wait(timeout=300) == "Completed", run.logs()
        assert run.result() == {"code": "v1", "text": "HI"}


def test_an_author_publishes_from_a_repository_url_the_operator_admits(
    portal: Portal, people: People, acc: Accelerator, tmp_path: Path
) -> None:
    repo = model_repo(tmp_path / "models", people.author, people.project, code_version="bare")
    bare = portal.roots / f"{repo.name}.git"
    repo.repo.clone(str(bare), bare=True)
    commit = repo.repo.head.commit.hexsha

    answer = post(
        portal, people.author_token, repo.manifest, repository=bare.as_uri(), commit=commit
    )
    assert answer.status_code == 201, answer.text
    assert answer.json() == {
        "model": repo.name,
        "version": "1.0.0",
        "status": "created",
        "commit": commit,
        "warnings": [],
    }
    record = acc.get(repo.name).versions[0].record
    assert (record.repository, record.commit) == (bare.resolve().as_uri(), commit)

    with Accelerator.connect(url=portal.url, token=people.member_token) as member:
        run = member.launch(repo.name, {"message": "bare"})
        assert run.wait(timeout=300) == "Completed", run.logs()
        assert run.result() == {"code": "bare", "text": "BARE"}


# -- who may publish -------------------------------------------------------------------------------


def test_a_member_may_not_publish_and_nothing_is_published(
    portal: Portal, people: People, acc: Accelerator, tmp_path: Path
) -> None:
    repo = model_repo(tmp_path / "models", people.member, people.project)
    answer = post(portal, people.member_token, repo.manifest, bundle=bundle_of(repo, tmp_path))
    assert answer.status_code == 403, answer.text
    assert answer.json()["type"] == "urn:acc:problem:access-denied"
    assert "authors of a project publish their own models" in answer.json()["detail"]
    with pytest.raises(AccessDenied):
        publish_through(portal, people.member_token, repo.manifest)
    assert_not_published(acc, repo.name)


def test_an_author_of_another_project_or_as_another_owner_is_refused(
    portal: Portal, people: People, acc: Accelerator, tmp_path: Path
) -> None:
    theirs = model_repo(tmp_path / "theirs", people.other, people.project)
    answer = post(portal, people.other_token, theirs.manifest, bundle=bundle_of(theirs, tmp_path))
    assert answer.status_code == 403, answer.text
    assert_not_published(acc, theirs.name)

    as_other = model_repo(tmp_path / "as-other", people.other, people.project)
    answer = post(
        portal, people.author_token, as_other.manifest, bundle=bundle_of(as_other, tmp_path)
    )
    assert answer.status_code == 403, answer.text
    assert_not_published(acc, as_other.name)


def test_a_model_name_taken_by_another_project_is_refused_before_any_code_runs(
    portal: Portal, people: People, acc: Accelerator, tmp_path: Path
) -> None:
    taken = model_repo(tmp_path / "taken", people.author, people.project)
    assert publish_through(portal, people.author_token, taken.manifest).status == "created"
    seen = tmp_path / "seen.json"
    squatter = ModelRepo(tmp_path / "squatter", taken.name)
    squatter.write("flows/spy.py", SPY_FLOW.format(seen=str(seen)))
    squatter.write(
        f"deployments/{taken.name}.yaml",
        ECHO_MANIFEST.format(name=taken.name, version="9.0.0")
        .replace("flows/echo.py:echo", "flows/spy.py:spy")
        .replace("owner: alice", f"owner: {people.other}")
        .replace("project: demo", f"project: {people.other_project}"),
    )
    squatter.commit("squat")
    answer = post(
        portal, people.other_token, squatter.manifest, bundle=bundle_of(squatter, tmp_path)
    )
    assert answer.status_code == 403, answer.text
    # Someone who may not see the holder learns nothing of it: not its owner, not its project.
    detail = answer.json()["detail"]
    assert detail.endswith(f"the name {taken.name!r} cannot be used: choose another"), detail
    assert "alice" not in detail and "demo" not in detail
    assert not seen.exists()  # its code was never imported
    assert [v.version for v in acc.get(taken.name).versions] == ["1.0.0"]


# -- deriving the schema ---------------------------------------------------------------------------


def test_the_schema_is_derived_in_a_process_holding_no_credentials(
    portal: Portal, people: People, acc: Accelerator, tmp_path: Path
) -> None:
    seen = tmp_path / "seen.json"
    repo = ModelRepo(tmp_path / "models", f"spy-{uuid.uuid4().hex[:8]}")
    repo.write("flows/spy.py", SPY_FLOW.format(seen=str(seen)))
    repo.write(
        f"deployments/{repo.name}.yaml",
        ECHO_MANIFEST.format(name=repo.name, version="1.0.0")
        .replace("flows/echo.py:echo", "flows/spy.py:spy")
        .replace("owner: alice", f"owner: {people.author}")
        .replace("project: demo", f"project: {people.project}"),
    )
    repo.commit("spy")

    result = publish_through(portal, people.author_token, repo.manifest)
    assert result.status == "created"
    schema = acc.get(repo.name).versions[0].parameter_schema
    assert "message" in json.dumps(schema)

    found = json.loads(seen.read_text())
    environ: dict[str, str] = found["environ"]
    for name in CREDENTIALS:
        assert name not in environ, name
    assert not [k for k in environ if k.startswith(("AWS_", "ACC_", "PREFECT_API"))], environ
    assert found["pid"] != portal.pid  # not the portal's own process
    assert environ["HOME"] != os.environ.get("HOME")
    assert "PREFECT_HOME" in environ and not environ["PREFECT_HOME"].startswith(str(acc_home()))
    assert found["cwd"].endswith("/code")  # the checkout of the commit


def acc_home() -> Path:
    return Path(os.environ["ACC_HOME"])


def test_author_code_that_raises_at_import_is_a_422_naming_the_error(
    portal: Portal, people: People, acc: Accelerator, tmp_path: Path
) -> None:
    repo = model_repo(tmp_path / "models", people.author, people.project)
    repo.write("flows/echo.py", FAILING_FLOW)
    repo.commit("probe the GPU at import")
    answer = post(portal, people.author_token, repo.manifest, bundle=bundle_of(repo, tmp_path))
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["type"] == "urn:acc:problem:manifest-invalid"
    detail = problem["detail"]
    assert "jobflow: cannot load flows/echo.py:echo" in detail
    assert "RuntimeError: no GPU on this machine (flows/echo.py, line 5)" in detail
    assert "Traceback" not in detail and "acc-publish-" not in detail and "/tmp" not in detail
    assert_not_published(acc, repo.name)


def test_an_import_that_never_ends_is_stopped(tmp_path: Path) -> None:
    flow = tmp_path / "flows" / "stuck.py"
    flow.parent.mkdir()
    flow.write_text("import time\n\ntime.sleep(3600)\n")
    started = time.monotonic()
    with pytest.raises(ManifestError, match=r"took longer than 5 s"):
        asyncio.run(derive_schema(tmp_path, "flows/stuck.py:stuck", timeout=5))
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("jobflow", ["../outside.py:echo", "/etc/outside.py:echo"])
def test_a_jobflow_outside_the_repository_is_refused(tmp_path: Path, jobflow: str) -> None:
    (tmp_path / "outside.py").write_text("")
    with pytest.raises(ManifestError, match="inside the repository"):
        asyncio.run(derive_schema(tmp_path / "code", jobflow))


# -- where code may come from ----------------------------------------------------------------------


def test_repository_urls_the_platform_may_not_fetch_from_are_refused(
    portal: Portal, people: People, acc: Accelerator, tmp_path: Path
) -> None:
    repo = model_repo(tmp_path / "models", people.author, people.project)
    commit = repo.repo.head.commit.hexsha
    outside = tmp_path / "outside.git"
    repo.repo.clone(str(outside), bare=True)
    sneaky = portal.roots / f"link-{uuid.uuid4().hex[:6]}.git"
    sneaky.symlink_to(outside)
    refused = {
        outside.as_uri(): "ACC_PUBLISH_REPOSITORY_ROOTS",
        str(outside): "ACC_PUBLISH_REPOSITORY_ROOTS",
        f"file://{portal.roots}/../{outside.relative_to(tmp_path.parent)}": "ACC_PUBLISH",
        sneaky.as_uri(): "ACC_PUBLISH_REPOSITORY_ROOTS",
        "https://127.0.0.1/team/models.git": "not a host the platform fetches code from",
        "ssh://git@169.254.169.254/models.git": "not a host the platform fetches code from",
        "http://example.org/models.git": "over https, ssh, git only",
        "ext::sh -c touch% /tmp/pwned": "not a URL",
        "https://user:secret@example.org/models.git": "no credentials in the URL",
    }
    for url, why in refused.items():
        answer = post(portal, people.author_token, repo.manifest, repository=url, commit=commit)
        assert answer.status_code == 403, (url, answer.text)
        assert why in answer.json()["detail"], (url, answer.json())
        assert "secret" not in answer.json()["detail"]
    assert_not_published(acc, repo.name)


def test_a_dirty_work_tree_is_not_sent(portal: Portal, people: People, tmp_path: Path) -> None:
    repo = model_repo(tmp_path / "models", people.author, people.project)
    (repo.path / "flows" / "echo.py").write_text(
        (repo.path / "flows" / "echo.py").read_text() + "\n# tweak\n"
    )
    for allow_dirty in (False, True):
        with pytest.raises(PublishError, match=r"(?s)only committed code.*echo.py"):
            publish_through(portal, people.author_token, repo.manifest, allow_dirty=allow_dirty)


def test_a_bundle_missing_the_commit_or_not_a_bundle_is_refused(
    portal: Portal, people: People, acc: Accelerator, tmp_path: Path
) -> None:
    repo = model_repo(tmp_path / "models", people.author, people.project)
    bundle = bundle_of(repo, tmp_path)
    answer = post(portal, people.author_token, repo.manifest, bundle=b"not a bundle")
    assert answer.status_code == 409, answer.text
    assert "expected a complete git bundle" in answer.json()["detail"]
    answer = post(portal, people.author_token, repo.manifest, bundle=bundle, commit="ab" * 20)
    assert answer.status_code == 409, answer.text
    assert f"commit {'ab' * 20} from the bundle" in answer.json()["detail"]
    answer = post(portal, people.author_token, repo.manifest)
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["pointer"] == "bundle"
    assert_not_published(acc, repo.name)


def test_repository_and_bundle_publishes_of_one_commit_agree(
    portal: Portal, people: People, acc: Accelerator, tmp_path: Path
) -> None:
    """The schema derived out of process is the one the operator's in-process publish derives:
    the same commit published both ways is the same version."""
    repo = model_repo(tmp_path / "models", people.author, people.project)
    local = acc.publish(repo.manifest)
    again = publish_through(portal, people.author_token, repo.manifest)
    assert again.status == "unchanged" and again.commit == local.commit
    assert Repo(repo.path).head.commit.hexsha == local.commit


def test_an_environment_that_would_read_the_platforms_files_is_refused(
    portal: Portal, people: People, acc: Accelerator, tmp_path: Path
) -> None:
    """A requirements file is resolved on the platform: one naming a file of the
    platform's machine is refused before uv reads anything, and nothing is published."""
    repo = model_repo(tmp_path / "models", people.author, people.project)
    repo.write("requirements.txt", "-r /etc/passwd\n")
    repo.commit("an environment")
    answer = post(portal, people.author_token, repo.manifest, bundle=bundle_of(repo, tmp_path))
    assert answer.status_code == 409, answer.text
    detail = answer.json()["detail"]
    assert "requirements.txt, line 1: '-r': options are not accepted" in detail
    assert "root:" not in detail and "acc-publish-" not in detail
    assert_not_published(acc, repo.name)


def test_an_author_publishes_a_model_with_its_own_libraries_through_the_portal(
    portal: Portal, people: People, acc: Accelerator, tmp_path: Path
) -> None:
    repo = model_repo(tmp_path / "models", people.author, people.project)
    repo.write("requirements.txt", "termcolor==2.3.0\n")
    repo.commit("an environment")
    result = publish_through(portal, people.author_token, repo.manifest)
    assert result.status == "created"
    (hosted,) = acc.get(repo.name).versions
    assert hosted.record.environment is not None
    assert hosted.record.environment.packages["termcolor"] == "2.3.0"
    run = acc.launch(repo.name, conf={"message": "hi"})
    assert run.wait(timeout=180) == "Completed", run.logs()
