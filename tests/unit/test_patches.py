"""The patch builders: golden diffs and patches for every kind of change, and their algebra.

Each case's ``kubectl diff``-like view and ready-to-commit strategic-merge patch are in
``tests/golden/patches/<case>.txt``; after an intended change rewrite them with
``UPDATE_GOLDEN=1 pytest tests/unit/test_patches.py``. The property tests check what Apply mode
relies on: restoring the rollback record gives back the original object, the patched object
matches what the patch sets, and building again on it changes nothing.
"""

from __future__ import annotations

import copy
import os
import pathlib
from typing import Any

import hypothesis
import hypothesis.strategies as st
import pytest
import yaml

from gpu_rightsizer.apply import patches, yamltext
from gpu_rightsizer.models import crd, inventory

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "golden" / "patches"
MIXED, SINGLE, NONE = (
    inventory.MigStrategy.MIXED,
    inventory.MigStrategy.SINGLE,
    inventory.MigStrategy.NONE,
)
A100 = "NVIDIA-A100-SXM4-80GB"


def deployment(
    limits: dict[str, Any],
    *,
    kind: str = "Deployment",
    args: list[str] | None = None,
    command: list[str] | None = None,
    env: list[dict[str, Any]] | None = None,
    selector: dict[str, str] | None = None,
    affinity: dict[str, Any] | None = None,
    requests: bool = True,
    replicas: int = 2,
) -> dict[str, Any]:
    box: dict[str, Any] = {"name": "server", "image": "vllm/vllm-openai:v0.11.0"}
    if command is not None:
        box["command"] = command
    if args is not None:
        box["args"] = args
    if env is not None:
        box["env"] = env
    box["resources"] = {"limits": dict(limits), **({"requests": dict(limits)} if requests else {})}
    pod: dict[str, Any] = {
        "containers": [box, {"name": "sidecar", "image": "envoyproxy/envoy:v1.31"}],
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
    }
    if selector is not None:
        pod["nodeSelector"] = selector
    if affinity is not None:
        pod["affinity"] = affinity
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": "chat", "namespace": "ml", "generation": 4},
        "spec": {
            "replicas": replicas,
            "template": {"metadata": {"labels": {"app": "chat"}}, "spec": pod},
        },
    }


def alloc(model: str, gpus: int = 1, mig: str | None = None, replicas: int = 2) -> crd.Allocation:
    return crd.Allocation(
        gpu_model=model, mig_profile=mig, gpus_per_replica=gpus, replicas=replicas, hourly_cost=1
    )


def variant(**patch: Any) -> crd.Variant:
    return crd.Variant.model_validate({"name": "fp8", "precision": "fp8", "containerPatch": patch})


AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {"key": "nvidia.com/gpu.product", "operator": "In", "values": [A100]},
                        {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a"]},
                    ]
                }
            ]
        }
    }
}
VLLM_ARGS = ["--model", "meta-llama/Llama-3.1-8B-Instruct", "--tensor-parallel-size", "2"]

# name -> (target, recommendation, current, variant, engine settings, placement)
CASES: dict[str, tuple[Any, ...]] = {
    "gpu-count": (
        deployment({"nvidia.com/gpu": "2"}, args=VLLM_ARGS),
        alloc("A100-80GB", 1),
        alloc("A100-80GB", 2),
        None,
        None,
        patches.Placement(None, NONE),
    ),
    "mig-mixed-swap": (
        deployment({"nvidia.com/gpu": "1"}, selector={"nvidia.com/gpu.product": A100}),
        alloc("A100-80GB", 1, "1g.10gb"),
        alloc("A100-80GB", 1),
        None,
        None,
        patches.Placement(A100, MIXED),
    ),
    "mig-single-product": (
        deployment({"nvidia.com/mig-3g.40gb": "1"}, selector={"nvidia.com/gpu.product": A100}),
        alloc("A100-80GB", 1, "1g.10gb"),
        alloc("A100-80GB", 1, "3g.40gb"),
        None,
        None,
        patches.Placement(f"{A100}-MIG-1g.10gb", SINGLE),
    ),
    "model-by-selector": (
        deployment({"nvidia.com/gpu": "1"}, selector={"nvidia.com/gpu.product": A100, "pool": "a"}),
        alloc("L4", 1),
        alloc("A100-80GB", 1),
        None,
        None,
        patches.Placement("NVIDIA-L4", NONE),
    ),
    "model-by-affinity": (
        deployment({"nvidia.com/gpu": "1"}, affinity=AFFINITY),
        alloc("L40S", 1),
        alloc("A100-80GB", 1),
        None,
        None,
        patches.Placement("NVIDIA-L40S", NONE),
    ),
    "model-pin-added": (
        deployment({"nvidia.com/gpu": "1"}, requests=False),
        alloc("L4", 1),
        alloc("A100-80GB", 1),
        None,
        None,
        patches.Placement("NVIDIA-L4", NONE),
    ),
    "variant-and-engine-settings": (
        deployment(
            {"nvidia.com/gpu": "1"},
            args=["--model", "meta-llama/Llama-3.1-8B-Instruct", "--max-model-len=8192"],
            env=[{"name": "HF_HOME", "value": "/cache"}],
        ),
        alloc("A100-80GB", 1, "3g.40gb"),
        alloc("A100-80GB", 1),
        variant(
            image="vllm/vllm-openai:v0.11.0-fp8",
            args=["--model", "RedHatAI/Meta-Llama-3.1-8B-Instruct-FP8", "--max-model-len=8192"],
            env=[{"name": "VLLM_QUANT", "value": "fp8"}],
        ),
        crd.EngineSettings(gpu_memory_utilization=0.85, max_model_len=4096),
        patches.Placement(A100, MIXED),
    ),
    "tensor-parallel-equals-form": (
        deployment({"nvidia.com/gpu": "4"}, args=["--model", "m", "--tensor-parallel-size=4"]),
        alloc("H100-80GB", 2),
        alloc("H100-80GB", 4),
        None,
        None,
        patches.Placement(None, NONE),
    ),
    "statefulset-replicas": (
        deployment({"nvidia.com/gpu": "1"}, kind="StatefulSet", replicas=3),
        alloc("A100-80GB", 1, replicas=2),
        alloc("A100-80GB", 1, replicas=3),
        None,
        None,
        patches.Placement(None, NONE),
    ),
}


def build(case: str) -> tuple[dict[str, Any], patches.Patch]:
    target, rec, current, var, settings, placement = CASES[case]
    return target, patches.build(
        target,
        "server",
        rec,
        current=current,
        variant=var,
        engine_settings=settings,
        placement=placement,
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_diff_and_patch(case: str) -> None:
    target, patch = build(case)
    text = (
        patches.diff(target, patch)
        + "\n\n"
        + patches.strategic_merge_patch_yaml(patch, "0123456789")
    )
    golden = GOLDEN / f"{case}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text, encoding="utf-8")
    assert golden.exists(), f"{golden} missing (UPDATE_GOLDEN=1 writes it)"
    assert text == golden.read_text(encoding="utf-8")


def changed(case: str) -> dict[str, tuple[Any, Any]]:
    _, patch = build(case)
    return {
        c.path: (
            c.before if c.before_present else "<absent>",
            c.after if c.after_present else "<absent>",
        )
        for c in patch.changes
    }


SERVER = "/spec/template/spec/containers/name=server"


def test_a_mig_swap_removes_the_whole_gpu_in_limits_and_requests() -> None:
    assert changed("mig-mixed-swap") == {
        f"{SERVER}/resources/limits/nvidia.com~1gpu": ("1", "<absent>"),
        f"{SERVER}/resources/limits/nvidia.com~1mig-1g.10gb": ("<absent>", "1"),
        f"{SERVER}/resources/requests/nvidia.com~1gpu": ("1", "<absent>"),
        f"{SERVER}/resources/requests/nvidia.com~1mig-1g.10gb": ("<absent>", "1"),
    }


def test_the_single_strategy_uses_nvidia_gpu_and_the_mig_product_label() -> None:
    got = changed("mig-single-product")
    assert got[f"{SERVER}/resources/limits/nvidia.com~1gpu"] == ("<absent>", "1")
    assert got[f"{SERVER}/resources/limits/nvidia.com~1mig-3g.40gb"] == ("1", "<absent>")
    assert got["/spec/template/spec/nodeSelector/nvidia.com~1gpu.product"] == (
        A100,
        f"{A100}-MIG-1g.10gb",
    )


def test_a_model_change_by_affinity_keeps_the_users_other_expressions() -> None:
    got = changed("model-by-affinity")
    path = (
        "/spec/template/spec/affinity/nodeAffinity/"
        "requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms"
    )
    after = got[path][1]
    assert after[0]["matchExpressions"] == [
        {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-L40S"]},
        {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a"]},
    ]
    assert not any("nodeSelector/" in p for p in got)


def test_other_node_selector_keys_and_other_containers_are_never_touched() -> None:
    got = changed("model-by-selector")
    assert list(got) == [
        "/spec/template/spec/nodeSelector/nvidia.com~1gpu.product",
    ]


def test_tensor_parallelism_follows_the_gpu_count_in_the_form_it_was_written() -> None:
    assert changed("gpu-count")[f"{SERVER}/args"][1] == [
        "--model",
        "meta-llama/Llama-3.1-8B-Instruct",
        "--tensor-parallel-size",
        "1",
    ]
    assert changed("tensor-parallel-equals-form")[f"{SERVER}/args"][1] == [
        "--model",
        "m",
        "--tensor-parallel-size=2",
    ]


def test_variant_args_then_engine_settings_on_top() -> None:
    got = changed("variant-and-engine-settings")
    assert got[f"{SERVER}/args"][1] == [
        "--model",
        "RedHatAI/Meta-Llama-3.1-8B-Instruct-FP8",
        "--max-model-len=4096",
        "--gpu-memory-utilization",
        "0.85",
    ]
    assert got[f"{SERVER}/image"][1] == "vllm/vllm-openai:v0.11.0-fp8"
    assert got[f"{SERVER}/env/name=VLLM_QUANT/value"] == ("<absent>", "fp8")
    assert f"{SERVER}/env/name=HF_HOME/value" not in got


@pytest.mark.parametrize(
    ("target", "rec", "current", "var", "reason"),
    [
        (
            deployment({"nvidia.com/gpu": "2"}, args=["--model", "m"]),
            alloc("A100-80GB", 1),
            alloc("A100-80GB", 2),
            None,
            "TensorParallelUnknown",
        ),
        (
            deployment(
                {"nvidia.com/gpu": "2"},
                command=["vllm", "serve", "--tensor-parallel-size", "2"],
            ),
            alloc("A100-80GB", 1),
            alloc("A100-80GB", 2),
            None,
            "FlagInCommand",
        ),
        (
            deployment(
                {"nvidia.com/gpu": "1"},
                env=[{"name": "VLLM_QUANT", "valueFrom": {"configMapKeyRef": {"name": "c"}}}],
            ),
            alloc("A100-80GB", 1, "3g.40gb"),
            alloc("A100-80GB", 1),
            variant(env=[{"name": "VLLM_QUANT", "value": "fp8"}]),
            "EnvValueFrom",
        ),
    ],
)
def test_what_cannot_be_patched_is_refused_with_a_reason(
    target: dict[str, Any],
    rec: crd.Allocation,
    current: crd.Allocation,
    var: crd.Variant | None,
    reason: str,
) -> None:
    with pytest.raises(patches.PlanError) as err:
        patches.build(
            target,
            "server",
            rec,
            current=current,
            variant=var,
            engine_settings=None,
            placement=patches.Placement(A100, MIXED),
        )
    assert err.value.reason == reason
    assert "spec.template.spec.containers[server]" in str(err.value)


def test_an_unknown_container_is_refused() -> None:
    with pytest.raises(patches.PlanError) as err:
        patches.build(
            deployment({"nvidia.com/gpu": "1"}),
            "vllm",
            alloc("L4"),
            current=alloc("A100-80GB"),
            variant=None,
            engine_settings=None,
            placement=patches.Placement("NVIDIA-L4", NONE),
        )
    assert err.value.reason == "ContainerNotFound" and "server, sidecar" in str(err.value)


def test_the_json_patch_is_guarded_by_tests_and_touches_only_the_change() -> None:
    target, patch = build("mig-mixed-swap")
    ops = patches.json_patch(target, patch.previous(), patch.desired())
    base = "/spec/template/spec/containers/0"
    assert ops == [
        {"op": "test", "path": f"{base}/name", "value": "server"},
        {"op": "test", "path": f"{base}/resources/limits/nvidia.com~1gpu", "value": "1"},
        {"op": "test", "path": f"{base}/resources/requests/nvidia.com~1gpu", "value": "1"},
        {"op": "remove", "path": f"{base}/resources/limits/nvidia.com~1gpu"},
        {"op": "add", "path": f"{base}/resources/limits/nvidia.com~1mig-1g.10gb", "value": "1"},
        {"op": "remove", "path": f"{base}/resources/requests/nvidia.com~1gpu"},
        {"op": "add", "path": f"{base}/resources/requests/nvidia.com~1mig-1g.10gb", "value": "1"},
    ]


def test_the_json_patch_creates_what_is_missing_in_one_value() -> None:
    target, patch = build("variant-and-engine-settings")
    ops = patches.json_patch(target, patch.previous(), patch.desired())
    adds = {op["path"]: op["value"] for op in ops if op["op"] == "add"}
    assert adds["/spec/template/spec/nodeSelector"] == {"nvidia.com/gpu.product": A100}
    assert adds["/spec/template/spec/containers/0/env/-"] == {"name": "VLLM_QUANT", "value": "fp8"}


def test_the_strategic_merge_patch_reads_back_with_nulls_for_removed_keys() -> None:
    _, patch = build("mig-mixed-swap")
    doc = yaml.safe_load(patches.strategic_merge_patch_yaml(patch))
    limits = doc["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"nvidia.com/gpu": None, "nvidia.com/mig-1g.10gb": "1"}
    assert doc["metadata"] == {"name": "chat", "namespace": "ml"}


def test_paths_round_trip() -> None:
    path: patches.Path = ("spec", "a/b~c", "containers", ("name", "x/y"), "env")
    assert patches.parse_path(patches.format_path(path)) == path


# --- properties -----------------------------------------------------------------------------------

_MODELS = st.sampled_from(["A100-80GB", "H100-80GB", "L4"])
_PROFILES = st.sampled_from([None, "1g.10gb", "3g.40gb"])


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict[str, Any], patches.Patch, tuple[Any, ...]]:
    kind = draw(st.sampled_from(["Deployment", "StatefulSet"]))
    cur_mig = draw(_PROFILES)
    cur_gpus = 1 if cur_mig else draw(st.integers(1, 4))
    limits = {f"nvidia.com/mig-{cur_mig}" if cur_mig else "nvidia.com/gpu": str(cur_gpus)}
    form = draw(st.sampled_from(["space", "equals", "absent"]))
    args = ["--model", "m"]
    if form == "space":
        args += ["--tensor-parallel-size", str(cur_gpus)]
    elif form == "equals":
        args += [f"--tensor-parallel-size={cur_gpus}"]
    pin = draw(st.sampled_from(["selector", "affinity", "none"]))
    target = deployment(
        limits,
        kind=kind,
        args=args,
        env=draw(st.sampled_from([None, [{"name": "A", "value": "1"}]])),
        selector={"nvidia.com/gpu.product": A100, "pool": "x"} if pin == "selector" else None,
        affinity=copy.deepcopy(AFFINITY) if pin == "affinity" else None,
        requests=draw(st.booleans()),
        replicas=draw(st.integers(0, 4)),
    )
    rec_mig = draw(_PROFILES)
    rec_gpus = 1 if rec_mig else draw(st.integers(1, cur_gpus))
    if form == "absent" and cur_gpus != 1:
        rec_gpus = cur_gpus if not rec_mig else 1
        hypothesis.assume(rec_gpus == cur_gpus)
    model = draw(_MODELS)
    rec = alloc(model, rec_gpus, rec_mig, replicas=draw(st.integers(0, 4)))
    current = alloc("A100-80GB", cur_gpus, cur_mig, replicas=target["spec"]["replicas"])
    strategy = draw(st.sampled_from([MIXED, SINGLE]))
    product = draw(st.sampled_from([None, "NVIDIA-L4", f"{A100}-MIG-1g.10gb", A100]))
    var = draw(
        st.sampled_from(
            [
                None,
                variant(image="img:fp8"),
                variant(args=["--model", "m-fp8"], env=[{"name": "Q", "value": "fp8"}]),
            ]
        )
    )
    settings = draw(
        st.sampled_from([None, crd.EngineSettings(gpu_memory_utilization=0.8, max_model_len=2048)])
    )
    inputs = (rec, current, var, settings, patches.Placement(product, strategy))
    try:
        patch = patches.build(
            target,
            "server",
            rec,
            current=current,
            variant=var,
            engine_settings=settings,
            placement=inputs[-1],
        )
    except patches.PlanError as exc:
        # Only the refusal of a fewer-GPU change whose args cannot say so is expected here.
        assert exc.reason == "TensorParallelUnknown", exc
        hypothesis.reject()
    return target, patch, inputs


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(scenarios())
def test_restoring_the_record_gives_back_the_original(
    scenario: tuple[dict[str, Any], patches.Patch, tuple[Any, ...]],
) -> None:
    target, patch, _ = scenario
    after = patches.apply_to(target, patch.desired())
    assert patches.matches(after, patch.desired())
    assert patches.matches(target, patch.previous())
    assert patches.apply_to(after, patch.previous()) == target
    assert not patch.changes or not patches.matches(target, patch.desired())


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(scenarios())
def test_building_again_on_the_patched_target_changes_nothing(
    scenario: tuple[dict[str, Any], patches.Patch, tuple[Any, ...]],
) -> None:
    target, patch, (rec, _current, var, settings, placement) = scenario
    after = patches.apply_to(target, patch.desired())
    again = patches.build(
        after,
        "server",
        rec,
        current=rec,
        variant=var,
        engine_settings=settings,
        placement=placement,
    )
    assert again.changes == ()


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=12),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=3)
        ),
        max_leaves=12,
    )
)
def test_yamltext_reads_back_as_the_same_data(value: Any) -> None:
    assert yaml.safe_load(yamltext.dump(value)) == value
