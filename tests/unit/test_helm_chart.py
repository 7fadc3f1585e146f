"""The Helm chart, rendered offline with the real Helm binary (``make tools`` unpacks it).

- ``helm lint --strict`` passes;
- ``helm template`` matches golden snapshots under tests/golden/helm/ for the defaults and the main
  value combinations (rewrite them after an intended change with
  ``UPDATE_GOLDEN=1 pytest tests/unit/test_helm_chart.py``); the CRD is left out of the snapshots,
  since the drift test below covers it;
- values.schema.json is the one hack/gen-values-schema.py generates from values.yaml, closes every
  object the chart defines (``additionalProperties: false``), and Helm itself rejects a misspelt
  key or a wrong type with its schema error;
- the CRD template is crds/ synced by hack/sync-crds.py, and renders back to the canonical CRD;
- the Deployment's arguments parse with the real ``gpu-rightsizer run`` command, and the catalog
  ConfigMap loads with the operator's own override loader;
- RBAC grants exactly the verbs the operator uses, per mode;
- the node agent (off by default) is a hardened DaemonSet with hostPID whose arguments parse with
  the real ``gpu-rightsizer agent`` command, whose ClusterRole grants only ``list`` on pods, and
  whose pods neither the operator's selectors select nor the other way round; its ServiceMonitor
  honours the agent's labels;
- the Grafana dashboard is valid JSON whose queries use only metrics the operator exports, with
  labels those metrics have.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import pathlib
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import click
import pytest
import yaml
from hack.devcluster.plane import ToolsMissingError, find_tools

from gpu_rightsizer import catalogs
from gpu_rightsizer.cli import main
from gpu_rightsizer.models import durations
from gpu_rightsizer.telemetry import instruments
from tests.support import scripts

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "gpu-rightsizer"
GOLDEN = ROOT / "tests" / "golden" / "helm"
CRD_FILE = ROOT / "crds" / "gpuworkloads.gpu-rightsizer.dev.yaml"
DASHBOARD = CHART / "dashboards" / "gpu-rightsizer.json"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

RELEASE = "gpu-rightsizer"
NAMESPACE = "gpu-rightsizer"
PROMETHEUS_URL = "http://prometheus.monitoring.svc:9090"

# The golden cases: name -> values given on top of the chart's defaults.
CASES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespaced": {"rbac": {"clusterWide": False}, "watchNamespaces": ["ml-serving", "search"]},
    "servicemonitor": {
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}}
    },
    "apply-enabled": {"apply": {"enabled": True}},
    "argo-rollouts": {"targets": {"argoRollouts": True}, "apply": {"enabled": True}},
    "prometheusrule": {"prometheusRule": {"enabled": True, "labels": {"release": "kps"}}},
    # The node agent with its ServiceMonitor: every agent template.
    "agent-enabled": {
        "agent": {
            "enabled": True,
            "serviceMonitor": {"enabled": True, "labels": {"release": "kps"}},
        }
    },
    "prometheus-auth-and-catalog": {
        "prometheus": {
            "url": "https://prometheus.example.com",
            "bearerToken": {"secretName": "prometheus-token"},
            "tls": {"ca": {"configMapName": "trust-bundle", "key": "bundle.pem"}},
        },
        "catalog": {
            "currency": "EUR",
            "pue": 1.3,
            "gridCarbonIntensityGramsPerKwh": 250,
            "prices": {
                "H100-80GB": {"perGpuHour": 1.9, "source": "our contract", "date": "2026-11"}
            },
        },
    },
}


gen_values_schema = scripts.load("gen-values-schema.py")
sync_crds = scripts.load("sync-crds.py")


# --- running Helm --------------------------------------------------------------------------------


@functools.cache
def _helm_binary() -> pathlib.Path:
    try:
        return find_tools(["helm"])["helm"]
    except ToolsMissingError as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture(scope="module")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("helm-home")


def helm(home: pathlib.Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the cached Helm with its caches in ``home``; fail with its output when ``check``."""
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    proc = subprocess.run(
        [str(_helm_binary()), *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def render_text(
    home: pathlib.Path, values: Mapping[str, Any] | None = None, *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``helm template`` of the chart with ``values`` (prometheus.url defaulted) in a file."""
    given = _merge({"prometheus": {"url": PROMETHEUS_URL}}, values or {})
    values_file = home / f"values-{abs(hash(json.dumps(given, sort_keys=True)))}.yaml"
    values_file.write_text(yaml.safe_dump(given), encoding="utf-8")
    return helm(
        home,
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--values",
        str(values_file),
        check=check,
    )


def documents(text: str) -> list[tuple[str, str]]:
    """(source template, text) for each document of ``helm template`` output."""
    found = []
    for chunk in re.split(r"(?m)^---\s*$", text):
        match = re.search(r"(?m)^# Source: (\S+)$", chunk)
        if match and chunk.strip():
            found.append((match[1], chunk.strip("\n")))
    return found


def render(home: pathlib.Path, values: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The rendered objects, decoded."""
    objects = []
    for _, text in documents(render_text(home, values).stdout):
        loaded = yaml.safe_load(text)
        if loaded:
            objects.append(loaded)
    return objects


def only(objects: Sequence[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{kind} {name or ''}: {len(found)} rendered"
    return found[0]


def container(objects: Sequence[dict[str, Any]]) -> dict[str, Any]:
    deployment = only(objects, "Deployment")
    (operator,) = deployment["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = operator
    return result


# --- lint and golden snapshots -------------------------------------------------------------------


def test_helm_lint_strict_passes(helm_home: pathlib.Path) -> None:
    for extra in (
        [],
        ["--set", "rbac.clusterWide=false", "--set", "watchNamespaces={a,b}"],
        ["--set", "agent.enabled=true", "--set", "agent.serviceMonitor.enabled=true"],
    ):
        proc = helm(
            helm_home,
            "lint",
            "--strict",
            str(CHART),
            "--set",
            f"prometheus.url={PROMETHEUS_URL}",
            *extra,
        )
        assert "0 chart(s) failed" in proc.stdout, proc.stdout


def _snapshot(text: str) -> str:
    kept = [doc for source, doc in documents(text) if "/templates/crds/" not in source]
    return "".join(f"---\n{doc}\n" for doc in kept)


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendering_matches_the_golden_snapshot(helm_home: pathlib.Path, case: str) -> None:
    snapshot = _snapshot(render_text(helm_home, CASES[case]).stdout)
    golden = GOLDEN / f"{case}.yaml"
    if UPDATE:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        golden.write_text(snapshot, encoding="utf-8")
    assert golden.exists(), f"{golden.relative_to(ROOT)} missing (UPDATE_GOLDEN=1 writes it)"
    assert golden.read_text(encoding="utf-8") == snapshot, (
        f"{golden.relative_to(ROOT)} differs from `helm template` (UPDATE_GOLDEN=1 rewrites it)"
    )


def test_no_golden_snapshot_is_left_without_its_case() -> None:
    assert sorted(p.stem for p in GOLDEN.glob("*.yaml")) == sorted(CASES)


# --- values and their schema ---------------------------------------------------------------------


def test_the_schema_is_generated_from_values_yaml() -> None:
    committed = (CHART / "values.schema.json").read_text(encoding="utf-8")
    assert committed == gen_values_schema.render(), (
        "values.schema.json is stale: run hack/gen-values-schema.py"
    )


def _objects(schema: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    if schema.get("type") == "object" or "properties" in schema:
        yield path, schema
    for key, child in (schema.get("properties") or {}).items():
        yield from _objects(child, f"{path}.{key}")
    for keyword in ("items", "additionalProperties"):
        child = schema.get(keyword)
        if isinstance(child, Mapping):
            yield from _objects(child, f"{path}.{keyword}")


# Objects handed to Kubernetes as they are: Kubernetes validates their content.
PASS_THROUGH = {
    ".global",
    ".podSecurityContext",
    ".securityContext",
    ".affinity",
    ".operator.extraEnv.items",
    ".tolerations.items",
    ".agent.podSecurityContext",
    ".agent.securityContext",
    ".agent.tolerations.items",
}


def test_every_object_the_chart_defines_is_closed() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    for path, node in _objects(schema):
        if path in PASS_THROUGH:
            assert "properties" not in node, path
            continue
        assert "additionalProperties" in node, f"{path or '(root)'} accepts any key"
        if "properties" in node:
            assert node["additionalProperties"] is False, path


def test_every_key_has_a_sentence_of_documentation() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))

    def walk(node: Mapping[str, Any], path: str) -> Iterator[tuple[str, str]]:
        for key, child in (node.get("properties") or {}).items():
            yield f"{path}.{key}", child.get("description", "")
            if "default" not in child:  # an object the chart defines: its keys too
                yield from walk(child, f"{path}.{key}")

    described = dict(walk(schema, ""))
    assert len(described) > 60
    for path, description in described.items():
        assert len(description.split()) >= 3 and description[0].isupper(), path


def test_the_generator_refuses_an_undocumented_key() -> None:
    with pytest.raises(gen_values_schema.ValuesError, match=r"image.tag.*comment"):
        gen_values_schema.build("# The image.\nimage:\n  tag: ''\n")


def test_the_generator_reads_annotations_and_examples() -> None:
    text = (
        "# Level of logging.\n"
        '# +schema: {"enum": ["INFO", "DEBUG"]}\n'
        "level: INFO\n"
        "\n"
        "# Extra labels. For example:\n"
        "#   team: ml\n"
        '# +schema: {"type": "object", "additionalProperties": {"type": "string"}}\n'
        "labels: {}\n"
    )
    schema = gen_values_schema.build(text)["properties"]
    assert schema["level"] == {
        "description": "Level of logging.",
        "type": "string",
        "enum": ["INFO", "DEBUG"],
        "default": "INFO",
    }
    assert schema["labels"]["description"] == "Extra labels."
    assert schema["labels"]["additionalProperties"] == {"type": "string"}


@pytest.mark.parametrize(
    ("values", "error"),
    [
        (
            {"image": {"pullPolicie": "Always"}},
            "at '/image': additional properties 'pullPolicie' not allowed",
        ),
        ({"metrics": {"serviceMonitr": {}}}, "additional properties 'serviceMonitr' not allowed"),
        ({"crd": {"enabled": False}}, "additional properties 'crd' not allowed"),
        ({"operator": {"interval": 5}}, "at '/operator/interval': got number, want string"),
        ({"rbac": {"clusterWide": "no"}}, "at '/rbac/clusterWide': got string, want boolean"),
        ({"operator": {"logFormat": "xml"}}, "at '/operator/logFormat'"),
        ({"catalog": {"pue": 0.5}}, "at '/catalog/pue'"),
        (
            {"catalog": {"prices": {"L4": {"perGpuHour": 1, "source": "x", "date": "x"}}}},
            "at '/catalog/prices/L4/date'",
        ),
        ({"agent": {"interval": "10 seconds"}}, "at '/agent/interval'"),
        ({"agent": {"servicemonitor": {}}}, "additional properties 'servicemonitor' not allowed"),
        ({"agent": {"port": 0}}, "at '/agent/port'"),
        ({"prometheus": {"metricsDialect": "dcgm-new"}}, "at '/prometheus/metricsDialect'"),
    ],
)
def test_helm_rejects_bad_values_with_its_schema_error(
    helm_home: pathlib.Path, values: dict[str, Any], error: str
) -> None:
    proc = render_text(helm_home, values, check=False)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert error in proc.stderr, proc.stderr


def test_a_misspelt_key_given_with_set_fails_install_style_commands(
    helm_home: pathlib.Path,
) -> None:
    proc = helm(
        helm_home,
        "template",
        RELEASE,
        str(CHART),
        "--set",
        f"prometheus.url={PROMETHEUS_URL}",
        "--set",
        "prometheus.tls.insecureSkipVerfy=true",
        check=False,
    )
    assert proc.returncode != 0
    assert "additional properties 'insecureSkipVerfy' not allowed" in proc.stderr


@pytest.mark.parametrize("dialect", ["dcgm-old-namespace", "gmp"])
def test_the_metrics_dialect_reaches_the_operator(helm_home: pathlib.Path, dialect: str) -> None:
    args = container(render(helm_home, {"prometheus": {"metricsDialect": dialect}}))["args"]
    assert f"--metrics-dialect={dialect}" in args
    assert not any(a.startswith("--metrics-dialect") for a in container(render(helm_home))["args"])


def test_prometheus_url_is_required(helm_home: pathlib.Path) -> None:
    proc = helm(helm_home, "template", RELEASE, str(CHART), check=False)
    assert proc.returncode != 0
    assert "prometheus.url is required" in proc.stderr


def test_namespaced_rbac_needs_the_namespaces(helm_home: pathlib.Path) -> None:
    proc = render_text(helm_home, {"rbac": {"clusterWide": False}}, check=False)
    assert proc.returncode != 0
    assert "rbac.clusterWide=false needs watchNamespaces" in proc.stderr


# --- the CRD -------------------------------------------------------------------------------------


def test_the_chart_crd_is_synced_from_crds() -> None:
    files = sync_crds.wanted()
    target = CHART / "templates" / "crds"
    assert sorted(p.name for p in target.glob("*.yaml")) == sorted(files)
    for name, text in files.items():
        assert (target / name).read_text(encoding="utf-8") == text, (
            f"templates/crds/{name} drifts from crds/{name}: run hack/sync-crds.py"
        )


def test_the_rendered_crd_is_the_canonical_one(helm_home: pathlib.Path) -> None:
    rendered = only(render(helm_home), "CustomResourceDefinition")
    canonical = yaml.safe_load(CRD_FILE.read_text(encoding="utf-8"))
    metadata = rendered.pop("metadata")
    assert metadata["name"] == canonical.pop("metadata")["name"]
    assert rendered == canonical
    assert metadata["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert metadata["labels"]["app.kubernetes.io/managed-by"] == "Helm"


def test_crds_keep_and_enabled(helm_home: pathlib.Path) -> None:
    crd = only(render(helm_home, {"crds": {"keep": False}}), "CustomResourceDefinition")
    assert "annotations" not in crd["metadata"]
    objects = render(helm_home, {"crds": {"enabled": False}})
    assert not [o for o in objects if o["kind"] == "CustomResourceDefinition"]


def test_sync_escapes_template_braces_and_refuses_odd_metadata() -> None:
    text = (
        "apiVersion: v1\nkind: CustomResourceDefinition\nmetadata:\n  name: x.example\n"
        "spec:\n  description: 'use {{ like this }}'\n"
    )
    out = sync_crds.template("x.yaml", text)
    assert '{{"{{"}} like this }}' in out
    assert out.splitlines()[2] == "{{- if .Values.crds.enabled }}"
    with pytest.raises(sync_crds.SyncError):
        sync_crds.template("x.yaml", text.replace("metadata:\n", "metadata:\n  labels: {}\n"))


# --- the Deployment ------------------------------------------------------------------------------


def test_the_deployment_is_one_recreated_hardened_replica(helm_home: pathlib.Path) -> None:
    objects = render(helm_home)
    deployment = only(objects, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    operator = container(objects)
    assert operator["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert operator["resources"]["requests"] and operator["resources"]["limits"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert operator[probe]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    ports = {p["name"]: p["containerPort"] for p in operator["ports"]}
    assert ports == {"healthz": 8080, "metrics": 8000}
    mounts = {m["name"]: m["mountPath"] for m in operator["volumeMounts"]}
    assert mounts["tmp"] == "/tmp"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["tmp"]
    assert pod["serviceAccountName"] == RELEASE
    service = only(objects, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8000, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_bind_addresses(helm_home: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("GPU_RIGHTSIZER_"):
            monkeypatch.delenv(name)
    values = {"metrics": {"bindAddress": "127.0.0.1"}, "health": {"bindAddress": "::"}}
    params = _run_params(render(helm_home, values))
    assert params["metrics_bind_address"] == "127.0.0.1"
    assert params["liveness"] == "http://[::]:8080/healthz"
    args = container(render(helm_home, {"metrics": {"enabled": False}}))["args"]
    assert not [a for a in args if a.startswith("--metrics-bind-address")]


def _run_params(objects: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The Deployment's arguments, parsed by the real ``gpu-rightsizer run`` command."""
    operator = container(objects)
    context = main.run.make_context("run", list(operator["args"]))
    params: dict[str, Any] = context.params
    return params


def test_the_arguments_parse_with_gpu_rightsizer_run(
    helm_home: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("GPU_RIGHTSIZER_") or name == "KUBECONFIG":
            monkeypatch.delenv(name)
    params = _run_params(render(helm_home))
    assert params["prometheus_url"] == PROMETHEUS_URL
    assert params["namespaces"] == ()
    assert params["metrics_port"] == 8000
    assert params["metrics_bind_address"] == "0.0.0.0"
    assert params["liveness"] == "http://0.0.0.0:8080/healthz"
    assert str(params["catalog_overrides"]) == "/etc/gpu-rightsizer/catalog/overrides.yaml"
    assert params["insecure_skip_tls_verify"] is False

    params = _run_params(render(helm_home, CASES["namespaced"]))
    assert params["namespaces"] == ("ml-serving", "search")

    objects = render(helm_home, CASES["prometheus-auth-and-catalog"])
    params = _run_params(objects)
    operator = container(objects)
    mounts = {m["name"]: m["mountPath"] for m in operator["volumeMounts"]}
    assert str(params["prometheus_token_file"]) == f"{mounts['prometheus-token']}/token"
    assert str(params["prometheus_ca_file"]) == f"{mounts['prometheus-ca']}/bundle.pem"

    params = _run_params(
        render(
            helm_home,
            {
                "metrics": {"enabled": False},
                "prometheus": {
                    "tls": {"insecureSkipVerify": True},
                    "basicAuth": {"username": "grafana", "passwordSecretName": "prom-basic"},
                },
                "operator": {"extraArgs": ["--peering=gpu-rightsizer"]},
            },
        )
    )
    assert params["metrics_port"] == 0
    assert params["insecure_skip_tls_verify"] is True
    assert params["prometheus_username"] == "grafana"
    assert str(params["prometheus_password_file"]).endswith("/prometheus-password/password")
    assert params["peering"] == "gpu-rightsizer"


def test_secret_and_ca_volumes_point_at_the_given_objects(helm_home: pathlib.Path) -> None:
    objects = render(helm_home, CASES["prometheus-auth-and-catalog"])
    volumes = {
        v["name"]: v for v in only(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    }
    assert volumes["prometheus-token"]["secret"]["secretName"] == "prometheus-token"
    assert volumes["prometheus-ca"]["configMap"]["name"] == "trust-bundle"
    objects = render(helm_home, {"prometheus": {"tls": {"ca": {"secretName": "prom-ca"}}}})
    volumes = {
        v["name"]: v for v in only(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    }
    assert volumes["prometheus-ca"]["secret"]["secretName"] == "prom-ca"


def test_the_catalog_configmap_loads_with_the_operators_loader(
    helm_home: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    objects = render(helm_home, CASES["prometheus-auth-and-catalog"])
    data = only(objects, "ConfigMap", f"{RELEASE}-catalog")["data"]["overrides.yaml"]
    path = tmp_path / "overrides.yaml"
    path.write_text(data, encoding="utf-8")
    catalog = catalogs.load_catalog(path)
    overrides = catalogs.load_overrides(path)
    assert overrides.currency == "EUR"
    assert overrides.pue == 1.3
    assert overrides.grid_carbon_intensity_grams_per_kwh == 250
    assert overrides.prices["H100-80GB"].per_gpu_hour == 1.9
    assert overrides.prices["H100-80GB"].date == "2026-11"
    assert catalog is not catalogs.default_catalog()

    defaults = only(render(helm_home), "ConfigMap", f"{RELEASE}-catalog")["data"]["overrides.yaml"]
    path.write_text(defaults, encoding="utf-8")
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    assert catalogs.load_overrides(path) == catalogs.load_overrides(empty)


def test_a_catalog_change_restarts_the_operator(helm_home: pathlib.Path) -> None:
    def checksum(values: dict[str, Any]) -> str:
        deployment = only(render(helm_home, values), "Deployment")
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/catalog"])

    assert checksum({}) != checksum({"catalog": {"currency": "EUR"}})


# --- RBAC ----------------------------------------------------------------------------------------

Rule = tuple[str, str, str]  # (API group, resource, verb)

NAMESPACED_RULES: set[Rule] = {
    ("gpu-rightsizer.dev", "gpuworkloads", "get"),
    ("gpu-rightsizer.dev", "gpuworkloads", "list"),
    ("gpu-rightsizer.dev", "gpuworkloads", "watch"),
    ("gpu-rightsizer.dev", "gpuworkloads/status", "patch"),
    ("", "events", "create"),
    ("", "events", "patch"),
    ("apps", "deployments", "list"),
    ("apps", "statefulsets", "list"),
    ("apps", "replicasets", "list"),
    ("", "pods", "list"),
}
CLUSTER_RULES: set[Rule] = {
    ("", "nodes", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    ("authorization.k8s.io", "selfsubjectaccessreviews", "create"),
}
APPLY_RULES: set[Rule] = {
    ("apps", "deployments", "patch"),
    ("apps", "statefulsets", "patch"),
    ("policy", "poddisruptionbudgets", "list"),
}
ROLLOUT_RULES: set[Rule] = {("argoproj.io", "rollouts", "list")}
ROLLOUT_APPLY_RULES: set[Rule] = {("argoproj.io", "rollouts", "patch")}
KSERVE_RULES: set[Rule] = {("serving.kserve.io", "inferenceservices", "list")}
# kopf lists and watches namespaces only when it is given some (namespaced mode).
NAMESPACE_RULES: set[Rule] = {("", "namespaces", "list"), ("", "namespaces", "watch")}


def rules(role: Mapping[str, Any]) -> set[Rule]:
    found: set[Rule] = set()
    for rule in role["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), rule
                    found.add((group, resource, verb))
    return found


def test_cluster_wide_rbac_is_exactly_what_the_operator_uses(helm_home: pathlib.Path) -> None:
    objects = render(helm_home)
    assert rules(only(objects, "ClusterRole")) == NAMESPACED_RULES | CLUSTER_RULES
    assert not [o for o in objects if o["kind"] in ("Role", "RoleBinding")]
    binding = only(objects, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}
    ]
    objects = render(helm_home, CASES["apply-enabled"])
    assert rules(only(objects, "ClusterRole")) == NAMESPACED_RULES | CLUSTER_RULES | APPLY_RULES


def test_argo_rollouts_add_only_the_rules_of_what_is_enabled(helm_home: pathlib.Path) -> None:
    base = NAMESPACED_RULES | CLUSTER_RULES
    read = render(helm_home, {"targets": {"argoRollouts": True}})
    assert rules(only(read, "ClusterRole")) == base | ROLLOUT_RULES
    both = render(helm_home, CASES["argo-rollouts"])
    assert rules(only(both, "ClusterRole")) == (
        base | APPLY_RULES | ROLLOUT_RULES | ROLLOUT_APPLY_RULES
    )
    namespaced = render(helm_home, _merge(CASES["namespaced"], CASES["argo-rollouts"]))
    for role in [o for o in namespaced if o["kind"] == "Role"]:
        assert rules(role) == NAMESPACED_RULES | APPLY_RULES | ROLLOUT_RULES | ROLLOUT_APPLY_RULES


def test_kserve_adds_only_a_list_of_inferenceservices(helm_home: pathlib.Path) -> None:
    base = NAMESPACED_RULES | CLUSTER_RULES
    read = render(helm_home, {"targets": {"kserve": True}, "apply": {"enabled": True}})
    # Never patched, Apply mode or not: the change is published on status.plan.
    assert rules(only(read, "ClusterRole")) == base | APPLY_RULES | KSERVE_RULES
    assert not rules(only(render(helm_home), "ClusterRole")) & KSERVE_RULES


def test_namespaced_rbac_uses_roles_in_the_watched_namespaces(helm_home: pathlib.Path) -> None:
    for values, extra in (
        (CASES["namespaced"], set()),
        (_merge(CASES["namespaced"], CASES["apply-enabled"]), APPLY_RULES),
    ):
        objects = render(helm_home, values)
        assert rules(only(objects, "ClusterRole")) == CLUSTER_RULES | NAMESPACE_RULES
        roles = [o for o in objects if o["kind"] == "Role"]
        assert sorted(r["metadata"]["namespace"] for r in roles) == ["ml-serving", "search"]
        for role in roles:
            assert rules(role) == NAMESPACED_RULES | extra
        bindings = [o for o in objects if o["kind"] == "RoleBinding"]
        assert sorted(b["metadata"]["namespace"] for b in bindings) == ["ml-serving", "search"]
        for binding in bindings:
            assert binding["roleRef"]["kind"] == "Role"
            assert binding["subjects"][0]["namespace"] == NAMESPACE


def test_rbac_create_false_renders_no_rbac(helm_home: pathlib.Path) -> None:
    kinds = {o["kind"] for o in render(helm_home, {"rbac": {"create": False}})}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


# --- the node agent ------------------------------------------------------------------------------

AGENT = f"{RELEASE}-agent"
AGENT_VALUES: dict[str, Any] = {"agent": {"enabled": True}}


def agent_pod(objects: Sequence[dict[str, Any]]) -> dict[str, Any]:
    pod: dict[str, Any] = only(objects, "DaemonSet", AGENT)["spec"]["template"]["spec"]
    return pod


def agent_container(objects: Sequence[dict[str, Any]]) -> dict[str, Any]:
    (agent,) = agent_pod(objects)["containers"]
    result: dict[str, Any] = agent
    return result


def _agent_params(
    objects: Sequence[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, node: str = "gpu-node-1"
) -> dict[str, Any]:
    """The DaemonSet's command and arguments, parsed by the real ``gpu-rightsizer agent``.

    NODE_NAME is set as the downward API sets it (the test below checks its fieldRef).
    """
    agent = agent_container(objects)
    program, subcommand = agent["command"]
    # The image's console script, installed from pyproject.toml, runs main.cli.
    entry_points = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert entry_points["project"]["scripts"][program] == "gpu_rightsizer.cli.main:main"
    command = main.cli.commands[subcommand]
    monkeypatch.setenv("NODE_NAME", node)
    context = command.make_context(subcommand, list(agent["args"]))
    params: dict[str, Any] = context.params
    return params


def test_no_agent_object_renders_by_default(helm_home: pathlib.Path) -> None:
    for objects in (render(helm_home), render(helm_home, CASES["servicemonitor"])):
        assert not [o for o in objects if o["kind"] == "DaemonSet"]
        names = [o["metadata"]["name"] for o in objects]
        assert not [n for n in names if n.endswith("-agent")], names
        components = {o["metadata"]["labels"]["app.kubernetes.io/component"] for o in objects}
        assert components == {"operator"}


def test_the_agent_daemonset_is_a_hardened_host_pid_pod(helm_home: pathlib.Path) -> None:
    objects = render(helm_home, AGENT_VALUES)
    pod = agent_pod(objects)
    assert pod["hostPID"] is True
    assert "hostNetwork" not in pod and "hostIPC" not in pod
    assert "runtimeClassName" not in pod
    assert pod["serviceAccountName"] == AGENT
    assert pod["automountServiceAccountToken"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    # Only an emptyDir: no hostPath (hostPID already shows the host's processes in /proc).
    assert [sorted(v) for v in pod["volumes"]] == [["emptyDir", "name"]]

    agent = agent_container(objects)
    assert agent["image"] == container(objects)["image"]
    assert agent["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert "privileged" not in agent["securityContext"]
    assert agent["resources"] == {
        "requests": {"cpu": "10m", "memory": "64Mi"},
        "limits": {"memory": "128Mi"},
    }
    env = {e["name"]: e for e in agent["env"]}
    assert env["NODE_NAME"] == {
        "name": "NODE_NAME",
        "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
    }
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"]["value"] == "utility"
    assert agent["ports"] == [{"name": "metrics", "containerPort": 9400, "protocol": "TCP"}]
    for probe in ("livenessProbe", "readinessProbe"):
        assert agent[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert "nvidia.com/gpu" not in str(agent["resources"])  # it reads GPUs, it takes none

    service = only(objects, "Service", AGENT)
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9400, "targetPort": "metrics", "protocol": "TCP"}
    ]
    daemonset = only(objects, "DaemonSet", AGENT)
    assert service["spec"]["selector"] == daemonset["spec"]["selector"]["matchLabels"]


def test_agent_values_reach_the_pod(helm_home: pathlib.Path) -> None:
    objects = render(
        helm_home,
        {
            "agent": {
                "enabled": True,
                "runtimeClassName": "nvidia",
                "priorityClassName": "system-node-critical",
                "podAnnotations": {"team": "ml"},
                # Helm merges maps with the defaults: null removes the default label.
                "nodeSelector": {"nvidia.com/gpu.present": None, "pool": "gpu"},
                "tolerations": [],
            }
        },
    )
    daemonset = only(objects, "DaemonSet", AGENT)
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert "tolerations" not in pod
    assert daemonset["spec"]["template"]["metadata"]["annotations"] == {"team": "ml"}


def test_the_agent_arguments_parse_with_gpu_rightsizer_agent(
    helm_home: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("GPU_RIGHTSIZER_") or name in ("KUBECONFIG", "NODE_NAME"):
            monkeypatch.delenv(name)
    params = _agent_params(render(helm_home, AGENT_VALUES), monkeypatch)
    assert params["node_name"] == "gpu-node-1"
    assert params["interval"] == "10s"
    assert durations.parse(params["interval"]).total_seconds() == 10
    assert params["metrics_port"] == 9400
    assert params["metrics_bind_address"] == "0.0.0.0"
    assert params["proc_root"] == pathlib.Path("/proc")
    assert params["kubeconfig"] is None  # in the cluster: the pod's ServiceAccount
    assert params["fake_nvml"] is None
    assert (params["log_format"], params["log_level"]) == ("json", "INFO")

    values = {
        "agent": {
            "enabled": True,
            "interval": "1m30s",
            "port": 9500,
            "bindAddress": "::",
            "logFormat": "console",
            "logLevel": "DEBUG",
        }
    }
    objects = render(helm_home, values)
    params = _agent_params(objects, monkeypatch)
    assert durations.parse(params["interval"]).total_seconds() == 90
    assert params["metrics_port"] == 9500
    assert params["metrics_bind_address"] == "::"
    assert (params["log_format"], params["log_level"]) == ("console", "DEBUG")
    assert agent_container(objects)["ports"][0]["containerPort"] == 9500
    assert only(objects, "Service", AGENT)["spec"]["ports"][0]["port"] == 9500

    # The node's name comes only from the downward API's NODE_NAME.
    monkeypatch.delenv("NODE_NAME")
    command = main.cli.commands[agent_container(objects)["command"][1]]
    with pytest.raises(click.MissingParameter):
        command.make_context("agent", list(agent_container(objects)["args"]))


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return selector.items() <= labels.items()


def test_operator_and_agent_selectors_never_select_each_other(helm_home: pathlib.Path) -> None:
    objects = render(helm_home, _merge(CASES["agent-enabled"], CASES["servicemonitor"]))
    deployment = only(objects, "Deployment")
    daemonset = only(objects, "DaemonSet", AGENT)
    operator_pod = deployment["spec"]["template"]["metadata"]["labels"]
    agent_pod_labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert agent_pod_labels["app.kubernetes.io/component"] == "agent"
    # The Deployment's selector is immutable: it stays what it always was.
    assert deployment["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "gpu-rightsizer",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": "operator",
    }
    operator_service = only(objects, "Service", f"{RELEASE}-metrics")
    agent_service = only(objects, "Service", AGENT)
    for selector, own, other in (
        (deployment["spec"]["selector"]["matchLabels"], operator_pod, agent_pod_labels),
        (operator_service["spec"]["selector"], operator_pod, agent_pod_labels),
        (daemonset["spec"]["selector"]["matchLabels"], agent_pod_labels, operator_pod),
        (agent_service["spec"]["selector"], agent_pod_labels, operator_pod),
    ):
        assert _selects(selector, own) and not _selects(selector, other)
    operator_monitor = only(objects, "ServiceMonitor", RELEASE)
    agent_monitor = only(objects, "ServiceMonitor", AGENT)
    operator_labels = operator_service["metadata"]["labels"]
    agent_labels = agent_service["metadata"]["labels"]
    for monitor, own, other in (
        (operator_monitor, operator_labels, agent_labels),
        (agent_monitor, agent_labels, operator_labels),
    ):
        selector = monitor["spec"]["selector"]["matchLabels"]
        assert _selects(selector, own) and not _selects(selector, other)


def test_the_agent_may_only_list_pods(helm_home: pathlib.Path) -> None:
    objects = render(helm_home, AGENT_VALUES)
    assert rules(only(objects, "ClusterRole", AGENT)) == {("", "pods", "list")}
    binding = only(objects, "ClusterRoleBinding", AGENT)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": AGENT,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": AGENT, "namespace": NAMESPACE}
    ]
    account = only(objects, "ServiceAccount", AGENT)
    assert account["automountServiceAccountToken"] is False
    # The operator's permissions are untouched by the agent.
    assert rules(only(objects, "ClusterRole", RELEASE)) == NAMESPACED_RULES | CLUSTER_RULES
    assert not [o for o in objects if o["kind"] in ("Role", "RoleBinding")]

    objects = render(helm_home, _merge(AGENT_VALUES, {"rbac": {"create": False}}))
    assert not {o["kind"] for o in objects} & {"ClusterRole", "ClusterRoleBinding"}
    only(objects, "ServiceAccount", AGENT)


def test_the_agent_can_run_as_an_existing_service_account(helm_home: pathlib.Path) -> None:
    values = _merge(AGENT_VALUES, {"agent": {"serviceAccount": {"create": False, "name": "gpu"}}})
    objects = render(helm_home, values)
    assert agent_pod(objects)["serviceAccountName"] == "gpu"
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount"] == [RELEASE]
    assert only(objects, "ClusterRoleBinding", AGENT)["subjects"][0]["name"] == "gpu"
    proc = render_text(
        helm_home,
        _merge(AGENT_VALUES, {"agent": {"serviceAccount": {"create": False}}}),
        check=False,
    )
    assert proc.returncode != 0
    assert "agent.serviceAccount.name is required" in proc.stderr


def test_the_agent_service_monitor_honours_the_agents_labels(helm_home: pathlib.Path) -> None:
    objects = render(helm_home, CASES["agent-enabled"])
    monitor = only(objects, "ServiceMonitor", AGENT)
    service = only(objects, "Service", AGENT)
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "30s"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert not [o for o in render(helm_home, AGENT_VALUES) if o["kind"] == "ServiceMonitor"]

    proc = render_text(helm_home, {"agent": {"serviceMonitor": {"enabled": True}}}, check=False)
    assert proc.returncode != 0
    assert "agent.serviceMonitor.enabled needs agent.enabled" in proc.stderr


# --- monitoring ----------------------------------------------------------------------------------


def test_service_monitor_scrapes_the_metrics_service(helm_home: pathlib.Path) -> None:
    objects = render(helm_home, CASES["servicemonitor"])
    monitor = only(objects, "ServiceMonitor")
    service = only(objects, "Service")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert not [o for o in render(helm_home) if o["kind"] == "ServiceMonitor"]


def test_the_dashboard_configmap_carries_the_sidecar_label(helm_home: pathlib.Path) -> None:
    objects = render(
        helm_home, {"dashboard": {"enabled": True, "annotations": {"grafana_folder": "GPUs"}}}
    )
    configmap = only(objects, "ConfigMap", f"{RELEASE}-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "GPUs"}
    (body,) = configmap["data"].values()
    assert json.loads(body) == json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert not [o for o in render(helm_home) if o["metadata"]["name"].endswith("-dashboard")]


def exported_metrics() -> dict[str, set[str]]:
    """Every series name the operator's registry exposes, with its label names.

    Every instrument is exercised through the public API first, so that labelled families show
    their series.
    """
    meters = instruments.Instruments()
    meters.set_workload(
        "ns",
        "w",
        ready=True,
        savings_monthly=1.0,
        currency="USD",
        gpus_freed=1.0,
        energy_kwh=1.0,
        co2_kg=1.0,
    )
    meters.record_sweep(seconds=1.0, workloads=1, queries=1, query_errors=1, status_patches=1)
    meters.events.labels("Recommended").inc()
    meters.kubernetes_requests.labels(verb="list").inc()
    meters.record_apply("ns", "w", outcome="Applied", realized_monthly=1.0, currency="USD")
    meters.set_activity("ns", "w", engine_activity_p99=0.01, observed_seconds=86400.0)
    found: dict[str, set[str]] = {}
    families = list(meters.registry.collect())
    for family in families:
        assert family.samples, f"{family.name} exported no series"
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}


def promql_names(expr: str) -> tuple[set[str], set[str], dict[str, set[str]]]:
    """(metric names, grouping labels, labels matched per metric) of a PromQL expression."""
    matched: dict[str, set[str]] = {}
    for metric, matchers in _SELECTOR.findall(expr):
        matched.setdefault(metric, set()).update(_MATCHER.findall(_STRING.sub('""', matchers)))
    bare = _STRING.sub('""', expr)
    bare = re.sub(r"\{[^}]*\}", " ", bare)
    bare = re.sub(r"\[[^\]]*\]", " ", bare)
    bare = re.sub(r"\$\{?\w+\}?", " 0 ", bare)  # a dashboard variable stands for a number
    grouping = {
        label.strip() for _, labels in _GROUPING.findall(bare) for label in labels.split(",")
    } - {""}
    bare = _GROUPING.sub(" ", bare)
    metrics = set()
    for match in _IDENT.finditer(bare):
        rest = bare[match.end() :].lstrip()
        name = match.group()
        if rest.startswith("(") or name.lower() in _KEYWORDS:
            continue  # a function or an aggregation, or a keyword
        metrics.add(name)
    return metrics, grouping, matched


def test_promql_names_sees_metrics_not_functions_labels_or_variables() -> None:
    metrics, grouping, matched = promql_names(
        'histogram_quantile(0.95, sum by (le, namespace) (rate(m_bucket{namespace=~"$ns",'
        'x="a{b}"}[$__rate_interval]))) / on (namespace) group_left count(other) > bool $min'
    )
    assert metrics == {"m_bucket", "other"}
    assert grouping == {"le", "namespace"}
    assert matched == {"m_bucket": {"namespace", "x"}}


def _queries(dashboard: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in dashboard["panels"]:
        for panel_or_child in [panel, *panel.get("panels", [])]:
            for target in panel_or_child.get("targets", []):
                yield panel_or_child["title"], target["expr"]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, Mapping):
            query = query.get("query")
        if variable["type"] == "query" and isinstance(query, str):
            label_values = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
            if label_values:
                yield (
                    f"variable {variable['name']}",
                    f"sum by ({label_values[2]}) ({label_values[1]})",
                )
            else:
                yield f"variable {variable['name']}", query


def test_the_dashboard_queries_only_metrics_the_operator_exports() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exported = exported_metrics()
    titles = [p["title"] for p in dashboard["panels"] if p["type"] != "row"]
    assert len(titles) == len(set(titles)) >= 8
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    used: set[str] = set()
    queries = list(_queries(dashboard))
    assert queries
    for title, expr in queries:
        metrics, grouping, matched = promql_names(expr)
        assert metrics, f"{title}: {expr} names no metric"
        for metric in metrics:
            assert metric in exported, f"{title}: {metric} is not exported by the operator"
        labels = set().union(*(exported[m] for m in metrics))
        assert grouping <= labels, f"{title}: {expr} groups by labels its metrics lack"
        for metric, names in matched.items():
            assert names <= exported[metric], f"{title}: {metric} has no label {names}"
        used |= metrics
    # The dashboard shows what the issue asks for: fleet savings, GPUs freed and energy.
    assert {
        "gpu_rightsizer_fleet_projected_savings_monthly",
        "gpu_rightsizer_fleet_gpus_freed",
        "gpu_rightsizer_workload_energy_savings_kwh_monthly",
    } <= used
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


# --- the PrometheusRule ------------------------------------------------------------------------


def _rules(objects: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    rule = only(objects, "PrometheusRule")
    (group,) = rule["spec"]["groups"]
    return {r["alert"]: r for r in group["rules"]}


def test_the_prometheus_rule_is_off_by_default_and_each_alert_can_be_left_out(
    helm_home: pathlib.Path,
) -> None:
    assert not [o for o in render(helm_home) if o["kind"] == "PrometheusRule"]
    both = _rules(render(helm_home, CASES["prometheusrule"]))
    assert sorted(both) == ["GPUWorkloadIdle", "GPUWorkloadSavingsAvailable"]
    no_idle = _merge(CASES["prometheusrule"], {"prometheusRule": {"idle": {"enabled": False}}})
    assert sorted(_rules(render(helm_home, no_idle))) == ["GPUWorkloadSavingsAvailable"]


def test_the_thresholds_reach_the_alerts_and_prometheus_templates_survive(
    helm_home: pathlib.Path,
) -> None:
    values = _merge(
        CASES["prometheusrule"],
        {
            "prometheusRule": {
                "idle": {"activity": 0.01, "days": 2.5, "for": "30m"},
                "savings": {"monthlyThreshold": 250, "severity": "warning"},
            }
        },
    )
    rules = _rules(render(helm_home, values))
    idle = rules["GPUWorkloadIdle"]
    assert "gpu_rightsizer_workload_engine_activity_p99 <= 0.01" in idle["expr"]
    assert "gpu_rightsizer_workload_observed_seconds >= 216000" in idle["expr"]
    assert idle["for"] == "30m"
    assert "{{ $labels.namespace }}/{{ $labels.name }}" in idle["annotations"]["summary"]
    savings = rules["GPUWorkloadSavingsAvailable"]
    assert savings["expr"].strip() == "gpu_rightsizer_workload_projected_savings_monthly >= 250"
    assert savings["labels"] == {"severity": "warning"}
    assert "{{ $labels.currency }}" in savings["annotations"]["summary"]


def test_promtool_accepts_the_rules_and_they_use_only_exported_metrics(
    helm_home: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool not found on PATH: run `make tools` "
            "(hack/install-prometheus.sh installs Debian's prometheus package)",
            pytrace=False,
        )
    rule = only(render(helm_home, CASES["prometheusrule"]), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kps"
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]), encoding="utf-8")
    proc = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 2 rules found" in proc.stdout
    exported = exported_metrics()
    for alert in _rules([rule]).values():
        metrics, grouping, _ = promql_names(alert["expr"])
        assert metrics and metrics <= set(exported), alert["alert"]
        labels = set().union(*(exported[m] for m in metrics))
        assert grouping <= labels, alert["alert"]
