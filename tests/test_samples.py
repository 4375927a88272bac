"""Sample inputs: whoever may run a model reads its samples (nothing beside them, never
writing them), in-process and over the portal's HTTP; and the catalog's explorer, where a
folder's name opens it, its check box selects it, and one click starts from the samples."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from accelerator_prefect import Accelerator, AccessDenied
from accelerator_prefect.errors import ValidationFailed
from accelerator_prefect.storage import StoragePathError
from tests.conftest import TABLES_FLOW, ModelRepo
from tests.test_catalog_ui import CLIMATE_FORM, app, on_page, texts, wait_until
from tests.test_catalog_ui import climate as climate
from tests.test_catalog_ui import people as people

CLIMATE = "climate-downscaling"
SAMPLE = "acc://climate/examples/coarse-cmip6/"
BESIDE = "acc://climate/examples/coarse-cmip6-notes.txt"  # its name begins like the sample's
EXPLORER = f"inputs:{CLIMATE}:1.0.0:"  # the widget keys' prefix of the climate explorer

MANIFEST = """
name: {name}
title: Sampled tables
version: 1.0.0
jobflow: flows/tables.py:tables
owner: operator
project: {project}
access:
  scope: {scope}
inputs:
  min_files: 1
  accepted_types: [".csv"]
  sources: [storage]
  samples: ["acc://{project}/examples/tables/"]
"""


@dataclass(frozen=True)
class Sampled:
    """A published model whose sample folder holds ``a.csv``, next to ``beside.csv`` and a
    ``secret/`` folder of its project; inside the sample, links to the secret (local)."""

    name: str
    project: str

    @property
    def sample(self) -> str:
        return f"acc://{self.project}/examples/tables/"


def _publish(acc: Accelerator, folder: Path, scope: str) -> Sampled:
    tag = uuid.uuid4().hex[:6]
    model = Sampled(f"sampled-{scope}-{tag}", f"samples-{scope}-{tag}")
    repo = ModelRepo(folder, model.name)
    repo.write("flows/tables.py", TABLES_FLOW.format())
    repo.write(
        f"deployments/{model.name}.yaml",
        MANIFEST.format(name=model.name, project=model.project, scope=scope),
    )
    repo.commit(f"{model.name} 1.0.0")
    acc.publish(repo.manifest)
    for uri in [
        f"{model.sample}a.csv",
        f"acc://{model.project}/examples/beside.csv",
        f"acc://{model.project}/secret/s.csv",
    ]:
        with acc.storage.open(uri, "w") as f:
            f.write("x\n1\n")
    root = acc.storage.fs._local_root
    if root is not None:  # what an operator's shell could leave inside a sample
        project = Path(root) / model.project
        (project / "examples/tables/door").symlink_to(project / "secret", True)
        (project / "examples/tables/key.csv").symlink_to(project / "secret/s.csv")
    return model


@pytest.fixture(scope="module")
def public_b(acc: Accelerator, tmp_path_factory: pytest.TempPathFactory) -> Sampled:
    return _publish(acc, tmp_path_factory.mktemp("sampled-public"), "public")


@pytest.fixture(scope="module")
def private_c(acc: Accelerator, tmp_path_factory: pytest.TempPathFactory) -> Sampled:
    return _publish(acc, tmp_path_factory.mktemp("sampled-private"), "private")


@pytest.fixture(scope="module")
def outsider(acc: Accelerator, climate: ModelRepo) -> str:
    """The token of a signed-in user in no project (as bob is)."""
    with acc.storage.open(BESIDE, "w") as f:
        f.write("not a sample")
    _, token = acc.add_user(f"sampler-{uuid.uuid4().hex[:6]}", {})
    return token


def every_version(acc: Accelerator, *models: str) -> Callable[[str], Iterable[Any]]:
    """Every version of ``models``, private ones too, as the operator reads them: handed to
    someone else's storage, what they may read is the storage's own decision."""
    versions = [v for m in models for v in acc.get(m).versions]
    return lambda project: versions


def test_whoever_may_run_a_public_model_reads_its_samples_and_nothing_beside_them(
    acc: Accelerator, outsider: str, public_b: Sampled, private_c: Sampled
) -> None:
    with Accelerator.connect(token=outsider) as bob:
        with pytest.raises(AccessDenied):
            bob.storage.ls(SAMPLE)  # not theirs: only a model's samples open it
        storage = bob.storage.reading_samples(
            every_version(acc, CLIMATE, public_b.name, private_c.name)
        )
        assert "observations.nc" in [e.name for e in storage.ls(SAMPLE)]
        assert storage.info(SAMPLE).is_folder
        assert [e.name for e in storage.files(SAMPLE, [".nc"])]
        with storage.open(f"{SAMPLE}observations.nc") as f:
            assert f.read(4)
        for beside in [
            BESIDE,
            "acc://climate/examples/",
            "acc://climate/results/",
            "acc://climate/",
            f"acc://{public_b.project}/examples/beside.csv",
            private_c.sample,  # a private model's samples: its project's members only
            f"{private_c.sample}a.csv",
        ]:
            with pytest.raises(AccessDenied):
                storage.info(beside)
        with pytest.raises(AccessDenied):
            storage.ls("acc://climate/examples/")
        with pytest.raises(StoragePathError):
            storage.ls(f"{SAMPLE}../../results/")
        # Read, never written: no new file, no overwrite, no deletion.
        for name, mode in [("new.nc", "wb"), ("observations.nc", "wb"), ("observations.nc", "ab")]:
            with pytest.raises(AccessDenied):
                storage.open(f"{SAMPLE}{name}", mode)
        with pytest.raises(AccessDenied):
            storage.rm(f"{SAMPLE}observations.nc")
        with pytest.raises(AccessDenied):
            storage.rm(SAMPLE, recursive=True)
        assert acc.storage.exists(f"{SAMPLE}observations.nc")
        assert not acc.storage.exists(f"{SAMPLE}new.nc")


def test_a_guest_of_one_models_link_reads_its_samples_but_not_another_models(
    acc: Accelerator, climate: ModelRepo, public_b: Sampled
) -> None:
    link = acc.share_link(CLIMATE)
    with Accelerator.connect(link=link.token) as guest:
        storage = guest.storage.reading_samples(every_version(acc, CLIMATE, public_b.name))
        assert "observations.nc" in [e.name for e in storage.ls(SAMPLE)]
        with pytest.raises(AccessDenied):
            storage.ls(public_b.sample)  # public, but a guest sees only what the link opens
        with pytest.raises(AccessDenied):
            storage.info(f"{public_b.sample}a.csv")
    acc.revoke_link(link.id)


def test_a_symbolic_link_inside_a_sample_opens_nothing_outside_it(
    acc: Accelerator, outsider: str, public_b: Sampled
) -> None:
    if acc.storage.fs._local_root is None:
        pytest.skip("object stores have no symbolic links")
    with Accelerator.connect(token=outsider) as bob:
        storage = bob.storage.reading_samples(every_version(acc, public_b.name))
        assert [e.name for e in storage.ls(public_b.sample)] == ["a.csv"]
        assert [e.name for e in storage.files(public_b.sample)] == ["a.csv"]
        for through in [f"{public_b.sample}key.csv", f"{public_b.sample}door/s.csv"]:
            with pytest.raises(AccessDenied):
                storage.open(through)
        with pytest.raises(AccessDenied):
            storage.ls(f"{public_b.sample}door/")


def test_samples_are_inputs_of_their_own_model_and_never_an_output(
    acc: Accelerator, outsider: str, public_b: Sampled
) -> None:
    from tests.test_launch import count_runs

    before = count_runs(acc.api_url, f"{public_b.name}@1.0.0")
    with Accelerator.connect(token=outsider) as bob:
        for inputs, output in [
            ([f"acc://{public_b.project}/examples/beside.csv"], None),  # beside the sample
            ([SAMPLE], None),  # another model's samples
            ([f"{public_b.sample}a.csv"], public_b.sample + "{run_id}/"),  # written into
        ]:
            with pytest.raises(ValidationFailed) as refused:
                bob.launch(public_b.name, inputs=inputs, output=output)
            assert any("outside the storage you may use" in p for p in refused.value.problems)
    assert count_runs(acc.api_url, f"{public_b.name}@1.0.0") == before


def _http(portal: str, token: str) -> httpx.Client:
    """A client of the portal with ``token``; a link's token is exchanged for a guest's."""
    if token.startswith("accl_"):
        opened = httpx.post(
            f"{portal}/api/v1/guest-sessions",
            headers={"Authorization": f"Bearer {token}"},
            timeout=120,
        )
        if opened.status_code == 201:
            token = opened.json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.Client(base_url=f"{portal}/api/v1", headers=headers, timeout=120)


def test_over_http_samples_open_to_whoever_may_run_the_model_and_nothing_else(
    acc: Accelerator, portal: str, outsider: str, public_b: Sampled, private_c: Sampled
) -> None:
    with _http(portal, outsider) as bob:
        listed = bob.get("/storage", params={"path": SAMPLE})
        assert listed.status_code == 200, listed.text
        assert f"{SAMPLE}observations.nc" in [e["uri"] for e in listed.json()]
        got = bob.get("/storage/file", params={"path": f"{SAMPLE}observations.nc"})
        assert got.status_code == 200 and got.content
        for path in [
            BESIDE,
            "acc://climate/examples/",
            "acc://climate/results/",
            private_c.sample,
            f"{private_c.sample}a.csv",
        ]:
            assert bob.get("/storage", params={"path": path}).status_code == 403, path
            assert bob.get("/storage/file", params={"path": path}).status_code == 403, path
        escape = bob.get("/storage/file", params={"path": f"{SAMPLE}../../results/x.nc"})
        assert escape.status_code in {400, 403, 404, 422}, escape.text
        for path in [f"{SAMPLE}new.nc", f"{SAMPLE}observations.nc"]:
            put = bob.put("/storage/file", params={"path": path}, content=b"overwritten")
            assert put.status_code == 403, put.text
        if acc.storage.fs._local_root is not None:
            inside = bob.get("/storage", params={"path": public_b.sample}).json()
            assert [e["uri"] for e in inside] == [f"{public_b.sample}a.csv"]
            key = bob.get("/storage/file", params={"path": f"{public_b.sample}key.csv"})
            assert key.status_code == 403
    with acc.storage.open(f"{SAMPLE}observations.nc", "rb") as f:
        assert f.read(11) != b"overwritten"
    assert not acc.storage.exists(f"{SAMPLE}new.nc")
    link = acc.share_link(CLIMATE)
    assert link.token is not None
    with _http(portal, link.token) as guest:
        assert guest.get("/storage", params={"path": SAMPLE}).status_code == 200
        assert guest.get("/storage", params={"path": public_b.sample}).status_code == 403
        assert guest.get("/storage", params={"path": BESIDE}).status_code == 403
    acc.revoke_link(link.id)
    with _http(portal, link.token) as guest:  # the link revoked: the samples close
        assert guest.get("/storage", params={"path": SAMPLE}).status_code in {401, 403}


def test_a_folders_name_opens_it_and_only_its_check_box_selects_it(
    people: dict[str, str], climate: ModelRepo
) -> None:
    at = on_page(people["alice"], "model", model=CLIMATE)
    assert not at.exception, at.exception
    at.button(key=f"{EXPLORER}:name:acc://climate/").click().run()
    assert not at.exception, at.exception
    assert "Nothing selected yet." in texts(at)  # opened, not selected
    assert at.button(key=f"{EXPLORER}:crumb:acc://climate/")  # the breadcrumb follows
    assert at.button(key=f"{EXPLORER}:name:acc://climate/examples/")
    at.button(key=f"{EXPLORER}:tick:acc://climate/examples/").click().run()
    assert "acc://climate/examples/" in [c.value for c in at.code]
    at.button(key=f"{EXPLORER}:name:acc://climate/examples/").click().run()
    assert at.button(key=f"{EXPLORER}:name:{SAMPLE}")  # inside examples/ now
    assert "acc://climate/examples/" in [c.value for c in at.code]  # still selected
    at.button(key=f"{EXPLORER}:crumb:acc://").click().run()
    assert at.button(key=f"{EXPLORER}:name:acc://climate/")  # back at the top
    assert [c.value for c in at.code if c.value.startswith("acc://")] == ["acc://climate/examples/"]


def test_a_guest_starts_from_the_sample_inputs_in_one_click_and_the_run_completes(
    acc: Accelerator, climate: ModelRepo
) -> None:
    link = acc.share_link(CLIMATE)
    assert link.token is not None
    at = app(None, model=CLIMATE, link=link.token).run()
    assert not at.exception, at.exception
    at.button(key=f"{EXPLORER}:samples").click().run()
    assert not at.exception, at.exception
    assert [c.value for c in at.code if c.value.startswith("acc://")] == [SAMPLE]
    said = texts(at)
    assert "Selected:** 1 folder(s)" in said and "observations.nc" in said, said
    at.selectbox(key=f"{CLIMATE_FORM}.scenario").set_value("ssp245")
    at.selectbox(key=f"{CLIMATE_FORM}.target_region").set_value("alps").run()
    next(b for b in at.button if b.label == "Launch").click().run()
    assert not at.exception, at.exception
    assert not any("not started" in e.value for e in at.error), [e.value for e in at.error]
    # The guest's run, as the link's owner sees it (another holder of the link would not).
    guest = f"guest-{link.id}-"
    launched = wait_until(
        lambda: [r for r in acc.runs(CLIMATE) if r.user.startswith(guest)], deadline=30
    )
    run = acc.run(launched[0].id)
    assert run.parameters["inputs"]["selected_folders"] == [SAMPLE]
    assert run.wait(timeout=180) == "Completed"
    with Accelerator.connect(link=link.token) as other:
        assert other.runs(CLIMATE) == []
    acc.revoke_link(link.id)


def test_the_python_client_over_the_portal_sees_a_sample_folder_it_may_not_see_beside(
    portal: str, outsider: str
) -> None:
    with Accelerator.connect(url=portal, token=outsider) as bob:
        assert bob.storage.info(SAMPLE).kind == "folder"
        assert bob.storage.exists(SAMPLE)
        assert "observations.nc" in [e.name for e in bob.storage.ls(SAMPLE)]
        with pytest.raises(AccessDenied):
            bob.storage.info("acc://climate/results/")
