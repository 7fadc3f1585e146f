"""Attributing pods to workloads by their names, and combining a workload's pods."""

from __future__ import annotations

import math

import hypothesis
import hypothesis.strategies as st
import pytest

from gpu_rightsizer import ports
from gpu_rightsizer.metrics import attribution, queries
from gpu_rightsizer.models import workloads

HASH = "7d9f8b6c5d"
OLD_HASH = "5c4b9f7d8x"
V2_HASH = "6f5d4c8b9z"


def _target(
    name: str,
    *,
    kind: str = "Deployment",
    namespace: str = "ml",
    hashes: tuple[str, ...] = (),
    workload: str | None = None,
) -> ports.TargetPods:
    return ports.TargetPods(
        workload=workloads.WorkloadRef(namespace=namespace, name=workload or name),
        namespace=namespace,
        kind=kind,
        name=name,
        pod_template_hashes=frozenset(hashes),
    )


def _pod(name: str, namespace: str = "ml", **values: float) -> attribution.PodUsage:
    return attribution.PodUsage(namespace=namespace, pod=name, values=dict(values))


def _owned(targets: list[ports.TargetPods], pods: list[str]) -> dict[str, list[str]]:
    grouped = attribution.attribute(targets, [_pod(p) for p in pods])
    return {ref.name: sorted(p.pod for p in members) for ref, members in grouped.items()}


# --- Deployments ----------------------------------------------------------------------------

CHAT_PODS = [f"chat-{HASH}-x2x4z", f"chat-{HASH}-k9m4t"]
V2_PODS = [f"chat-v2-{V2_HASH}-q2w7z"]


@pytest.mark.parametrize("hashes", [(HASH,), ()], ids=["known-hash", "any-hash"])
def test_chat_never_captures_chat_v2(hashes: tuple[str, ...]) -> None:
    chat = _target("chat", hashes=hashes)
    assert _owned([chat], CHAT_PODS + V2_PODS) == {"chat": sorted(CHAT_PODS)}


@pytest.mark.parametrize("hashes", [((HASH,), (V2_HASH,)), ((), ())], ids=["known", "any"])
def test_chat_and_chat_v2_each_get_their_own_pods(
    hashes: tuple[tuple[str, ...], tuple[str, ...]],
) -> None:
    targets = [_target("chat", hashes=hashes[0]), _target("chat-v2", hashes=hashes[1])]
    assert _owned(targets, CHAT_PODS + V2_PODS) == {
        "chat": sorted(CHAT_PODS),
        "chat-v2": sorted(V2_PODS),
    }


def test_pods_of_earlier_replicasets_count_when_their_hash_is_known() -> None:
    old = f"chat-{OLD_HASH}-b7n2p"
    stranger = f"chat-{'8b7c6d5f4g'}-aaaaa"
    both = _target("chat", hashes=(HASH, OLD_HASH))
    assert _owned([both], [*CHAT_PODS, old, stranger]) == {"chat": sorted([*CHAT_PODS, old])}
    # With no hashes known, any well-formed hash is accepted.
    anyone = _target("chat")
    assert _owned([anyone], [*CHAT_PODS, old, stranger]) == {
        "chat": sorted([*CHAT_PODS, old, stranger])
    }


def test_a_deployment_whose_name_looks_like_a_hash_suffix_is_its_own() -> None:
    # "chat-abcdef1" is a Deployment of its own, not chat's ReplicaSet "abcdef1".
    targets = [_target("chat"), _target("chat-abcdef1")]
    pods = [f"chat-abcdef1-{HASH}-x2x4z", f"chat-{HASH}-k9m4t"]
    assert _owned(targets, pods) == {
        "chat": [f"chat-{HASH}-k9m4t"],
        "chat-abcdef1": [f"chat-abcdef1-{HASH}-x2x4z"],
    }


def test_long_names_cut_to_58_characters_are_recognised() -> None:
    name = "a-very-long-deployment-name-for-a-large-llm-srv"  # 47 characters
    assert len(f"{name}-{HASH}-") == 59
    pod = f"{name}-{HASH}-"[:58] + "x2x4z"
    assert len(pod) == 63
    assert _owned([_target(name, hashes=(HASH,))], [pod]) == {name: [pod]}
    assert _owned([_target(name)], [pod]) == {name: [pod]}
    assert _owned([_target(name, hashes=(OLD_HASH,))], [pod]) == {}


@pytest.mark.parametrize(
    "pod",
    [
        "chat",
        "chat-",
        "chat-x2x4z",
        f"chat-{HASH}",
        f"chat-{HASH}-",
        f"chat-{HASH}-x2x4",  # suffix too short
        f"chat-{HASH}-x2x4zz",  # suffix too long
        f"chat-{HASH}-X2X4Z",  # upper case
        "chat--x2x4z",
        "chat-abc-x2x4z",  # hash too short
        "chat-abcdefghijk-x2x4z",  # hash too long
        f"chat-{HASH}-x2x4z-0",
        f"chatbot-{HASH}-x2x4z",
        f"other-chat-{HASH}-x2x4z",
        "",
    ],
)
def test_malformed_names_are_ignored(pod: str) -> None:
    chat = _target("chat")
    assert not attribution.owns(chat, "ml", pod)
    assert attribution.PodIndex([chat]).owners("ml", pod) == ()


def test_the_namespace_must_match() -> None:
    chat = _target("chat", hashes=(HASH,))
    assert attribution.owns(chat, "ml", CHAT_PODS[0])
    assert not attribution.owns(chat, "other", CHAT_PODS[0])
    assert _owned([chat], []) == {}
    grouped = attribution.attribute([chat], [_pod(CHAT_PODS[0], namespace="other")])
    assert grouped == {}


# --- StatefulSets and other kinds -------------------------------------------------------------


@pytest.mark.parametrize(
    ("pod", "owned"),
    [
        ("db-0", True),
        ("db-1", True),
        ("db-12", True),
        ("db-01", False),
        ("db-", False),
        ("db-x", False),
        ("db-0-1", False),
        ("db-2-0", False),
        ("db", False),
        (f"db-{HASH}-x2x4z", False),
    ],
)
def test_statefulset_pods_are_name_and_ordinal(pod: str, owned: bool) -> None:
    db = _target("db", kind="StatefulSet")
    assert attribution.owns(db, "ml", pod) is owned
    assert bool(attribution.PodIndex([db]).owners("ml", pod)) is owned


def test_a_statefulset_and_its_longer_namesake_each_get_their_own() -> None:
    targets = [_target("db", kind="StatefulSet"), _target("db-2", kind="StatefulSet")]
    assert _owned(targets, ["db-0", "db-2", "db-2-0", "db-2-1"]) == {
        "db": ["db-0", "db-2"],
        "db-2": ["db-2-0", "db-2-1"],
    }


def test_unknown_kinds_own_nothing() -> None:
    job = _target("chat", kind="Job")
    assert _owned([job], ["chat-0", *CHAT_PODS, "chat-x2x4z"]) == {}


def test_two_workloads_on_one_target_both_get_its_pods() -> None:
    targets = [_target("chat", workload="chat-a"), _target("chat", workload="chat-b")]
    assert _owned(targets, CHAT_PODS) == {"chat-a": sorted(CHAT_PODS), "chat-b": sorted(CHAT_PODS)}


_NAME = st.from_regex(r"[a-z]([a-z0-9]|-[a-z0-9]){0,8}", fullmatch=True)
_HASHES = st.sampled_from([HASH, OLD_HASH, V2_HASH, "abc", "x2x4z"])
_PODS = st.one_of(
    st.builds(lambda n, h, s: f"{n}-{h}-{s}", _NAME, _HASHES, st.sampled_from(["x2x4z", "k9"])),
    st.builds(lambda n, i: f"{n}-{i}", _NAME, st.sampled_from(["0", "7", "01", "x"])),
    _NAME,
)


@hypothesis.given(
    targets=st.lists(
        st.builds(
            lambda n, k, hs: _target(n, kind=k, hashes=tuple(hs)),
            _NAME,
            st.sampled_from(["Deployment", "StatefulSet"]),
            st.lists(_HASHES, max_size=2),
        ),
        max_size=6,
    ),
    pods=st.lists(_PODS, max_size=12),
)
def test_the_index_agrees_with_checking_every_target(
    targets: list[ports.TargetPods], pods: list[str]
) -> None:
    index = attribution.PodIndex(targets)
    for pod in pods:
        expected = {id(t) for t in targets if attribution.owns(t, "ml", pod)}
        assert {id(t) for t in index.owners("ml", pod)} == expected, pod


# --- combining a workload's pods --------------------------------------------------------------

RULES = {q.name: q.across_pods for q in queries.sweep("7d")}


def test_statistics_take_the_busiest_pod_and_samples_add_up() -> None:
    pods = [
        _pod("a", memory_used_bytes_p95=10.0, samples=100.0, coverage=0.5, observed_seconds=9.0),
        _pod("b", memory_used_bytes_p95=30.0, samples=50.0, coverage=0.9, observed_seconds=3.0),
        _pod("c", memory_used_bytes_p95=20.0, samples=math.nan, coverage=math.inf),
    ]
    combined = attribution.combine(pods, RULES)
    assert combined.values == {
        "memory_used_bytes_p95": 30.0,
        "samples": 150.0,
        "coverage": 0.9,
        "observed_seconds": 9.0,
    }
    assert combined.pods == ("a", "b", "c")
    assert combined.gpus is None and combined.gpu_model is None


def test_the_gpu_identity_is_the_newest_pods() -> None:
    old = _pod("chat-old", observed_seconds=6 * 86_400.0)
    old.gpus = [attribution.GpuKind("NVIDIA H100 80GB HBM3", None, 2)]
    new = _pod("chat-new", observed_seconds=3_600.0)
    new.gpus = [attribution.GpuKind("NVIDIA A100-SXM4-80GB", "3g.40gb", 1)]
    silent = _pod("chat-silent", observed_seconds=60.0)  # no DCGM identity at all
    combined = attribution.combine([old, new, silent], RULES)
    assert (combined.gpu_model, combined.mig_profile, combined.gpus) == (
        "NVIDIA A100-SXM4-80GB",
        "3g.40gb",
        1,
    )


def test_equally_new_pods_report_the_most_gpus() -> None:
    a = _pod("a", observed_seconds=100.0)
    a.gpus = [attribution.GpuKind("L4", None, 1)]
    b = _pod("b", observed_seconds=100.0)
    b.gpus = [attribution.GpuKind("L4", None, 1), attribution.GpuKind("L4", None, 1)]
    assert attribution.combine([a, b], RULES).gpus == 2
