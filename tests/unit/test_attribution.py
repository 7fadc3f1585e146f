"""Attributing pods to workloads by their names, and combining a workload's pods."""

from __future__ import annotations

import dataclasses
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
        _pod("a", memory_used_bytes_p95=10.0, samples=100.0, covered_steps=5, first_step=9.0),
        _pod("b", memory_used_bytes_p95=30.0, samples=50.0, covered_steps=9, first_step=3.0),
        _pod("c", memory_used_bytes_p95=20.0, samples=math.nan, covered_steps=math.inf),
    ]
    combined = attribution.combine(pods, RULES)
    assert combined.values == {
        "memory_used_bytes_p95": 30.0,
        "samples": 150.0,
        "covered_steps": 9.0,
        "first_step": 3.0,  # the earliest pod's
    }
    assert combined.pods == ("a", "b", "c")
    assert combined.gpus is None and combined.gpu_model is None


def test_the_gpu_identity_is_the_newest_pods() -> None:
    old = _pod("chat-old", first_step=1_000.0)
    old.gpus = [attribution.GpuKind("NVIDIA H100 80GB HBM3", None, 2)]
    new = _pod("chat-new", first_step=500_000.0)
    new.gpus = [attribution.GpuKind("NVIDIA A100-SXM4-80GB", "3g.40gb", 1)]
    silent = _pod("chat-silent", first_step=600_000.0)  # no DCGM identity at all
    combined = attribution.combine([old, new, silent], RULES)
    assert (combined.gpu_model, combined.mig_profile, combined.gpus) == (
        "NVIDIA A100-SXM4-80GB",
        "3g.40gb",
        1,
    )


def test_equally_new_pods_report_the_most_gpus() -> None:
    a = _pod("a", first_step=100.0)
    a.gpus = [attribution.GpuKind("L4", None, 1)]
    b = _pod("b", first_step=100.0)
    b.gpus = [attribution.GpuKind("L4", None, 1), attribution.GpuKind("L4", None, 1)]
    assert attribution.combine([a, b], RULES).gpus == 2


def test_the_first_step_is_the_earliest_pods() -> None:
    pods = [_pod("a", first_step=600.0, last_step=900.0), _pod("b", first_step=300.0)]
    combined = attribution.combine(pods, RULES)
    assert combined.values["first_step"] == 300.0
    assert combined.values["last_step"] == 900.0


# --- coverage over time -----------------------------------------------------------------------

STEP = 300.0
DAY_GRID = queries.grid("1d", "5m")  # 288 steps
END = 1_800_000_000.0 - 1_800_000_000.0 % STEP  # a step of the grid
START = END - 86_400.0 + STEP  # the window's first step


def _covering(
    name: str, first: float, last: float, count: float | None = None
) -> attribution.PodUsage:
    """A pod with samples at every step from ``first`` to ``last`` (or ``count`` of them)."""
    steps = (last - first) / STEP + 1 if count is None else count
    return _pod(name, covered_steps=steps, first_step=first, last_step=last)


def test_a_rollout_that_replaced_every_pod_keeps_the_window_covered() -> None:
    half = START + 144 * STEP
    pods = [
        _covering("chat-old1-a", START, half - STEP),
        _covering("chat-old1-b", START, half - STEP),
        _covering("chat-new1-a", half, END),
        _covering("chat-new1-b", half, END),
    ]
    assert attribution.coverage(pods, DAY_GRID) == 1.0
    combined = attribution.combine(pods, RULES, DAY_GRID)
    assert combined.values["coverage"] == 1.0
    # Per pod, half of the window: the busiest pod's figure alone would say 0.5.
    assert max(p.values["covered_steps"] for p in pods) / DAY_GRID.steps == 0.5


def test_overlapping_pods_are_counted_once_and_a_gap_between_them_stays_a_gap() -> None:
    pods = [
        _covering("a", START, START + 99 * STEP),  # steps 0-99
        _covering("b", START + 50 * STEP, START + 149 * STEP),  # 50-149: overlaps a
        _covering("c", START + 200 * STEP, END),  # 200-287: after a gap of 50 steps
    ]
    assert attribution.coverage(pods, DAY_GRID) == pytest.approx((150 + 88) / 288)


def test_a_pods_own_gaps_lower_the_union_but_never_below_the_best_pod() -> None:
    # a has samples at 100 of the 144 steps from its first to its last: 44 unknown gaps.
    pods = [
        _covering("a", START, START + 143 * STEP, count=100),
        _covering("b", START + 144 * STEP, END),
    ]
    assert attribution.coverage(pods, DAY_GRID) == pytest.approx((288 - 44) / 288)
    # Two concurrent replicas with gaps: the union less the gaps is below the best pod.
    gappy = [
        _covering("a", START, END, count=250),
        _covering("b", START, END, count=200),
    ]
    assert attribution.coverage(gappy, DAY_GRID) == pytest.approx(250 / 288)


def test_pods_without_first_or_last_step_count_by_their_steps_alone() -> None:
    pods = [_pod("a", covered_steps=72.0), _covering("b", START, START + 35 * STEP)]
    assert attribution.coverage(pods, DAY_GRID) == pytest.approx(72 / 288)
    assert attribution.coverage([_pod("c", samples=10.0)], DAY_GRID) is None
    assert attribution.coverage([], DAY_GRID) is None
    combined = attribution.combine([_pod("c", samples=10.0)], RULES, DAY_GRID)
    assert "coverage" not in combined.values


def test_coverage_is_clipped_to_the_window() -> None:
    # Prometheus 2 subqueries include both ends of the range: one step more than the grid.
    pods = [_covering("a", START - STEP, END), _pod("b", covered_steps=math.nan)]
    assert attribution.coverage(pods, DAY_GRID) == 1.0
    # The first step is looked for one step before the window: that step is not the window's.
    # Knowing the end, a pod seen there and at 100 steps of the window is not short of any.
    ended = dataclasses.replace(DAY_GRID, end=END)
    assert ended.first_step == END - 86_400.0
    early = [_covering("a", END - 86_400.0 - STEP, END - 86_400.0 + 99 * STEP, count=100)]
    assert attribution.coverage(early, ended) == pytest.approx(100 / 288)
    assert attribution.coverage(early, DAY_GRID) == pytest.approx(100 / 288)  # the best pod
    backwards = [_pod("a", covered_steps=10.0, first_step=END, last_step=START)]
    assert attribution.coverage(backwards, DAY_GRID) == pytest.approx(10 / 288)


@hypothesis.given(
    st.lists(
        st.tuples(st.integers(0, 287), st.integers(0, 287), st.floats(0, 1)),
        min_size=1,
        max_size=6,
    )
)
def test_coverage_never_exceeds_the_steps_really_covered(
    spans: list[tuple[int, int, float]],
) -> None:
    pods = []
    covered: set[int] = set()
    for i, (a, b, share) in enumerate(spans):
        first, last = min(a, b), max(a, b)
        steps = list(range(first, last + 1))
        # Samples at the first and the last step, and a share of those between.
        inside = steps[1:-1][: round(share * max(len(steps) - 2, 0))]
        present = {first, last, *inside}
        covered |= present
        pods.append(
            _pod(
                f"p{i}",
                covered_steps=float(len(present)),
                first_step=START + first * STEP,
                last_step=START + last * STEP,
            )
        )
    figure = attribution.coverage(pods, DAY_GRID)
    assert figure is not None
    assert max(p.values["covered_steps"] for p in pods) / 288 <= figure + 1e-12
    assert figure <= len(covered) / 288 + 1e-12
