"""Bad input gets one line naming the file and the field, and a non-zero exit; no traceback."""

from __future__ import annotations

import json
import pathlib

import pytest
from click.testing import CliRunner

from gpu_rightsizer.cli import main

EXAMPLES = pathlib.Path(__file__).parents[2] / "examples"
CASE = "llama-8b-h100-low-use"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main.cli, list(args))
    return result.exit_code, result.stderr


def check_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture
def manifest(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "w.yaml"
    path.write_text((EXAMPLES / f"{CASE}.yaml").read_text())
    return path


def usage() -> str:
    return str(EXAMPLES / f"{CASE}.usage.json")


def test_malformed_yaml(manifest: pathlib.Path) -> None:
    manifest.write_text("apiVersion: v1\nkind: [unclosed\n")
    code, err = run("recommend", "-f", str(manifest), "--usage", usage())
    check_one_line_error(code, err, str(manifest), "malformed YAML", "line")


def test_unknown_gpu_model_on_the_target(manifest: pathlib.Path) -> None:
    manifest.write_text(manifest.read_text().replace("NVIDIA-H100-80GB-HBM3", "NVIDIA-X9000"))
    code, err = run("recommend", "-f", str(manifest), "--usage", usage())
    check_one_line_error(code, err, str(manifest), "nvidia.com/gpu.product", "'NVIDIA-X9000'")


def test_unknown_gpu_model_in_policy(manifest: pathlib.Path) -> None:
    text = manifest.read_text().replace(
        "  policy:\n", "  policy:\n    allowedGPUModels: [H100-80GB, Z1]\n", 1
    )
    manifest.write_text(text)
    code, err = run("recommend", "-f", str(manifest), "--usage", usage())
    check_one_line_error(code, err, str(manifest), "spec.policy.allowedGPUModels", "'Z1'")


def test_unknown_precision(manifest: pathlib.Path) -> None:
    manifest.write_text(manifest.read_text().replace("precision: bf16", "precision: fp7"))
    code, err = run("recommend", "-f", str(manifest), "--usage", usage())
    check_one_line_error(code, err, str(manifest), "spec.model.precision", "GPUWorkload ml/")


def test_target_missing_from_the_files(manifest: pathlib.Path) -> None:
    text = manifest.read_text()
    manifest.write_text(text.split("\n---\napiVersion: apps/v1")[0])
    code, err = run("recommend", "-f", str(manifest), "--usage", usage())
    check_one_line_error(code, err, str(manifest), "spec.targetRef", "Deployment ml/summarizer")


def test_target_without_gpus(manifest: pathlib.Path) -> None:
    manifest.write_text(manifest.read_text().replace("nvidia.com/gpu: 1", "cpu: 1"))
    code, err = run("recommend", "-f", str(manifest), "--usage", usage())
    check_one_line_error(code, err, str(manifest), "resources.limits", "nvidia.com/gpu")


def test_usage_file_not_matching_the_schema(tmp_path: pathlib.Path) -> None:
    data = json.loads((EXAMPLES / f"{CASE}.usage.json").read_text())
    data["items"][0]["usage"]["coverage"] = 1.7
    bad = tmp_path / "u.json"
    bad.write_text(json.dumps(data))
    code, err = run("recommend", "-f", str(EXAMPLES / f"{CASE}.yaml"), "--usage", str(bad))
    check_one_line_error(code, err, str(bad), "items[0].usage.coverage")


def test_usage_file_with_malformed_json(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "u.json"
    bad.write_text("{not json")
    code, err = run("recommend", "-f", str(EXAMPLES / f"{CASE}.yaml"), "--usage", str(bad))
    check_one_line_error(code, err, str(bad), "malformed json")


def test_missing_file(tmp_path: pathlib.Path) -> None:
    code, err = run("recommend", "-f", str(tmp_path / "nope.yaml"), "--usage", usage())
    check_one_line_error(code, err, "nope.yaml", "cannot read")


def test_workload_without_usage_is_reported_not_failed(tmp_path: pathlib.Path) -> None:
    empty = tmp_path / "u.json"
    empty.write_text(json.dumps({"kind": "UsageProfileList", "items": []}))
    result = CliRunner().invoke(
        main.cli,
        ["recommend", "-f", str(EXAMPLES / f"{CASE}.yaml"), "--usage", str(empty), "-o", "json"],
    )
    assert result.exit_code == 0
    status = json.loads(result.stdout)[0]["status"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NoUsageData")


def test_catalog_json_lists_the_canonical_models() -> None:
    result = CliRunner().invoke(main.cli, ["catalog", "-o", "json"])
    assert result.exit_code == 0
    ids = [g["id"] for g in json.loads(result.stdout)["gpus"]]
    assert (
        "H100-80GB" in ids and "L4" in ids and "H100-PCIe-80GB" in ids and len(ids) == len(set(ids))
    )


def test_catalog_overrides_change_prices(tmp_path: pathlib.Path) -> None:
    overrides = tmp_path / "o.yaml"
    overrides.write_text(
        "currency: EUR\nprices:\n  L4: {perGpuHour: 9.99, source: contract, date: 2026-11}\n"
    )
    result = CliRunner().invoke(
        main.cli, ["catalog", "-o", "json", "--catalog-overrides", str(overrides)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["currency"] == "EUR"
    assert next(g for g in data["gpus"] if g["id"] == "L4")["price"]["perGpuHour"] == 9.99
