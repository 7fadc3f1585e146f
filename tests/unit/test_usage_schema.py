"""The usage-profile format: its committed JSON Schema, its documentation and the model agree."""

from __future__ import annotations

import copy
import json
import pathlib
import re
from typing import Any

import jsonschema
import pydantic
import pytest

from gpu_rightsizer.models import profiles
from tests.support import scripts

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "docs" / "usage-profile.schema.json"
DOC_FILE = ROOT / "docs" / "usage-profile.md"


gen_usage_schema = scripts.load("gen-usage-schema.py")


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _doc_example() -> dict[str, Any]:
    """The fenced ```json block of the documentation that holds a UsageProfileList."""
    text = DOC_FILE.read_text(encoding="utf-8")
    blocks = re.findall(r"^```json\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)
    examples = [json.loads(b) for b in blocks if '"UsageProfileList"' in b]
    assert len(examples) == 1, "docs/usage-profile.md needs exactly one ```json example file"
    example: dict[str, Any] = examples[0]
    return example


def test_committed_schema_is_up_to_date() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == gen_usage_schema.render(), (
        "docs/usage-profile.schema.json is out of date with gpu_rightsizer.models.profiles: "
        "run `.venv/bin/python hack/gen-usage-schema.py` and commit the result"
    )
    assert gen_usage_schema.check() == 0


def test_check_mode_reports_drift(capsys: pytest.CaptureFixture[str]) -> None:
    assert gen_usage_schema.check(ROOT / "docs" / "does-not-exist.json") == 1
    assert "gen-usage-schema.py" in capsys.readouterr().err


def test_schema_is_the_models_schema(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    fresh = profiles.UsageFile.model_json_schema(by_alias=True, mode="validation")
    assert schema["properties"] == fresh["properties"]
    assert schema["$defs"] == fresh["$defs"]
    assert schema["required"] == ["items"]


def test_doc_example_validates_against_the_schema(
    validator: jsonschema.Draft202012Validator,
) -> None:
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(_doc_example())]
    assert errors == []


def test_doc_example_validates_against_the_model() -> None:
    parsed = profiles.UsageFile.model_validate(_doc_example())
    assert [(i.namespace, i.name) for i in parsed.items] == [
        ("ml", "chat"),
        ("research", "trainer"),
        ("ml", "embedder"),
    ]
    chat = parsed.items[0].usage
    assert chat.kv_cache_capacity_bytes == 28160 * 16 * 131072
    assert chat.memory_used_bytes.p50 == 73728 * 2**20


def test_doc_example_shows_every_field() -> None:
    used: set[str] = set()
    for item in _doc_example()["items"]:
        used |= set(item["usage"])
    every = {f.alias or name for name, f in profiles.UsageProfile.model_fields.items()}
    assert every - used == set(), "the complete example should use every field"


def _fields(model: type[pydantic.BaseModel]) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


@pytest.mark.parametrize(
    "model",
    [profiles.UsageFile, profiles.WorkloadUsage, profiles.UsageProfile, profiles.Percentiles],
)
def test_doc_documents_every_field(model: type[pydantic.BaseModel]) -> None:
    text = DOC_FILE.read_text(encoding="utf-8")
    missing = sorted(f for f in _fields(model) if f"`{f}`" not in text and f".{f}`" not in text)
    assert missing == [], f"docs/usage-profile.md does not document {missing}"


def _example_with(path: str, value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(_doc_example())
    *parents, last = path.split(".")
    node: Any = obj
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return obj


_DELETE = object()

CASES = {
    "wrong kind": ("kind", "UsageProfile", False),
    "no items": ("items", _DELETE, False),
    "no window": ("items.0.usage.window", _DELETE, False),
    "bad window": ("items.0.usage.window", "a week", False),
    "coverage above 1": ("items.0.usage.coverage", 1.2, False),
    "negative memory": ("items.0.usage.memoryUsedBytes.p50", -1, False),
    "missing p99": ("items.0.usage.graphicsEngineActive.p99", _DELETE, False),
    "unknown field": ("items.0.usage.memoryUsed", 1, False),
    "fractional preemptions": ("items.0.usage.preemptions", 1.5, False),
    "zero gpus": ("items.0.usage.gpus", 0, False),
    "default namespace": ("items.0.namespace", _DELETE, True),
    "no optional fields": (
        "items.0.usage",
        {
            "window": "24h",
            "samples": 1440,
            "coverage": 1,
            "memoryUsedBytes": {"p50": 1, "p95": 2, "p99": 3, "max": 4},
            "graphicsEngineActive": {"p50": 0, "p95": 0, "p99": 0, "max": 0},
        },
        True,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_schema_and_model_agree(validator: jsonschema.Draft202012Validator, case: str) -> None:
    path, value, valid = CASES[case]
    obj = _example_with(path, value)
    try:
        profiles.UsageFile.model_validate(obj)
        model_ok = True
    except pydantic.ValidationError:
        model_ok = False
    assert (model_ok, validator.is_valid(obj)) == (valid, valid)


def test_rules_only_the_model_checks(validator: jsonschema.Draft202012Validator) -> None:
    # Documented in usage-profile.md: ordering and the 0..1 bound of fractions are not in the
    # JSON Schema; the model (and so the CLI) rejects them.
    for path, value in (
        ("items.0.usage.memoryUsedBytes.p50", 1e12),
        ("items.0.usage.kvCacheUsage.max", 1.5),
    ):
        obj = _example_with(path, value)
        assert validator.is_valid(obj)
        with pytest.raises(pydantic.ValidationError):
            profiles.UsageFile.model_validate(obj)


@pytest.mark.parametrize(
    "path", sorted((ROOT / "examples").glob("*.usage.json")), ids=lambda p: p.name
)
def test_example_usage_files_validate(
    validator: jsonschema.Draft202012Validator, path: pathlib.Path
) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert [e.message for e in validator.iter_errors(data)] == []
    profiles.UsageFile.model_validate(data)
