"""Read every GPUWorkload's target, its ReplicaSets, pods and nodes in one batch of list calls.

A sweep lists Deployments, StatefulSets, ReplicaSets, Pods and Nodes — cluster-wide, or once
per watched namespace (Nodes once), and Argo Rollouts when some GPUWorkload targets one — and
answers every target from that snapshot, so the number
of requests does not depend on the number of workloads (only on the cluster's size, through
pagination). Responses are decoded straight from JSON into plain dicts; ReplicaSets and Nodes are
fetched as metadata only, and finished pods are filtered out by the API server.

Ownership is followed through controller ``ownerReferences`` by uid: Deployment (or Rollout) →
ReplicaSet → Pod, StatefulSet → Pod. A Rollout with ``spec.workloadRef`` takes its pod template
from the Deployment it names. The pure part (:class:`Snapshot`, :func:`resolve`) does no I/O.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import kubernetes.client

from gpu_rightsizer import ports
from gpu_rightsizer.kube import clients, errors
from gpu_rightsizer.manifests import kinds, nodes, targets as manifests_targets
from gpu_rightsizer.models import gpus, inventory, workloads

ClusterReadError = errors.ClusterReadError
"""Raised when a list call of a sweep fails."""

DEPLOYMENT = kinds.DEPLOYMENT.kind
STATEFULSET = kinds.STATEFULSET.kind
ROLLOUT = kinds.ROLLOUT.kind
INFERENCESERVICE = kinds.INFERENCESERVICE.kind
REPLICASET = "ReplicaSet"
POD_TEMPLATE_HASH = kinds.DEPLOYMENT.revision_label
PAGE_SIZE = 500
"""Items per list page, as kubectl asks for."""
NARROW_MAX_NAMESPACES = 8
"""A read ``within`` at most this many namespaces lists just those (4 calls each); more, and
one cluster-wide list of each kind is fewer calls."""

# Only labels and owners are needed from ReplicaSets and Nodes: the API server sends
# PartialObjectMetadata (no pod templates, no node status), a fraction of the bytes.
METADATA_ONLY = {"Accept": "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"}
LIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"

Ref = tuple[workloads.WorkloadRef, str, str, str | None]
"""(GPUWorkload, target kind, target name, container or None)."""


# --- the pure part -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What one sweep listed, as plain dicts straight from the API."""

    deployments: Sequence[Mapping[str, Any]] = ()
    statefulsets: Sequence[Mapping[str, Any]] = ()
    replicasets: Sequence[Mapping[str, Any]] = ()
    pods: Sequence[Mapping[str, Any]] = ()
    nodes: Sequence[Mapping[str, Any]] = ()
    rollouts: Sequence[Mapping[str, Any]] = ()
    rollouts_error: str | None = None
    """Why Rollouts could not be listed (their CRD is not installed, or RBAC forbids it)."""
    inferenceservices: Sequence[Mapping[str, Any]] = ()
    inferenceservices_error: str | None = None
    """Why KServe InferenceServices could not be listed."""


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    """The uid of the object's controller (the owner reference with ``controller: true``)."""
    for owner in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if owner.get("controller") and owner.get("uid"):
            return str(owner["uid"])
    return None


def _uid(obj: Mapping[str, Any]) -> str | None:
    uid = (obj.get("metadata") or {}).get("uid")
    return str(uid) if uid else None


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


class Index:
    """A snapshot indexed for lookups by target, owner and node."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.targets: dict[tuple[str, str, str], Mapping[str, Any]] = {}
        for kind, items in (
            (DEPLOYMENT, snapshot.deployments),
            (STATEFULSET, snapshot.statefulsets),
            (ROLLOUT, snapshot.rollouts),
            (INFERENCESERVICE, snapshot.inferenceservices),
        ):
            for item in items:
                namespace, name = _key(item)
                self.targets[(namespace, kind, name)] = item
        self.replicasets: dict[str, list[Mapping[str, Any]]] = collections.defaultdict(list)
        for rs in snapshot.replicasets:
            owner = controller_uid(rs)
            if owner is not None:
                self.replicasets[owner].append(rs)
        self.pods: dict[str, list[Mapping[str, Any]]] = collections.defaultdict(list)
        for pod in snapshot.pods:
            owner = controller_uid(pod)
            if owner is not None:
                self.pods[owner].append(pod)
        self.node_labels: dict[str, Mapping[str, str]] = {
            str((node.get("metadata") or {}).get("name", "")): (
                (node.get("metadata") or {}).get("labels") or {}
            )
            for node in snapshot.nodes
        }
        self.rollouts_error = snapshot.rollouts_error
        self.inferenceservices_error = snapshot.inferenceservices_error
        self.deployments = snapshot.deployments

    def target(self, namespace: str, kind: str, name: str) -> Mapping[str, Any] | None:
        return self.targets.get((namespace, kind, name))

    def predictor_of(self, namespace: str, isvc: str) -> Mapping[str, Any] | None:
        """The Deployment KServe runs an InferenceService's predictor with (Standard mode):
        labelled with its name and the predictor component; the oldest if several."""
        found = [
            d
            for d in self.deployments
            if _key(d)[0] == namespace and kinds.is_predictor_of(d, isvc)
        ]
        found.sort(key=lambda d: str((d.get("metadata") or {}).get("creationTimestamp", "")))
        return found[0] if found else None

    def replicasets_of(self, owner: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        """Every ReplicaSet the Deployment (or Rollout) controls, current and earlier."""
        uid = _uid(owner)
        return list(self.replicasets.get(uid, ())) if uid else []

    def pods_of(self, kind: str, target: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        """The pods the target runs now: through its ReplicaSets, or directly for a StatefulSet."""
        if kind in (DEPLOYMENT, ROLLOUT):
            owners = [_uid(rs) for rs in self.replicasets_of(target)]
        else:
            owners = [_uid(target)]
        return [pod for uid in owners if uid for pod in self.pods.get(uid, ())]

    def node_products(self, pods: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
        """The ``nvidia.com/gpu.product`` labels of the nodes the pods run on, sorted, unique."""
        products: set[str] = set()
        for pod in pods:
            node = (pod.get("spec") or {}).get("nodeName")
            product = self.node_labels.get(str(node), {}).get(manifests_targets.PRODUCT_LABEL)
            if node and product:
                products.add(str(product))
        return tuple(sorted(products))


def pod_template_hashes(
    replicasets: Iterable[Mapping[str, Any]], label: str = POD_TEMPLATE_HASH
) -> frozenset[str]:
    """The ``pod-template-hash`` labels (a Rollout's: ``label``) of the ReplicaSets."""
    return frozenset(
        str(labels[label])
        for rs in replicasets
        if label in (labels := (rs.get("metadata") or {}).get("labels") or {})
    )


def _with_template(
    index: Index, namespace: str, rollout: Mapping[str, Any]
) -> tuple[Mapping[str, Any] | None, str | None]:
    """A Rollout with its pod template: its own, or the one its ``spec.workloadRef`` names."""
    deployment = kinds.workload_ref(rollout)
    if deployment is None:
        return rollout, None
    source = index.target(namespace, DEPLOYMENT, deployment)
    if source is None:
        return None, f"its spec.workloadRef names Deployment {namespace}/{deployment}, not found"
    template = (source.get("spec") or {}).get("template") or {}
    return {**rollout, "spec": {**(rollout.get("spec") or {}), "template": template}}, None


def target_state(
    index: Index,
    ref: workloads.WorkloadRef,
    kind: str,
    name: str,
    container: str | None,
) -> ports.TargetState:
    """What the snapshot says about one workload's target."""
    spec = kinds.of(kind)
    if spec is None:
        return ports.TargetState(
            found=False,
            error=f"spec.targetRef.kind: {kind!r} is not one of {', '.join(kinds.NAMES)}",
        )
    if kind == ROLLOUT and index.rollouts_error is not None:
        return ports.TargetState(found=False, error=index.rollouts_error)
    if kind == INFERENCESERVICE and index.inferenceservices_error is not None:
        return ports.TargetState(found=False, error=index.inferenceservices_error)
    target = index.target(ref.namespace, kind, name)
    if target is None:
        return ports.TargetState(found=False)
    if kind == ROLLOUT:
        target, missing = _with_template(index, ref.namespace, target)
        if target is None:
            return ports.TargetState(found=False, error=missing)
    body = {"apiVersion": spec.api_version, "kind": kind, **target}
    read_from: Mapping[str, Any] = body
    # What owns the pods: the target, or for an InferenceService the Deployment KServe runs
    # its predictor with (named <name>-predictor by KServe until it exists).
    owner: Mapping[str, Any] | None = target
    owner_kind, owner_name = kind, name
    if kind == INFERENCESERVICE:
        owner = index.predictor_of(ref.namespace, name)
        owner_kind = DEPLOYMENT
        owner_name = _key(owner)[1] if owner is not None else f"{name}-{kinds.PREDICTOR}"
        replicas = ((owner or {}).get("spec") or {}).get("replicas")
        read_from = kinds.predictor_view(body, replicas if isinstance(replicas, int) else None)
    owner_spec = kinds.of(owner_kind) or spec
    through = owner is not None and owner_spec.through_replicasets
    owned_sets = index.replicasets_of(owner) if owner is not None and through else []
    hashes = pod_template_hashes(owned_sets, owner_spec.revision_label) if through else frozenset()
    pods = ports.TargetPods(
        workload=ref,
        namespace=ref.namespace,
        kind=owner_kind,
        name=owner_name,
        pod_template_hashes=hashes,
    )
    live = tuple(index.pods_of(owner_kind, owner)) if owner is not None else ()
    replicasets = tuple(owned_sets)
    node_products = index.node_products(live)
    try:
        gpus = manifests_targets.read(read_from, container)
    except manifests_targets.TargetError as exc:
        return ports.TargetState(
            found=True,
            error=kinds.field_names(kind, str(exc)),
            error_reason=exc.reason,
            node_products=node_products,
            pods=pods,
            body=body,
            pod_objects=live,
            replicaset_objects=replicasets,
        )
    return ports.TargetState(
        found=True,
        gpus=gpus,
        node_products=node_products,
        pods=pods,
        body=body,
        pod_objects=live,
        replicaset_objects=replicasets,
    )


def resolve(
    snapshot: Snapshot, refs: Iterable[Ref]
) -> dict[workloads.WorkloadRef, ports.TargetState]:
    """Every ref's target state from one snapshot."""
    index = Index(snapshot)
    return {
        ref: target_state(index, ref, kind, name, container) for ref, kind, name, container in refs
    }


def _drop_managed_fields(item: Any) -> None:
    """Forget an object's ``metadata.managedFields`` (nothing here reads them): a Deployment's
    or a Pod's often outweigh the rest of it, and a sweep holds the whole cluster's objects."""
    meta = item.get("metadata") if isinstance(item, dict) else None
    if isinstance(meta, dict):
        meta.pop("managedFields", None)


# --- the API calls -----------------------------------------------------------------------------

_OPTIONAL = {ROLLOUT: ("Argo Rollouts", "argoRollouts"), INFERENCESERVICE: ("KServe", "kserve")}
"""Kinds listed only while some GPUWorkload targets one: the project, the chart's value."""

Lister = Callable[..., Any]


class KubeClusterReader:
    """``ports.ClusterReader`` over the Kubernetes API.

    ``namespaces`` limits the sweep to the watched namespaces (targets elsewhere are not
    found); None lists cluster-wide. Each sweep makes 5 list requests cluster-wide, or
    ``4 × len(namespaces) + 1``, plus one more per extra page of a list longer than
    ``page_size``. ``last_call_count`` holds the requests of the last sweep.

    A read ``within`` a few namespaces (a prompt sweep of new GPUWorkloads) lists just their
    Deployments, StatefulSets, ReplicaSets and Pods, and the Nodes' metadata (``4 × n + 1``
    requests): its inventory stays the last whole read's (at most one sweep interval old), so
    a new GPUWorkload's first status costs about the same in a cluster of ten thousand
    workloads as in one of ten. Before any whole read, and within more than
    ``NARROW_MAX_NAMESPACES``, it reads the whole cluster.
    """

    def __init__(
        self,
        api_client: Any,
        namespaces: Sequence[str] | None = None,
        *,
        page_size: int = PAGE_SIZE,
    ) -> None:
        apps = kubernetes.client.AppsV1Api(api_client)
        core = kubernetes.client.CoreV1Api(api_client)
        self.namespaces: tuple[str, ...] | None = (
            tuple(dict.fromkeys(namespaces)) if namespaces is not None else None
        )
        self.page_size = page_size
        self.last_call_count = 0
        self._calls = 0
        # kind -> (cluster-wide lister, namespaced lister)
        self._listers: dict[str, tuple[Lister, Lister]] = {
            "deployments": (
                apps.list_deployment_for_all_namespaces,
                apps.list_namespaced_deployment,
            ),
            "statefulsets": (
                apps.list_stateful_set_for_all_namespaces,
                apps.list_namespaced_stateful_set,
            ),
            "replicasets": (
                apps.list_replica_set_for_all_namespaces,
                apps.list_namespaced_replica_set,
            ),
            "pods": (core.list_pod_for_all_namespaces, core.list_namespaced_pod),
        }
        custom = kubernetes.client.CustomObjectsApi(api_client)
        for kind in (kinds.ROLLOUT, kinds.INFERENCESERVICE):
            self._listers[kind.plural] = (
                functools.partial(
                    custom.list_cluster_custom_object, kind.group, kind.version, kind.plural
                ),
                functools.partial(
                    custom.list_namespaced_custom_object,
                    kind.group,
                    kind.version,
                    plural=kind.plural,
                ),
            )
        self._list_nodes: Lister = core.list_node
        policy = kubernetes.client.PolicyV1Api(api_client)
        self._list_budgets: tuple[Lister, Lister] = (
            policy.list_pod_disruption_budget_for_all_namespaces,
            policy.list_namespaced_pod_disruption_budget,
        )
        self._whole: Snapshot | None = None
        """The last whole read's nodes and pods, for the inventory."""

    def targets(
        self, refs: Sequence[Ref], *, within: Collection[str] | None = None
    ) -> Mapping[workloads.WorkloadRef, ports.TargetState]:
        """For each (workload, target kind, target name, container) the target's state.

        Raises ``errors.ClusterReadError`` when a list call fails.
        """
        refs = list(refs)
        if not refs:
            self.last_call_count = 0
            return {}
        narrow = self._narrowed(within)
        rollouts = any(kind == ROLLOUT for _, kind, _, _ in refs)
        isvcs = any(kind == INFERENCESERVICE for _, kind, _, _ in refs)
        if narrow is None:
            snapshot = self.snapshot(rollouts=rollouts, inferenceservices=isvcs)
            # The inventory needs only these; the targets are read again at the next sweep.
            self._whole = Snapshot(pods=snapshot.pods, nodes=snapshot.nodes)
        else:
            snapshot = self.snapshot(narrow, rollouts=rollouts, inferenceservices=isvcs)
        return resolve(snapshot, refs)

    def _narrowed(self, within: Collection[str] | None) -> tuple[str, ...] | None:
        """The namespaces a read ``within`` lists, or None for a whole read."""
        if within is None or self._whole is None:
            return None
        wanted = sorted(set(within))
        if self.namespaces is not None:
            wanted = [n for n in wanted if n in self.namespaces]
        return tuple(wanted) if len(wanted) <= NARROW_MAX_NAMESPACES else None

    def inventory(self, catalog: gpus.Catalog) -> inventory.Inventory | None:
        """The GPU inventory of the nodes and pods of the last whole read."""
        whole = self._whole
        if whole is None:
            return None
        return nodes.build(whole.nodes, whole.pods, catalog, source="the cluster's GPU nodes")

    def disruption_budgets(self) -> list[dict[str, Any]] | None:
        """Every PodDisruptionBudget of the watched namespaces; None when they cannot be read
        (e.g. the chart's ``apply.enabled`` is off, so the operator may not list them)."""
        everywhere, namespaced = self._list_budgets
        try:
            if self.namespaces is None:
                return self._list("poddisruptionbudgets", everywhere)
            items: list[dict[str, Any]] = []
            for namespace in self.namespaces:
                items.extend(self._list("poddisruptionbudgets", namespaced, namespace=namespace))
            return items
        except errors.ClusterReadError:
            return None
        finally:
            self.last_call_count = self._calls

    def snapshot(
        self,
        namespaces: Sequence[str] | None = None,
        *,
        rollouts: bool = False,
        inferenceservices: bool = False,
    ) -> Snapshot:
        """List everything a sweep needs; sets ``last_call_count``. With ``namespaces``, the
        targets, ReplicaSets and Pods of just those, and the Nodes' metadata only (their
        labels name the GPU products the pods run on). ``rollouts``: Argo Rollouts too;
        ``inferenceservices``: KServe InferenceServices too."""
        self._calls = 0
        try:
            listed, rollouts_error = (
                self._optional(kinds.ROLLOUT, namespaces) if rollouts else ([], None)
            )
            isvcs, isvcs_error = (
                self._optional(kinds.INFERENCESERVICE, namespaces)
                if inferenceservices
                else ([], None)
            )
            return Snapshot(
                rollouts=listed,
                rollouts_error=rollouts_error,
                inferenceservices=isvcs,
                inferenceservices_error=isvcs_error,
                deployments=self._list_kind("deployments", namespaces),
                statefulsets=self._list_kind("statefulsets", namespaces),
                replicasets=self._list_kind("replicasets", namespaces, headers=METADATA_ONLY),
                pods=self._list_kind("pods", namespaces, field_selector=LIVE_PODS),
                # Whole Nodes: the inventory needs their allocatable GPU resources.
                nodes=self._list(
                    "nodes", self._list_nodes, headers=None if namespaces is None else METADATA_ONLY
                ),
            )
        finally:
            self.last_call_count = self._calls

    def _optional(
        self, kind: kinds.TargetKind, namespaces: Sequence[str] | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The objects of a kind another project defines (Argo Rollouts, KServe), or why they
        cannot be read: a cluster without it (or an operator not allowed to read them) fails
        the GPUWorkloads that target one, not the sweep."""
        project, value = _OPTIONAL[kind.kind]
        try:
            return self._list_kind(kind.plural, namespaces), None
        except errors.ClusterReadError as exc:
            resource = f"{kind.plural}.{kind.group}"
            if exc.status == 404:
                return [], (
                    f"the {kind.kind} kind ({resource}/{kind.version}) is not served: "
                    f"{project} is not installed"
                )
            if exc.status == 403:
                return [], (
                    f"the operator may not list {resource}: install the chart with "
                    f"targets.{value}=true"
                )
            raise

    def _list_kind(
        self,
        kind: str,
        namespaces: Sequence[str] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        everywhere, namespaced = self._listers[kind]
        namespaces = self.namespaces if namespaces is None else namespaces
        if namespaces is None:
            return self._list(kind, everywhere, headers=headers, field_selector=field_selector)
        items: list[dict[str, Any]] = []
        for namespace in namespaces:
            items.extend(
                self._list(
                    kind,
                    namespaced,
                    namespace=namespace,
                    headers=headers,
                    field_selector=field_selector,
                )
            )
        return items

    def _list(
        self,
        kind: str,
        lister: Lister,
        *,
        namespace: str | None = None,
        headers: Mapping[str, str] | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        """All pages of one list; restarts once if the continue token expires (410 Gone)."""
        where = f" in namespace {namespace}" if namespace is not None else ""
        kwargs: dict[str, Any] = {"limit": self.page_size, "_preload_content": False}
        if namespace is not None:
            kwargs["namespace"] = namespace
        if headers:
            kwargs["_headers"] = dict(headers)
        if field_selector:
            kwargs["field_selector"] = field_selector
        restarted = False
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            self._calls += 1
            try:
                page = clients.read_json(
                    lister(**kwargs, **({"_continue": token} if token else {}))
                )
            except errors.REQUEST_ERRORS as exc:
                if token and errors.status_of(exc) == 410 and not restarted:
                    restarted, items, token = True, [], None
                    continue
                raise errors.ClusterReadError(
                    f"listing {kind}{where}: {errors.describe(exc)}", errors.status_of(exc)
                ) from exc
            except ValueError as exc:
                raise errors.ClusterReadError(f"listing {kind}{where}: not JSON: {exc}") from exc
            for item in page.get("items") or ():
                _drop_managed_fields(item)
                items.append(item)
            token = (page.get("metadata") or {}).get("continue") or None
            if not token:
                return items
