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
    with pytest.raises(ManifestError) as error:
        load_manifest(write(tmp_path, {**valid(), "jobflow": "flows/climate.py"}))
    assert (
        "jobflow: 'flows/climate.py' is not path/to/file.py:function (relative to the "
        "repository root), e.g. flows/flood.py:flood_frequency"
    ) in str(error.value)


def test_a_pattern_is_described_in_words_never_as_its_regular_expression() -> None:
    data = {**valid(), "name": "Flood_Frequency", "tags": ["ok", "-bad"]}
    data["inputs"] = {**data["inputs"], "max_total_size": "5 parsecs"}  # type: ignore[dict-item]
    with pytest.raises(ManifestError) as error:
        parse_manifest(data)
    message = str(error.value)
    assert "name: 'Flood_Frequency' is not a name of lowercase letters, digits and dashes" in (
        message
    )
    assert "tags[1]: '-bad' is not a tag" in message
    assert "inputs.max_total_size: '5 parsecs' is not a size" in message and "'500 MB'" in message
    assert "pattern" not in message and "^" not in message and "\\" not in message


def test_every_pattern_of_the_published_schema_says_what_it_means() -> None:
    """Editors show a field's errorMessage instead of its regex too."""

    def walk(node: object, said: bool = False) -> list[str]:
        if isinstance(node, list):
            return [p for item in node for p in walk(item, said)]
        if not isinstance(node, dict):
            return []
        said = said or "errorMessage" in node
        found = [node["pattern"]] if "pattern" in node and not said else []
        return found + [p for value in node.values() for p in walk(value, said)]

    assert walk(json.loads(manifest_json_schema())) == []


@pytest.mark.parametrize(("written", "wanted"), [("1.0", "1.0.0"), ("2", "2.0.0")])
def test_a_version_written_as_a_number_is_told_to_be_quoted(
    tmp_path: Path, written: str, wanted: str
) -> None:
    text = EXAMPLE.read_text().replace("version: 1.0.0", f"version: {written}")
    assert f"version: {written}\n" in text
    with pytest.raises(ManifestError) as error:
        load_manifest(write(tmp_path, text))
    assert f'write it as a string: version: "{wanted}"' in str(error.value)
    assert "semantic version" in str(error.value)


def test_a_path_leaving_the_repository_is_reported_with_the_type_errors_beside_it(
    tmp_path: Path,
) -> None:
    with pytest.raises(ManifestError) as error:
        load_manifest(write(tmp_path, {**valid(), "data": ["../terrain.nc", 3]}))
    message = str(error.value)
    assert "data[0]: data path '../terrain.nc': expected a path inside the repository" in message
    assert "data[1]: expected text, got the number 3" in message

    with pytest.raises(ManifestError) as error:
        load_manifest(write(tmp_path, {**valid(), "data": "../terrain.nc"}))
    message = str(error.value)
    assert "data: expected a list, got the text '../terrain.nc'" in message
    assert "data: data path '../terrain.nc': expected a path inside the repository" in message


def test_rules_across_fields_are_reported_alongside_field_errors(tmp_path: Path) -> None:
    data = {**valid(), "title": ""}
    data["inputs"] = {
        "min_files": 5,
        "max_files": 2,
        "accepted_types": ["no good"],
        "samples": ["acc://elsewhere/x.csv"],
    }
    with pytest.raises(ManifestError) as error:
        load_manifest(write(tmp_path, data))
    message = str(error.value)
    assert "title: String should have at least 1 character" in message
    assert "inputs.accepted_types: accepted type 'no good'" in message
    assert "inputs: max_files (2) is less than min_files (5)" in message
    assert "inputs.samples: 'acc://elsewhere/x.csv' is not a file or folder in the model's own" in (
        message
    )
    assert message.count("max_files (2)") == 1


def test_a_rule_across_fields_alone_is_reported_once(tmp_path: Path) -> None:
    data = {**valid(), "inputs": {"min_files": 5, "max_files": 2}}
    with pytest.raises(ManifestError) as error:
        load_manifest(write(tmp_path, data))
    assert str(error.value).count("inputs: max_files (2) is less than min_files (5)") == 1


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
            "checks[0].field: 'scenario' is not where a problem can be shown: conf.<setting>",
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
