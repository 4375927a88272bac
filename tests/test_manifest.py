from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from accelerator_prefect import ManifestError
from accelerator_prefect.manifest import Scope, load_manifest, manifest_json_schema, parse_manifest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "deployments" / "climate-downscaling.yaml"


def write(tmp_path: Path, data: dict[str, object] | str) -> Path:
    path = tmp_path / "model.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def valid() -> dict[str, object]:
    return yaml.safe_load(EXAMPLE.read_text())


def test_bundled_example_manifest_is_valid() -> None:
    manifest = load_manifest(EXAMPLE)
    assert manifest.name == "climate-downscaling"
    assert manifest.access.scope is Scope.public
    assert manifest.function_name == "climate_downscaling"


def test_bad_version_names_file_field_and_expectation(tmp_path: Path) -> None:
    path = write(tmp_path, {**valid(), "version": "1.2"})
    with pytest.raises(ManifestError) as error:
        load_manifest(path)
    message = str(error.value)
    assert str(path) in message
    assert "version: expected a semantic version MAJOR.MINOR.PATCH" in message
    assert "'1.2'" in message


def test_every_problem_is_reported_with_its_field_path(tmp_path: Path) -> None:
    data = {**valid(), "access": {"scope": "everyone"}, "colour": "blue"}
    del data["owner"]
    with pytest.raises(ManifestError) as error:
        load_manifest(write(tmp_path, data))
    message = str(error.value)
    assert "access.scope: Input should be 'private', 'project', 'public' or 'link'" in message
    assert "colour: unknown field" in message
    assert "owner: required field is missing" in message


def test_jobflow_must_be_path_and_function(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"jobflow: String should match pattern"):
        load_manifest(write(tmp_path, {**valid(), "jobflow": "flows/climate.py"}))


def test_yaml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\ntitle: [unclosed\nversion: 1.0.0\n")
    with pytest.raises(ManifestError, match=r"not valid YAML at line 3, column 8"):
        load_manifest(path)


def test_missing_file_is_a_manifest_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read the manifest"):
        load_manifest(tmp_path / "absent.yaml")


def test_published_json_schema_is_current() -> None:
    committed = (ROOT / "deployments" / "manifest.schema.json").read_text()
    assert committed == manifest_json_schema(), (
        "run: acc manifest-schema > deployments/manifest.schema.json"
    )


def test_editors_validate_manifests_with_the_published_schema() -> None:
    schema = json.loads(manifest_json_schema())
    jsonschema.Draft202012Validator(schema).validate(valid())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate({**valid(), "status": "gone"})


def test_the_example_declares_its_check_across_settings_and_inputs() -> None:
    (check,) = load_manifest(EXAMPLE).checks
    assert (check.field, check.inputs_include) == ("conf.scenario", "model_{conf.scenario}.nc")
    assert check.settings == ["conf.scenario"]


@pytest.mark.parametrize(
    ("check", "expected"),
    [
        (
            {"field": "conf.scenario", "inputs_include": "model_{scenario}.nc"},
            "checks[0].inputs_include: {scenario}: expected a placeholder naming a setting, "
            "e.g. {conf.scenario}",
        ),
        (
            {"field": "scenario", "inputs_include": "model_*.nc"},
            "checks[0].field: String should match pattern",
        ),
        (
            {"field": "inputs", "inputs_include": "data/model_*.nc"},
            "checks[0].inputs_include: 'data/model_*.nc': expected a file-name pattern without "
            "folders",
        ),
        (
            {"field": "inputs", "inputs_include": "*.nc", "message": "Add {conf..x}"},
            "checks[0].message: {conf..x}: expected a placeholder naming a setting",
        ),
        ({"field": "inputs"}, "checks[0].inputs_include: required field is missing"),
    ],
)
def test_a_malformed_check_is_refused_naming_its_field(
    tmp_path: Path, check: dict[str, str], expected: str
) -> None:
    with pytest.raises(ManifestError) as error:
        load_manifest(write(tmp_path, {**valid(), "checks": [check]}))
    assert expected in str(error.value)


def test_output_columns_outside_the_run_folder_or_misspelt_are_refused_naming_them() -> None:
    data = yaml.safe_load((ROOT / "deployments" / "climate-downscaling.yaml").read_text())
    data["output"]["columns"] = {"../escape.csv": {}}
    with pytest.raises(ManifestError, match=r"output\.columns: '\.\./escape\.csv' is not a file"):
        parse_manifest(data)
    data["output"]["columns"] = {"summary.csv": {"tas": {"unit": "K", "colour": "red"}}}
    with pytest.raises(ManifestError, match=r"output\.columns\.summary\.csv\.tas\.colour: unknown"):
        parse_manifest(data)


def test_an_output_template_without_a_folder_per_run_is_refused() -> None:
    """A run's outputs are readable by the model's owner: a template sharing one folder
    between runs (a launcher's whole area) would hand them its other files."""
    data = yaml.safe_load((ROOT / "deployments" / "climate-downscaling.yaml").read_text())
    for location in ["acc://users/{user}/", "acc://{project}/results/{run_id}-x/"]:
        data["output"]["location"] = location
        with pytest.raises(ManifestError, match=r"output\.location: .* no folder of their own"):
            parse_manifest(data)
