"""Fuzzing what Kubernetes names can be against the sweep's PromQL and pod attribution.

Strategies generate exactly the names Kubernetes allows, with dots and dashes heavily
represented: namespaces and container names are DNS-1123 labels (``[a-z0-9]([-a-z0-9]*[a-z0-9])?``,
at most 63 characters), Deployments and StatefulSets DNS-1123 subdomains (labels joined by dots,
at most 253 characters), pod-template hashes what the ReplicaSet controller writes
(``rand.SafeEncodeString`` of a 32-bit hash: 1 to 10 characters of ``bcdfghjklmnpqrstvwxz2456789``),
the 5 random characters of a generated pod name from that alphabet too, and the values of
``--cluster-label`` style matchers Kubernetes label values (at most 63 of ``[A-Za-z0-9._-]``
with alphanumeric ends, or empty).

Properties:

* every query of a sweep, for any such namespaces and matcher values, is accepted by the real
  ``promtool check rules`` (the Prometheus parser, which also compiles every regex matcher);
* the namespace regex, read back from the PromQL string literal, matches exactly the given
  namespaces and nothing else (``chat.v1`` never ``chatxv1``);
* a matcher value reads back from its string literal as itself in every selector;
* a pod is attributed to exactly the targets whose controllers could have given it its name
  (Kubernetes' own naming rules, recomputed here), so ``chat.v1`` never captures the pods of
  ``chatxv1``, ``chat.v1x`` or ``chat.v1-abc``, and a pod whose name was not cut to 63
  characters has exactly one Deployment owner.

Pod attribution is done in Python by comparing strings (:mod:`gpu_rightsizer.metrics.attribution`),
never by a regex sent to Prometheus, so only the namespace filter is evaluated by RE2. The check
of that regex with Python's ``re.fullmatch`` is exact for these patterns: they are alternations
of literals, each literal made of ``[a-z0-9-]`` (and, for the subdomain values also tried,
``\\.``); Prometheus anchors a regex matcher as ``^(?:...)$``, which is what ``fullmatch`` does;
and for an alternation of plain literals and escaped punctuation RE2 and Python's ``re`` denote
the same set of strings (no classes, repetition, flags or Unicode classes are involved).
"""

from __future__ import annotations

import ast
import pathlib
import re
import shutil
import subprocess
import tempfile

import hypothesis
import hypothesis.strategies as st
import pytest
import yaml

from gpu_rightsizer import ports
from gpu_rightsizer.metrics import attribution, queries
from gpu_rightsizer.models import workloads

SETTINGS = hypothesis.settings(
    derandomize=True,
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)

ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
SAFE = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery/pkg/util/rand: SafeEncodeString
MAX_GENERATED_PREFIX = 58  # names.SimpleNameGenerator: 63 minus the 5 random characters


# --- strategies -------------------------------------------------------------------------------


def _label(max_size: int = 63) -> st.SearchStrategy[str]:
    """A DNS-1123 label: alphanumeric ends, dashes (often several) inside."""
    inner = st.text(st.sampled_from(ALNUM + "-" * 12), max_size=max(max_size - 2, 0))
    end = st.sampled_from(ALNUM)
    short = end
    long = st.builds(lambda a, b, c: a + b + c, end, inner, end).filter(
        lambda s: len(s) <= max_size
    )
    return st.one_of(short, long, st.sampled_from(["a", "chat", "chat-v1", "x-1", "a-b-c"]))


def dns_labels() -> st.SearchStrategy[str]:
    return _label()


def dns_subdomains(max_size: int = 253) -> st.SearchStrategy[str]:
    """A DNS-1123 subdomain: labels joined by dots, at most ``max_size`` characters."""
    joined = st.lists(_label(20), min_size=1, max_size=6).map(".".join)
    return st.one_of(joined, st.sampled_from(["chat.v1", "a.b", "chat-v1.a-b", "x.y.z"])).filter(
        lambda s: len(s) <= max_size
    )


def label_values() -> st.SearchStrategy[str]:
    """A Kubernetes label value: empty, or up to 63 of [A-Za-z0-9._-] with alphanumeric ends."""
    ends = ALNUM + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    inner = st.text(st.sampled_from(ends + "._-" * 10), max_size=61)
    value = st.builds(
        lambda a, b, c: a + b + c, st.sampled_from(ends), inner, st.sampled_from(ends)
    )
    return st.one_of(st.just(""), st.sampled_from(ends), value, st.just("eu.west-1"))


hashes = st.text(st.sampled_from(SAFE), min_size=1, max_size=10)
suffixes = st.text(st.sampled_from(SAFE), min_size=5, max_size=5)
label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,15}", fullmatch=True).filter(
    lambda s: not s.startswith("__")
)


# --- (a) the PromQL parses, and its literals read back ------------------------------------------


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool not found on PATH: run `make tools` "
            "(hack/install-prometheus.sh installs Debian's prometheus package)",
            pytrace=False,
        )
    return promtool


@hypothesis.settings(SETTINGS, max_examples=25)
@hypothesis.given(
    namespaces=st.lists(st.one_of(dns_labels(), dns_subdomains(63)), min_size=1, max_size=6),
    matchers=st.dictionaries(label_names, label_values(), max_size=3),
)
def test_every_query_of_a_sweep_parses_in_promtool(
    namespaces: list[str], matchers: dict[str, str]
) -> None:
    promtool = _promtool()
    plan = queries.sweep("7d", namespaces=namespaces, matchers=matchers)
    rules = {
        "groups": [
            {
                "name": "sweep",
                "rules": [{"record": f"sweep:{q.name}", "expr": q.promql} for q in plan],
            }
        ]
    }
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "sweep.yaml"
        path.write_text(yaml.safe_dump(rules), encoding="utf-8")
        proc = subprocess.run(
            [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(plan)} rules found" in proc.stdout


def _near_misses(value: str) -> set[str]:
    """Strings one edit away from ``value`` that a careless regex would also match."""
    out = {value + "x", "x" + value, value + "-", value[:-1], value.replace(".", "x")}
    out |= {value[:i] + "x" + value[i + 1 :] for i, c in enumerate(value) if c in ".-"}
    out |= {value[:i] + "." + value[i + 1 :] for i in range(len(value))}
    return out


@hypothesis.settings(SETTINGS, max_examples=150)
@hypothesis.given(
    namespaces=st.lists(st.one_of(dns_labels(), dns_subdomains(63)), min_size=1, max_size=5)
)
def test_the_namespace_regex_matches_exactly_its_namespaces(namespaces: list[str]) -> None:
    # The body as PromQL sees it: the double-quoted literal decoded (Go's escapes agree with
    # Python's for these characters), then anchored as Prometheus anchors a regex matcher.
    regex = ast.literal_eval(f'"{queries.namespace_regex(namespaces)}"')
    wanted = set(namespaces)
    probes = wanted.union(*(_near_misses(ns) for ns in namespaces))
    for probe in probes:
        assert bool(re.fullmatch(f"(?:{regex})", probe)) == (probe in wanted), (regex, probe)
    sweep = queries.sweep("7d", namespaces=namespaces)
    body = queries.namespace_regex(namespaces)
    for query in sweep:
        # Every selector is filtered, in both label layouts, by exactly that literal.
        found = re.findall(
            r'(?<![a-z_])(exported_namespace|namespace)=~"((?:[^"\\]|\\.)*)"', query.promql
        )
        assert found, query.name
        assert {literal for _, literal in found} == {body}, query.name
        assert {label for label, _ in found} == {"namespace", "exported_namespace"}, query.name


@hypothesis.settings(SETTINGS, max_examples=60)
@hypothesis.given(matchers=st.dictionaries(label_names, label_values(), min_size=1, max_size=3))
def test_matcher_values_read_back_as_themselves_in_every_selector(
    matchers: dict[str, str],
) -> None:
    plain = queries.sweep("1d")
    scoped = queries.sweep("1d", matchers=matchers)
    for before, after in zip(plain, scoped, strict=True):
        selectors = before.promql.count('exported_pod!=""') + before.promql.count(
            'exported_pod="",pod!=""'
        )
        for label, value in matchers.items():
            literals = re.findall(
                rf'(?<![A-Za-z0-9_]){re.escape(label)}="((?:[^"\\]|\\.)*)"', after.promql
            )
            assert len(literals) == selectors, (after.name, label)
            assert {ast.literal_eval(f'"{lit}"') for lit in literals} == {value}


# --- (b) a pod belongs to exactly the targets that could have named it ------------------------


def generated_prefix(name: str, pod_hash: str) -> str:
    """What the ReplicaSet controller puts before a pod's 5 random characters."""
    return f"{name}-{pod_hash}-"[:MAX_GENERATED_PREFIX]


def could_name(target: ports.TargetPods, namespace: str, pod: str) -> bool:
    """Whether ``target``'s controller could have given a pod the name ``pod`` (known hashes)."""
    if namespace != target.namespace:
        return False
    if target.kind == "StatefulSet":
        head = f"{target.name}-"
        ordinal = pod[len(head) :]
        return pod.startswith(head) and (
            ordinal == "0" or (ordinal.isdigit() and ordinal[0] != "0")
        )
    prefix, suffix = pod[:-5], pod[-5:]
    return (
        len(pod) > 5
        and re.fullmatch("[a-z0-9]{5}", suffix) is not None
        and any(prefix == generated_prefix(target.name, h) for h in target.pod_template_hashes)
    )


@st.composite
def relatives(draw: st.DrawFn, base: str) -> str:
    """A name that a careless matcher would confuse with ``base``."""
    choices = [
        base + draw(st.sampled_from(["x", "-x", ".x", "-v2", "1"])),
        base.replace(".", draw(st.sampled_from(["x", "-", "0"]))),
        base + "-" + draw(hashes),
        base[: max(1, len(base) // 2)].rstrip(".-") or "a",
        draw(st.sampled_from(["", "a.", "x-"])) + base,
    ]
    name = draw(st.sampled_from(choices))
    # Keep it a valid subdomain: alphanumeric ends, no empty label.
    name = re.sub(r"[.-]+$", "", re.sub(r"^[.-]+", "", name))
    name = re.sub(r"\.(?=[.-])|(?<=-)\.", "x", name)
    return name or "a"


@st.composite
def fleets(draw: st.DrawFn, with_statefulsets: bool) -> list[ports.TargetPods]:
    """Targets in two namespaces, most of them relatives of one base name."""
    base = draw(st.one_of(st.just("chat.v1"), dns_subdomains(80)))
    names = [base] + [draw(relatives(base)) for _ in range(draw(st.integers(1, 6)))]
    names += draw(st.lists(dns_subdomains(70), max_size=2))
    targets = []
    seen = set()
    for name in names:
        namespace = draw(st.sampled_from(["ml", "ml", "ml-v1"]))
        kind = (
            draw(st.sampled_from(["Deployment", "StatefulSet"]))
            if with_statefulsets
            else "Deployment"
        )
        if (namespace, kind, name) in seen:
            continue
        seen.add((namespace, kind, name))
        own = draw(st.lists(hashes, min_size=1, max_size=3, unique=True))
        targets.append(
            ports.TargetPods(
                workload=workloads.WorkloadRef(namespace=namespace, name=f"w{len(targets)}"),
                namespace=namespace,
                kind=kind,
                name=name,
                pod_template_hashes=frozenset(own),
            )
        )
    return targets


@st.composite
def pods_of(draw: st.DrawFn, target: ports.TargetPods) -> str:
    if target.kind == "StatefulSet":
        return f"{target.name}-{draw(st.integers(0, 30))}"
    pod_hash = draw(st.sampled_from(sorted(target.pod_template_hashes)))
    return generated_prefix(target.name, pod_hash) + draw(suffixes)


@hypothesis.settings(SETTINGS, max_examples=150)
@hypothesis.given(data=st.data(), with_statefulsets=st.booleans())
def test_a_pod_belongs_to_exactly_the_targets_that_could_have_named_it(
    data: st.DataObject, with_statefulsets: bool
) -> None:
    targets = data.draw(fleets(with_statefulsets))
    probes = [
        (t, data.draw(pods_of(t))) for t in targets for _ in range(data.draw(st.integers(1, 3)))
    ]
    # Names no target made: each pod with a dot or dash turned into another character.
    strays = {
        pod[:i] + "x" + pod[i + 1 :] for _, pod in probes for i, c in enumerate(pod) if c in ".-"
    }
    index = attribution.PodIndex(targets)
    for maker, pod in probes:
        owners = index.owners(maker.namespace, pod)
        expected = {id(t) for t in targets if could_name(t, maker.namespace, pod)}
        assert id(maker) in expected
        assert {id(t) for t in owners} == expected, (pod, [t.name for t in owners])
        untruncated = maker.kind == "Deployment" and len(pod) - 5 < MAX_GENERATED_PREFIX
        if untruncated:
            # Hashes have no dash, so "<name>-<hash>-" names one Deployment.
            assert [t for t in owners if t.kind == "Deployment"] == [maker], pod
    for namespace in ("ml", "ml-v1"):
        for pod in strays:
            expected = {id(t) for t in targets if could_name(t, namespace, pod)}
            assert {id(t) for t in index.owners(namespace, pod)} == expected, pod


@hypothesis.settings(SETTINGS, max_examples=100)
@hypothesis.given(data=st.data())
def test_without_known_hashes_a_deployment_still_never_captures_a_relatives_pods(
    data: st.DataObject,
) -> None:
    """ReplicaSets not listed: any 6-10 character hash is accepted, still only after the
    exact name and a dash, so ``chat.v1`` never takes the pods of ``chatxv1`` or ``chat.v1-x``."""
    targets = data.draw(fleets(with_statefulsets=False))
    blind = [_without_hashes(t) for t in targets]
    long_hashes = st.text(st.sampled_from(SAFE), min_size=6, max_size=10)
    index = attribution.PodIndex(blind)
    for target in blind:
        for _ in range(data.draw(st.integers(1, 3))):
            pod = generated_prefix(target.name, data.draw(long_hashes)) + data.draw(suffixes)
            owners = index.owners(target.namespace, pod)
            assert target in owners, pod
            if len(pod) - 5 < MAX_GENERATED_PREFIX:
                assert list(owners) == [target], (pod, [t.name for t in owners])


@pytest.mark.parametrize(
    ("pod", "owner"),
    [
        ("chat.v1-bcdfg2-x2x4z", "chat.v1"),
        ("chatxv1-bcdfg2-x2x4z", "chatxv1"),
        ("chat.v1x-bcdfg2-x2x4z", None),
        ("chat.v1-bcdfg2-bcdfg2-x2x4z", "chat.v1-bcdfg2"),
        ("chat-v1-bcdfg2-x2x4z", None),
    ],
)
def test_chat_v1_and_its_lookalikes(pod: str, owner: str | None) -> None:
    targets = [
        ports.TargetPods(
            workload=workloads.WorkloadRef(namespace="ml", name=name),
            namespace="ml",
            kind="Deployment",
            name=name,
            pod_template_hashes=frozenset({"bcdfg2"}),
        )
        for name in ("chat.v1", "chatxv1", "chat.v1-bcdfg2")
    ]
    for known in (True, False):
        pool = targets if known else [_without_hashes(t) for t in targets]
        owners = [t.name for t in attribution.PodIndex(pool).owners("ml", pod)]
        assert owners == ([owner] if owner else []), (known, pod)


def _without_hashes(target: ports.TargetPods) -> ports.TargetPods:
    return ports.TargetPods(
        workload=target.workload, namespace=target.namespace, kind=target.kind, name=target.name
    )


LONG = "a.a00000a.a000000000a.a000000000a.a0000000000000000a.chat"  # 56 characters


@pytest.mark.parametrize("name", [LONG + "x", LONG + "xy", LONG + "x" * 40])
def test_a_name_of_57_characters_or_more_keeps_its_pods_without_known_hashes(name: str) -> None:
    """The cut to 58 characters falls inside (or right after) the name: no hash is left to
    parse. Found by the property above (such a Deployment's pods were attributed to nobody)."""
    pod = generated_prefix(name, "bcdfg22") + "x2x4z"
    short = _without_hashes(_deployment(LONG))
    target = _without_hashes(_deployment(name))
    assert attribution.PodIndex([short, target]).owners("ml", pod) == (target,)


def _deployment(name: str) -> ports.TargetPods:
    return ports.TargetPods(
        workload=workloads.WorkloadRef(namespace="ml", name=name[-20:]),
        namespace="ml",
        kind="Deployment",
        name=name,
        pod_template_hashes=frozenset({"bcdfg22"}),
    )
