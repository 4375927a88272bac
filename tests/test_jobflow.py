from __future__ import annotations

from datetime import timedelta

import pytest
from prefect.cache_policies import INPUTS
from pydantic import BaseModel

from accelerator_prefect import AcceleratorError, Conf, Inputs, Output, jobflow, routine


def test_routine_keeps_prefect_task_options() -> None:
    @routine(
        retries=3,
        retry_delay_seconds=2,
        timeout_seconds=30,
        cache_policy=INPUTS,
        cache_expiration=timedelta(hours=1),
    )
    def step(x: int) -> int:
        return x

    assert step.retries == 3
    assert step.retry_delay_seconds == 2
    assert step.timeout_seconds == 30
    assert step.cache_policy is INPUTS
    assert step.fn(4) == 4


def test_plain_routine_does_not_persist_intermediate_results() -> None:
    @routine
    def step() -> None:
        return None

    assert step.persist_result is False


class Settings(Conf):
    level: int = 1


def test_jobflow_is_a_flow_with_persisted_results_and_printed_logs() -> None:
    @jobflow(name="double")
    def double(conf: Settings, inputs: Inputs | None = None, output: Output | None = None) -> int:
        return conf.level * 2

    assert double.name == "double"
    assert double.persist_result is True
    assert double.log_prints is True
    assert set(double.parameters.properties) == {"conf", "inputs", "output"}


def test_jobflow_refuses_parameters_other_than_the_reserved_ones() -> None:
    with pytest.raises(AcceleratorError, match=r"parameter\(s\) threshold are not allowed"):

        @jobflow
        def bad(conf: Conf, threshold: float) -> None:
            return None


def test_jobflow_conf_must_be_a_pydantic_model() -> None:
    with pytest.raises(AcceleratorError, match="conf must be annotated with a pydantic model"):

        @jobflow
        def bad(conf: dict) -> None:  # type: ignore[type-arg]
            return None


def test_conf_refuses_unknown_fields() -> None:
    assert issubclass(Settings, BaseModel)
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        Settings.model_validate({"levle": 2})


def test_output_paths_stay_inside_the_location() -> None:
    output = Output(location="acc://climate/results/run-1")
    assert output.path("summary.csv") == "acc://climate/results/run-1/summary.csv"
