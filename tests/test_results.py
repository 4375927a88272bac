"""Jobflow results are JSON: written strictly, read back with ``json.loads`` alone.

A hosted model's result is read in the launcher's process (the portal, the
catalog, a user's client); a pickle read there would run the author's code.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections import OrderedDict
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum, IntEnum
from pathlib import Path, PurePosixPath
from typing import Any
from uuid import UUID

import numpy as np
import pytest
from prefect.cache_policies import INPUTS
from prefect.results import ResultRecord, ResultRecordMetadata
from prefect.serializers import (
    CompressedJSONSerializer,
    CompressedPickleSerializer,
    JSONSerializer,
    PickleSerializer,
    Serializer,
)
from prefect.states import Completed
from pydantic import BaseModel

from accelerator_prefect import Accelerator, AcceleratorError, Run, jobflow, routine
from accelerator_prefect.platform import PlatformInfo
from accelerator_prefect.results import (
    SERIALIZER_TYPE,
    ResultNotJSON,
    decode_result,
    dump_json,
    is_json_serializer,
    json_serializer,
    to_json_data,
)
from accelerator_prefect.transport import prefect_client
from tests.conftest import ModelRepo, User


class Hostile:
    """Unpickling it creates the file it names: code of the pickle's choosing runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.marker,))


class Foo:
    pass


class Station(BaseModel):
    name: str
    opened: date
    heights_m: tuple[float, float]


# -- the serializer ---------------------------------------------------------------------------


DATA = {
    "region": "alps",
    "tas_change_k": [1.5, -0.25, 0.0],
    "cells": 12,
    "ok": True,
    "missing": None,
    "nested": {"rows": [{"name": "Säntis", "n": 3}], "empty": {}},
}


def test_json_data_is_kept_as_it_is() -> None:
    assert to_json_data(DATA) == DATA
    serializer = json_serializer()
    assert json.loads(serializer.dumps(DATA)) == DATA
    assert serializer.loads(serializer.dumps(DATA)) == DATA


def test_models_tuples_dates_paths_uuids_and_plain_type_subclasses_become_json() -> None:
    class Level(IntEnum):
        HIGH = 2

    class Scenario(str, Enum):  # noqa: UP042 (str() of this kind names the member)
        SSP245 = "ssp245"

    run_id = uuid.UUID("12345678-1234-5678-1234-567812345678")
    value = {
        "station": Station(name="Säntis", opened=date(1882, 9, 1), heights_m=(2502.0, 2503.5)),
        "pair": (1, 2),
        "when": datetime(2026, 1, 2, 3, 4, tzinfo=UTC),
        "file": PurePosixPath("out/summary.csv"),
        "run": run_id,
        "level": Level.HIGH,
        "scenario": Scenario.SSP245,
        "mean": np.float64(1.25),
        "ordered": OrderedDict(a=1),
    }
    assert to_json_data(value) == {
        "station": {"name": "Säntis", "opened": "1882-09-01", "heights_m": [2502.0, 2503.5]},
        "pair": [1, 2],
        "when": "2026-01-02T03:04:00+00:00",
        "file": "out/summary.csv",
        "run": str(run_id),
        "level": 2,
        "scenario": "ssp245",
        "mean": 1.25,
        "ordered": {"a": 1},
    }
    converted = to_json_data(value)
    assert type(converted["level"]) is int and type(converted["scenario"]) is str
    assert type(converted["mean"]) is float


@pytest.mark.parametrize(
    ("value", "where", "kind"),
    [
        ({"years": {1995, 2050}}, 'result["years"]', "set"),
        ({"raw": [b"\x00\x01"]}, 'result["raw"][0]', "bytes"),
        ({"grid": np.zeros((2, 2))}, 'result["grid"]', "ndarray"),
        ({"table": [1, 2, 3, Foo()]}, 'result["table"][3]', "Foo"),
        ([Decimal("1.5")], "result[0]", "Decimal"),
        ({"count": np.int64(3)}, 'result["count"]', "int64"),
        (Hostile(Path("never")), "result", "Hostile"),
    ],
)
def test_anything_but_json_data_is_refused_naming_its_type_and_where_it_is(
    value: Any, where: str, kind: str
) -> None:
    with pytest.raises(ResultNotJSON) as error:
        to_json_data(value)
    assert str(error.value).startswith(
        f"{where}: values of type {kind} cannot be returned by a jobflow"
    )
    assert "write anything else to the output folder" in str(error.value)
    with pytest.raises(ResultNotJSON):
        json_serializer().dumps(value)


def test_numpy_values_get_a_hint_on_converting_them() -> None:
    with pytest.raises(ResultNotJSON, match=r"convert with \.tolist\(\), float\(x\) or int\(x\)"):
        to_json_data({"grid": np.arange(3)})


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf, np.float64("nan")])
def test_nan_and_infinity_are_refused_json_has_neither(number: float) -> None:
    with pytest.raises(ResultNotJSON, match=r'^result\["stats"\]\[1\]: .* is not a finite number'):
        to_json_data({"stats": [1.0, number]})


def test_a_nan_inside_a_pydantic_model_is_refused_too() -> None:
    class Stats(BaseModel):
        mean: float

    with pytest.raises(ResultNotJSON, match=r'^result\["mean"\]: nan is not a finite number'):
        to_json_data(Stats(mean=math.nan))


def test_dict_keys_must_be_text() -> None:
    with pytest.raises(
        ResultNotJSON, match=r'^result\["by_year"\]: keys must be text, .* int \(1995\)'
    ):
        to_json_data({"by_year": {1995: 1.0}})


def test_a_value_containing_itself_is_refused() -> None:
    rows: list[Any] = [1]
    rows.append(rows)
    with pytest.raises(ResultNotJSON, match=r"^result\[1\]: the value contains itself"):
        to_json_data(rows)


def test_the_same_list_twice_is_not_a_cycle() -> None:
    shared = [1, 2]
    assert to_json_data({"a": shared, "b": shared}) == {"a": [1, 2], "b": [1, 2]}


def test_loads_is_plain_json_and_imports_no_class_a_payload_names() -> None:
    run_id = UUID("12345678-1234-5678-1234-567812345678")
    payload = JSONSerializer().dumps(run_id)
    as_json = {"__class__": "uuid.UUID", "data": str(run_id)}
    assert json.loads(payload) == as_json
    # Prefect's own JSON serializer imports the class a payload names and builds one…
    assert JSONSerializer().loads(payload) == run_id
    # …this one gives the JSON back as it is.
    assert json_serializer().loads(payload) == as_json


def test_text_that_is_not_valid_unicode_is_stored_and_read_back() -> None:
    # A file name read with surrogateescape holds lone surrogates; UTF-8 cannot hold them.
    value = {"file": b"caf\xe9.csv".decode(errors="surrogateescape"), "place": "Säntis"}
    assert decode_result(json_serializer().dumps(value), "r1") == value


def test_a_failure_is_recorded_as_json_text_not_as_the_exception_object() -> None:
    assert json.loads(dump_json(RuntimeError("model broke"))) == {
        "error": "RuntimeError",
        "message": "model broke",
    }
    with pytest.raises(ResultNotJSON):
        to_json_data(RuntimeError("a jobflow may not return one"))


def test_the_serializer_is_registered_with_prefect_as_acc_json() -> None:
    serializer = json_serializer()
    assert serializer.type == SERIALIZER_TYPE == "acc-json"
    assert is_json_serializer(Serializer(type="acc-json"))
    assert is_json_serializer("acc-json")
    assert not is_json_serializer(PickleSerializer()) and not is_json_serializer("json")
    metadata = ResultRecordMetadata(storage_key="k", serializer=serializer)
    assert ResultRecordMetadata.load_bytes(metadata.dump_bytes()).serializer.type == "acc-json"


# -- the jobflow decorator --------------------------------------------------------------------


def test_a_jobflow_persists_its_result_with_the_json_serializer() -> None:
    @jobflow(name="tally")
    def tally() -> dict[str, int]:
        return {"n": 1}

    assert tally.persist_result is True
    assert is_json_serializer(tally.result_serializer)


@pytest.mark.parametrize("chosen", ["pickle", "json", "compressed/pickle", PickleSerializer()])
def test_a_jobflow_refuses_any_other_result_serializer(chosen: Any) -> None:
    with pytest.raises(
        AcceleratorError, match=r"jobflow tally: result_serializer=.* is not allowed"
    ):

        @jobflow(result_serializer=chosen)
        def tally() -> dict[str, int]:
            return {"n": 1}


def test_a_jobflow_may_name_the_json_serializer_itself() -> None:
    @jobflow(result_serializer="acc-json")
    def tally() -> dict[str, int]:
        return {"n": 1}

    assert is_json_serializer(tally.result_serializer)


def test_a_cached_routine_keeps_prefects_default_serializer_inside_the_worker() -> None:
    # A task inherits its flow's serializer; a cached routine returning an array
    # would otherwise not be cached.
    @routine(cache_policy=INPUTS)
    def step(x: int) -> Any:
        return np.arange(x)

    assert step.result_serializer is not None
    assert step.result_serializer.type == "pickle"


def test_a_jobflow_run_in_process_fails_on_a_value_that_is_not_json_data() -> None:
    @jobflow
    def tally() -> Any:
        return {"years": {1995}}

    with pytest.raises(ResultNotJSON, match=r'^result\["years"\]: values of type set'):
        tally.fn()


# -- reading stored results -------------------------------------------------------------------


def test_the_hostile_payload_runs_code_when_unpickled(tmp_path: Path) -> None:
    """The control for the tests below: unpickling the payload does create the file."""
    marker = tmp_path / "unpickled"
    PickleSerializer().loads(PickleSerializer().dumps(Hostile(marker)))
    assert marker.exists()


def _record(serializer: Serializer, result: Any) -> bytes:
    metadata = ResultRecordMetadata(storage_key="key", serializer=serializer)
    return ResultRecord(metadata=metadata, result=result).serialize()


@pytest.mark.parametrize(
    "serializer",
    [
        PickleSerializer(),
        PickleSerializer(picklelib="pickle"),
        CompressedPickleSerializer(),
    ],
    ids=lambda s: s.type + ("/" + s.picklelib if isinstance(s, PickleSerializer) else ""),
)
def test_a_pickled_result_is_refused_and_never_unpickled(
    serializer: Serializer, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    for stored in (_record(serializer, Hostile(marker)), serializer.dumps(Hostile(marker))):
        with pytest.raises(AcceleratorError, match="run r1: the result was not stored as JSON"):
            decode_result(stored, "r1")
    assert not marker.exists()


@pytest.mark.parametrize("serializer", [JSONSerializer(), CompressedJSONSerializer()])
def test_a_record_of_prefects_json_serializers_is_refused(serializer: Serializer) -> None:
    with pytest.raises(AcceleratorError, match=f"names the '{serializer.type}' serializer"):
        decode_result(_record(serializer, UUID(int=1)), "r1")


def test_a_json_result_is_read_as_a_record_or_as_the_serializers_bytes() -> None:
    assert decode_result(_record(json_serializer(), DATA), "r1") == DATA
    assert decode_result(json_serializer().dumps(DATA), "r1") == DATA
    assert decode_result(b"null", "r1") is None


@pytest.mark.parametrize("stored", [b'{"x": NaN}', b"[Infinity]", b"\xff\xfe{", b"[" * 100_000])
def test_stored_bytes_that_are_not_strict_json_are_refused(stored: bytes) -> None:
    with pytest.raises(AcceleratorError, match="the result is not JSON"):
        decode_result(stored, "r1")


# -- on the real platform ---------------------------------------------------------------------


RESULTS_FLOW = '''
import pathlib
from datetime import date

from pydantic import BaseModel, Field

from accelerator_prefect import Conf, jobflow


class Hostile:
    """Unpickling it creates the file it names."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


class Station(BaseModel):
    name: str
    opened: date


class ResultsConf(Conf):
    returns: str = Field(default="data", description="data, model or hostile.")
    marker: str = Field(default="", description="The file a hostile result would create.")


@jobflow(name="results")
def results(conf: ResultsConf) -> object:
    if conf.returns == "hostile":
        return {"table": [1, 2, 3, Hostile(conf.marker)]}
    if conf.returns == "model":
        return Station(name="Säntis", opened=date(1882, 9, 1))
    return DATA


DATA = %r
'''

RESULTS_MANIFEST = """
name: {name}
title: Results
version: 1.0.0
jobflow: flows/results.py:results
owner: alice
project: demo
access:
  scope: project
"""


# Published once for the session: this module's tests run in a group for each `user`.
@pytest.fixture(scope="session")
def results_model(acc: Accelerator, tmp_path_factory: pytest.TempPathFactory) -> str:
    name = f"results-{uuid.uuid4().hex[:6]}"
    repo = ModelRepo(tmp_path_factory.mktemp("results"), name)
    repo.write("flows/results.py", RESULTS_FLOW % (DATA,))
    repo.write(f"deployments/{name}.yaml", RESULTS_MANIFEST.format(name=name))
    repo.commit("results 1.0.0")
    acc.publish(repo.manifest)
    return name


@pytest.fixture(scope="module")
def results_runs(
    user: User, results_model: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Run]:
    """The module's runs by name, launched by ``user`` all at once (they run side by side);
    the hostile one names a file of its own that unpickling its result would create."""
    marker = tmp_path_factory.mktemp("hostile") / "unpickled"
    confs: dict[str, dict[str, Any] | None] = {
        "data": None,
        "model": {"returns": "model"},
        "hostile": {"returns": "hostile", "marker": str(marker)},
        "pickle-record": None,
        "pickle-state": None,
        "key-outside": None,
    }
    return {name: user.acc.launch(results_model, conf) for name, conf in confs.items()}


def _stored(platform: PlatformInfo, run_id: UUID) -> tuple[ResultRecordMetadata, Path]:
    """The run's result metadata (from its state) and the file holding its result."""

    async def read() -> tuple[ResultRecordMetadata, Path]:
        async with prefect_client(platform.api_url) as client:
            flow_run = await client.read_flow_run(run_id)
            assert flow_run.state is not None
            metadata = flow_run.state.data
            assert isinstance(metadata, ResultRecordMetadata), metadata
            assert metadata.storage_block_id is not None
            block = await client.read_block_document(metadata.storage_block_id)
            return metadata, Path(block.data["basepath"]) / str(metadata.storage_key)

    return asyncio.run(read())


def _force_completed(platform: PlatformInfo, run_id: UUID, metadata: ResultRecordMetadata) -> None:
    """Set the run's state to Completed with ``metadata`` as its result, as any holder of
    the Prefect API (a run's own process included) can."""
    record: ResultRecord[Any] = ResultRecord(metadata=metadata, result=None)
    record.mark_persisted()

    async def force() -> None:
        async with prefect_client(platform.api_url) as client:
            await client.set_flow_run_state(run_id, Completed(data=record), force=True)

    asyncio.run(force())


def test_a_jobflow_returning_json_data_gives_it_back_stored_as_json(
    platform: PlatformInfo, results_runs: dict[str, Run]
) -> None:
    run = results_runs["data"]
    assert run.wait(timeout=180) == "Completed", "\n".join(run.logs())
    assert run.result() == DATA

    metadata, stored = _stored(platform, run.id)
    assert metadata.serializer.type == "acc-json"
    # Prefect 3.9 stores a flow's result as the serializer's bytes alone, the metadata
    # in the run's state: here plain JSON text.
    assert json.loads(stored.read_bytes()) == DATA


def test_a_jobflow_returning_a_pydantic_model_gives_back_its_json(
    results_runs: dict[str, Run],
) -> None:
    run = results_runs["model"]
    assert run.wait(timeout=180) == "Completed", "\n".join(run.logs())
    assert run.result() == {"name": "Säntis", "opened": "1882-09-01"}


def test_a_jobflow_returning_a_hostile_object_fails_naming_it_and_nothing_runs(
    results_runs: dict[str, Run],
) -> None:
    run = results_runs["hostile"]
    marker = Path(run.parameters["conf"]["marker"])
    assert run.wait(timeout=180) == "Failed", "\n".join(run.logs())

    refusal = 'result["table"][3]: values of type Hostile cannot be returned by a jobflow'
    assert refusal in (run.info().message or "")
    logs = run.logs()
    assert any(refusal in line for line in logs), logs
    # The failure itself was recorded (as JSON), not dropped with a warning.
    assert not any("Failed to write result" in line for line in logs), logs
    with pytest.raises(AcceleratorError, match="ended Failed"):
        run.result()
    assert not marker.exists()


def test_a_stored_pickle_result_record_is_refused_and_never_unpickled(
    platform: PlatformInfo, results_runs: dict[str, Run], tmp_path: Path
) -> None:
    run = results_runs["pickle-record"]
    assert run.wait(timeout=180) == "Completed", "\n".join(run.logs())
    metadata, stored = _stored(platform, run.id)

    marker = tmp_path / "unpickled"
    pickled = metadata.model_copy(update={"serializer": PickleSerializer()})
    stored.write_bytes(ResultRecord(metadata=pickled, result=Hostile(marker)).serialize())
    with pytest.raises(AcceleratorError, match=r"was not stored as JSON .*'pickle' serializer"):
        run.result()
    assert not marker.exists()

    # What the file holds is live: Prefect's own reading runs it.
    ResultRecord.deserialize(stored.read_bytes())
    assert marker.exists()


def test_a_run_whose_state_names_the_pickle_serializer_is_refused_and_never_unpickled(
    platform: PlatformInfo, results_runs: dict[str, Run], tmp_path: Path
) -> None:
    run = results_runs["pickle-state"]
    assert run.wait(timeout=180) == "Completed", "\n".join(run.logs())
    metadata, stored = _stored(platform, run.id)

    # As Prefect stores a plain flow's pickled result: the pickle alone in the file,
    # the serializer named in the run's state.
    marker = tmp_path / "unpickled"
    stored.write_bytes(PickleSerializer().dumps(Hostile(marker)))
    _force_completed(
        platform, run.id, metadata.model_copy(update={"serializer": PickleSerializer()})
    )
    with pytest.raises(AcceleratorError, match=r"was not stored as JSON .*'pickle' serializer"):
        run.result()
    assert not marker.exists()

    # The same bytes under a state naming acc-json are not JSON: refused as well.
    _force_completed(platform, run.id, metadata)
    with pytest.raises(AcceleratorError, match="the result is not JSON"):
        run.result()
    assert not marker.exists()


def test_a_result_key_outside_the_result_storage_is_not_read(
    platform: PlatformInfo, results_runs: dict[str, Run], tmp_path: Path
) -> None:
    run = results_runs["key-outside"]
    assert run.wait(timeout=180) == "Completed", "\n".join(run.logs())
    metadata, stored = _stored(platform, run.id)
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text('{"private": "data of this process"}')

    for key in (str(elsewhere), "../" * (len(stored.parent.parts) + 2) + str(elsewhere)[1:]):
        _force_completed(platform, run.id, metadata.model_copy(update={"storage_key": key}))
        with pytest.raises(AcceleratorError, match="points outside the result storage"):
            run.result()
