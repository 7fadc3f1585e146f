"""Pure patch builders: what applying a recommendation changes on a Deployment or StatefulSet.

:func:`build` turns a recommendation into the list of fields of the target that change — the
container's GPU resource (``nvidia.com/gpu`` or ``nvidia.com/mig-<profile>``, limits and, where
present, requests), the ``nvidia.com/gpu.product`` pin (node selector, or the user's required
node affinity with its other terms kept), the declared variant's image/args/env, the
tensor-parallel argument when GPUs per replica change, the engine settings the recommendation
states, and the replica count — each with its value before and after.

From those fields come everything Apply mode needs: the rollback record
(:meth:`Patch.previous`), one JSON patch that changes exactly those fields and nothing else,
guarded by ``test`` operations so it never overwrites a change made since it was read
(:func:`json_patch`), a ``kubectl diff``-like view (:func:`diff`), and a strategic-merge patch
ready to commit for GitOps-owned targets.

Paths are JSON pointers (RFC 6901) into the target, except that containers and env vars are
addressed by name: ``/spec/template/spec/containers/name=server/resources/limits/nvidia.com~1gpu``.
Values are recorded as JSON.

Must never do I/O: no API calls, no YAML library (:mod:`.yamltext` writes YAML).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from gpu_rightsizer.apply import yamltext
from gpu_rightsizer.manifests import kinds, targets
from gpu_rightsizer.models import crd, engines, inventory

FIELD_MANAGER = "gpu-rightsizer"
KEYED_LISTS = frozenset({"containers", "env"})
"""Lists whose items are addressed by ``name`` (map-lists under server-side apply)."""
POD = ("spec", "template", "spec")

Segment = str | tuple[str, str]
"""A key, or ("name", value) selecting a list item by name."""
Path = tuple[Segment, ...]


class PlanError(ValueError):
    """The recommendation cannot be expressed as a patch of this target; says which field."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Change:
    """One field: its value before and after (``None`` with ``*_present=False``: absent)."""

    path: str
    before: Any
    after: Any
    before_present: bool
    after_present: bool


def _record(path: str, present: bool, value: Any) -> crd.RecordedField:
    if not present:
        return crd.RecordedField(path=path, value=None, present=False)
    return crd.RecordedField(path=path, value=json.dumps(value, sort_keys=True), present=True)


@dataclasses.dataclass(frozen=True)
class Patch:
    kind: str
    namespace: str
    name: str
    container: str
    changes: tuple[Change, ...]

    def previous(self) -> tuple[crd.RecordedField, ...]:
        """The rollback record: every changed field as it is now."""
        return tuple(_record(c.path, c.before_present, c.before) for c in self.changes)

    def desired(self) -> tuple[crd.RecordedField, ...]:
        """The same fields as the patch sets them."""
        return tuple(_record(c.path, c.after_present, c.after) for c in self.changes)


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where the new pods must land: the ``nvidia.com/gpu.product`` value (None: no pin needed)
    and the MIG strategy of the nodes that offer the recommended slice."""

    product: str | None
    mig_strategy: str


# --- paths ---------------------------------------------------------------------------------------


def _escape(text: str) -> str:
    return text.replace("~", "~0").replace("/", "~1")


def _unescape(text: str) -> str:
    return text.replace("~1", "/").replace("~0", "~")


def format_path(path: Path) -> str:
    parts = []
    for seg in path:
        parts.append(f"name={_escape(seg[1])}" if isinstance(seg, tuple) else _escape(seg))
    return "/" + "/".join(parts)


def parse_path(text: str) -> Path:
    if not text.startswith("/"):
        raise ValueError(f"not a JSON pointer: {text!r}")
    out: list[Segment] = []
    for raw in text[1:].split("/"):
        if out and out[-1] in KEYED_LISTS and raw.startswith("name="):
            out.append(("name", _unescape(raw[len("name=") :])))
        else:
            out.append(_unescape(raw))
    return tuple(out)


def _get(obj: Any, path: Path) -> tuple[bool, Any]:
    node = obj
    for seg in path:
        if isinstance(seg, tuple):
            if not isinstance(node, list):
                return False, None
            found = [i for i in node if isinstance(i, Mapping) and i.get("name") == seg[1]]
            if not found:
                return False, None
            node = found[0]
        else:
            if not isinstance(node, Mapping) or seg not in node:
                return False, None
            node = node[seg]
    return True, node


def _set(obj: dict[str, Any], path: Path, value: Any) -> None:
    node: Any = obj
    for i, seg in enumerate(path[:-1]):
        nxt = path[i + 1]
        if isinstance(seg, tuple):
            items = [x for x in node if x.get("name") == seg[1]]
            if items:
                node = items[0]
            else:
                node.append({"name": seg[1]})
                node = node[-1]
            continue
        if not isinstance(node.get(seg), list | dict):
            node[seg] = [] if isinstance(nxt, tuple) else {}
        node = node[seg]
    last = path[-1]
    assert not isinstance(last, tuple)
    node[last] = copy.deepcopy(value)


def _remove(obj: dict[str, Any], path: Path, *, prune: bool = True) -> None:
    """Remove the field, then (``prune``) any map or named list item it leaves empty."""
    trail: list[tuple[Any, Segment]] = []
    node: Any = obj
    for seg in path[:-1]:
        trail.append((node, seg))
        present, node = _get(node, (seg,))
        if not present:
            return
    last = path[-1]
    assert not isinstance(last, tuple)
    if isinstance(node, dict):
        node.pop(last, None)
    for parent, seg in reversed(trail if prune else ()):
        present, child = _get(parent, (seg,))
        empty = child in ({}, []) or (
            isinstance(seg, tuple) and isinstance(child, dict) and set(child) == {"name"}
        )
        if not present or not empty:
            break
        if isinstance(seg, tuple):
            parent.remove(child)
        else:
            parent.pop(seg)


def _norm(value: Any) -> Any:
    """Quantities compare by number: ``1`` and ``"1"`` are the same GPU count."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.isdigit():
        return str(int(value))
    return value


def _same(a: tuple[bool, Any], b: tuple[bool, Any]) -> bool:
    return a[0] == b[0] and (not a[0] or _norm(a[1]) == _norm(b[1]))


# --- building ------------------------------------------------------------------------------------


def _pod_path(target: Mapping[str, Any]) -> Path:
    """Where the target keeps its pod spec: ``spec.template.spec``, or an InferenceService's
    ``spec.predictor``."""
    if target.get("kind") == kinds.INFERENCESERVICE.kind:
        return ("spec", kinds.PREDICTOR)
    return POD


def _pod(target: Mapping[str, Any]) -> Mapping[str, Any]:
    found = _get(target, _pod_path(target))[1]
    return found if isinstance(found, Mapping) else {}


def _container(target: Mapping[str, Any], container: str) -> tuple[Mapping[str, Any], Path, str]:
    """The container (an InferenceService's model, for :data:`kinds.MODEL_CONTAINER`), its
    path and its field name in messages."""
    pod_path = _pod_path(target)
    pod = _pod(target)
    field = ".".join(str(s) for s in pod_path)
    model = pod.get("model")
    if pod_path != POD and container == kinds.MODEL_CONTAINER and isinstance(model, Mapping):
        return model, (*pod_path, "model"), f"{field}.model"
    boxes = [c for c in pod.get("containers") or [] if c.get("name") == container]
    if not boxes:
        names = [str(c.get("name")) for c in pod.get("containers") or []]
        if isinstance(model, Mapping) and pod_path != POD:
            names.insert(0, kinds.MODEL_CONTAINER)
        raise PlanError(
            "ContainerNotFound",
            f"{field}.containers: no container named {container!r} ({', '.join(names) or 'none'})",
        )
    return (
        boxes[0],
        (*pod_path, "containers", ("name", container)),
        f"{field}.containers[{container}]",
    )


def _words(container: Mapping[str, Any], key: str) -> list[str]:
    return [str(w) for w in container.get(key) or []]


def _set_flag(args: list[str], names: Sequence[str], value: str) -> tuple[list[str], bool]:
    """``args`` with every ``--flag N`` / ``--flag=N`` of ``names`` set to ``value``."""
    out = list(args)
    found = False
    for i, word in enumerate(out):
        for name in names:
            if word == name and i + 1 < len(out):
                out[i + 1] = value
                found = True
            elif word.startswith(name + "="):
                out[i] = f"{name}={value}"
                found = True
    return out, found


def _has_flag(words: Sequence[str], names: Sequence[str]) -> bool:
    return any(w == n or w.startswith(n + "=") for w in words for n in names)


def _number(value: float) -> str:
    return f"{value:g}"


def build(
    target: Mapping[str, Any],
    container: str,
    recommendation: crd.Allocation,
    *,
    current: crd.Allocation,
    variant: crd.Variant | None,
    engine_settings: crd.EngineSettings | None,
    placement: Placement,
    tensor_parallel_flag: str | None = None,
) -> Patch:
    """The fields of ``target`` that applying ``recommendation`` changes (see the module doc).

    The engine's flags (tensor parallelism, the engine settings) are those of the engine the
    settings name, else of the engine the container's command runs, else vLLM's;
    ``tensor_parallel_flag`` (spec.apply.tensorParallelFlag) overrides the engine's.
    """
    meta = target.get("metadata") or {}
    kind = str(target.get("kind") or "Deployment")
    pod = _pod(target)
    pod_path = _pod_path(target)
    box, cpath, field = _container(target, container)
    desired: dict[Path, tuple[bool, Any]] = {}

    # 1. the GPU resource
    if recommendation.mig_profile and placement.mig_strategy != inventory.MigStrategy.SINGLE:
        key, amount = f"{targets.MIG_RESOURCE_PREFIX}{recommendation.mig_profile}", "1"
    else:
        key = targets.GPU_RESOURCE
        amount = "1" if recommendation.mig_profile else str(recommendation.gpus_per_replica)
    resources = box.get("resources") or {}
    for section in ("limits", "requests"):
        held = resources.get(section) or {}
        if section == "requests" and not any(targets.is_gpu_resource(k) for k in held):
            continue
        for name in held:
            if targets.is_gpu_resource(name) and name != key:
                desired[(*cpath, "resources", section, name)] = (False, None)
        desired[(*cpath, "resources", section, key)] = (True, amount)

    # 2. the GPU model pin
    if placement.product is not None:
        selector = pod.get("nodeSelector") or {}
        affinity_path: Path = (
            *pod_path,
            "affinity",
            "nodeAffinity",
            "requiredDuringSchedulingIgnoredDuringExecution",
            "nodeSelectorTerms",
        )
        present, terms = _get(target, affinity_path)
        pinned_by_affinity = present and any(
            e.get("key") == targets.PRODUCT_LABEL
            for t in terms or []
            for e in t.get("matchExpressions") or []
        )
        if targets.PRODUCT_LABEL in selector or not pinned_by_affinity:
            desired[(*pod_path, "nodeSelector", targets.PRODUCT_LABEL)] = (
                True,
                placement.product,
            )
        else:
            new_terms = copy.deepcopy(terms)
            for t in new_terms:
                for e in t.get("matchExpressions") or []:
                    if e.get("key") == targets.PRODUCT_LABEL and e.get("operator") == "In":
                        e["values"] = [placement.product]
            desired[affinity_path] = (True, new_terms)

    # 3. the variant
    args = _words(box, "args")
    command = _words(box, "command")
    patch = variant.container_patch if variant is not None else None
    if patch is not None:
        if patch.image is not None:
            desired[(*cpath, "image")] = (True, patch.image)
        if patch.storage_uri is not None:
            if cpath[-1] != "model":
                raise PlanError(
                    "StorageUriNotKServe",
                    f"{field}: the variant's containerPatch.storageUri is a KServe "
                    "InferenceService model's, and this container is not one",
                )
            desired[(*cpath, "storageUri")] = (True, patch.storage_uri)
        if patch.args is not None:
            args = list(patch.args)
        for env in patch.env or ():
            current_env = [e for e in box.get("env") or [] if e.get("name") == env.name]
            if current_env and "valueFrom" in current_env[0]:
                raise PlanError(
                    "EnvValueFrom",
                    f"{field}.env[{env.name}]: set from valueFrom; the variant's value would "
                    "replace a reference gpu-rightsizer does not own",
                )
            desired[(*cpath, "env", ("name", env.name), "value")] = (True, env.value)

    # 4. tensor parallelism
    words = command + args
    settings = engine_settings or crd.EngineSettings()
    engine = engines.of(settings.engine) or engines.from_command(words) or engines.VLLM
    triton = engines.is_triton(words)
    if recommendation.gpus_per_replica != current.gpus_per_replica:
        flags = list(engine.tensor_parallel_flags)
        if tensor_parallel_flag is not None:
            flags = [tensor_parallel_flag] + (flags if tensor_parallel_flag in flags else [])
        count = str(recommendation.gpus_per_replica)
        if triton and tensor_parallel_flag is None:
            raise PlanError(
                "TensorParallelInModelRepository",
                f"{field}: runs tritonserver, whose TensorRT-LLM engine is built for "
                f"{current.gpus_per_replica} GPU(s) in the model repository; rebuild it for "
                f"{count} and apply by hand",
            )
        args, found = _set_flag(args, flags, count)
        if not found:
            if _has_flag(command, flags):
                raise PlanError(
                    "FlagInCommand",
                    f"{field}.command: sets {flags[0]}; gpu-rightsizer edits args only: move "
                    "it to args",
                )
            if current.gpus_per_replica != 1:
                raise PlanError(
                    "TensorParallelUnknown",
                    f"{field}.args: no {flags[0]}, so gpu-rightsizer cannot tell the server to "
                    f"shard over {count} GPU(s) instead of {current.gpus_per_replica}: set "
                    "spec.apply.tensorParallelFlag",
                )
            args += [flags[0], count]

    # 5. the engine settings the recommendation states (Triton keeps them in the model
    # repository's config.pbtxt, not in arguments: stated on the status, never written)
    for flag, setting in (
        (
            engine.memory_flag,
            _number(settings.gpu_memory_utilization)
            if settings.gpu_memory_utilization is not None
            else None,
        ),
        (
            engine.max_length_flag,
            str(settings.max_model_len) if settings.max_model_len is not None else None,
        ),
    ):
        if setting is None or triton:
            continue
        args, found = _set_flag(args, [flag], setting)
        if not found:
            if _has_flag(command, [flag]):
                raise PlanError(
                    "FlagInCommand",
                    f"{field}.command: sets {flag}; gpu-rightsizer edits args only: move it "
                    "to args",
                )
            args += [flag, setting]
    if args != _words(box, "args"):
        desired[(*cpath, "args")] = (True, args)

    # 6. replicas
    if recommendation.replicas != current.replicas:
        if pod_path != POD:
            raise PlanError(
                "ReplicasByKServe",
                "spec.predictor: KServe scales an InferenceService between minReplicas and "
                "maxReplicas; gpu-rightsizer does not change them",
            )
        desired[("spec", "replicas")] = (True, recommendation.replicas)

    changes = []
    for path, after in desired.items():
        before = _get(target, path)
        if _same(before, after) or (path[-1] == "value" and after == (True, "") and not before[0]):
            continue
        changes.append(
            Change(
                path=format_path(path),
                before=copy.deepcopy(before[1]),
                after=copy.deepcopy(after[1]),
                before_present=before[0],
                after_present=after[0],
            )
        )
    return Patch(
        kind=kind,
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        container=container,
        changes=tuple(changes),
    )


# --- using the fields ----------------------------------------------------------------------------


def _value(f: crd.RecordedField) -> Any:
    return json.loads(f.value) if f.value is not None else None


def apply_to(obj: Mapping[str, Any], fields: Sequence[crd.RecordedField]) -> dict[str, Any]:
    """A copy of ``obj`` with each field set (present) or removed: what the patch does."""
    out: dict[str, Any] = copy.deepcopy(dict(obj))
    for f in fields:
        path = parse_path(f.path)
        if f.present:
            _set(out, path, _value(f))
        else:
            _remove(out, path)
    return out


def matches(obj: Mapping[str, Any], fields: Sequence[crd.RecordedField]) -> bool:
    """Every field has that value (or is absent) in ``obj``."""
    for f in fields:
        path = parse_path(f.path)
        found = _get(obj, path)
        wanted = (f.present, _value(f))
        if _same(found, wanted):
            continue
        # The API server drops an env var's empty value: absent and "" are the same.
        if path[-1] == "value" and {found, wanted} <= {(False, None), (True, "")}:
            continue
        return False
    return True


def _pointer(obj: Any, path: Path) -> str:
    """The RFC 6901 pointer of an existing ``path`` in ``obj`` (named items by their index)."""
    parts: list[str] = []
    node = obj
    for seg in path:
        if isinstance(seg, tuple):
            index = next(i for i, x in enumerate(node) if x.get("name") == seg[1])
            parts.append(str(index))
            node = node[index]
        else:
            parts.append(_escape(seg))
            node = node[seg]
    return "/" + "/".join(parts)


def _node(rest: Path, value: Any) -> Any:
    """The JSON that makes ``rest`` exist, holding ``value`` at its end."""
    if not rest:
        return copy.deepcopy(value)
    head = rest[0]
    if isinstance(head, tuple):
        return [{"name": head[1], **_node(rest[1:], value)}]
    return {head: _node(rest[1:], value)}


def _add(work: Any, path: Path, value: Any) -> dict[str, Any]:
    """An ``add`` op for ``path``, creating the missing part of it in one value."""
    for i, seg in enumerate(path):
        present, _ = _get(work, path[: i + 1])
        if present:
            continue
        if isinstance(seg, tuple):
            item = {"name": seg[1], **_node(path[i + 1 :], value)}
            return {"op": "add", "path": _pointer(work, path[:i]) + "/-", "value": item}
        where = _pointer(work, path[:i]) if i else ""
        return {
            "op": "add",
            "path": f"{where}/{_escape(seg)}",
            "value": _node(path[i + 1 :], value),
        }
    return {"op": "replace", "path": _pointer(work, path), "value": copy.deepcopy(value)}


def json_patch(
    obj: Mapping[str, Any],
    expected: Sequence[crd.RecordedField],
    wanted: Sequence[crd.RecordedField],
) -> list[dict[str, Any]]:
    """One RFC 6902 JSON patch from ``expected`` to ``wanted``, guarded by ``test`` operations.

    The API server applies it atomically (one new generation, one rollout) or not at all: when
    a field no longer has its ``expected`` value (someone changed it since it was read), the
    ``test`` fails and nothing changes. Named list items are addressed by their index in
    ``obj`` (tested too). Server-side apply cannot do this change: a field another manager
    co-owns at the same value (the old GPU resource, set by whoever created the target) is not
    removed when an apply leaves it out.
    """
    work: dict[str, Any] = copy.deepcopy(dict(obj))
    ops: list[dict[str, Any]] = []
    guarded: set[str] = set()
    for f in [*expected, *wanted]:
        path = parse_path(f.path)
        for i, seg in enumerate(path):
            if not isinstance(seg, tuple):
                continue
            present, _ = _get(work, path[: i + 1])
            pointer = _pointer(work, path[: i + 1]) if present else None
            if pointer is not None and pointer not in guarded:
                guarded.add(pointer)
                ops.append({"op": "test", "path": f"{pointer}/name", "value": seg[1]})
    for f in expected:
        if f.present:
            path = parse_path(f.path)
            ops.append({"op": "test", "path": _pointer(work, path), "value": _value(f)})
    for f in wanted:
        path = parse_path(f.path)
        present, _ = _get(work, path)
        if f.present:
            ops.append(_add(work, path, _value(f)))
            _set(work, path, _value(f))
        elif present:
            ops.append({"op": "remove", "path": _pointer(work, path)})
            _remove(work, path, prune=False)
    return ops


def _shown(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {"spec": copy.deepcopy(obj.get("spec") or {})}


def diff(target: Mapping[str, Any], patch: Patch) -> str:
    """A unified diff of the target's spec before and after, as ``kubectl diff`` shows it."""
    after = apply_to(target, patch.desired())
    where = f"{patch.kind} {patch.namespace}/{patch.name}"
    return "\n".join(
        difflib.unified_diff(
            yamltext.dump(_shown(target)).splitlines(),
            yamltext.dump(_shown(after)).splitlines(),
            fromfile=f"{where} (live)",
            tofile=f"{where} (after gpu-rightsizer)",
            lineterm="",
        )
    )


def strategic_merge_patch(patch: Patch) -> dict[str, Any]:
    """The change as a strategic-merge patch: set fields, removed map keys as null (for a
    custom resource, a Rollout or an InferenceService, read as a JSON merge patch)."""
    kind = kinds.of(patch.kind)
    body: dict[str, Any] = {
        "apiVersion": kind.api_version if kind is not None else kinds.DEPLOYMENT.api_version,
        "kind": patch.kind,
        "metadata": {"name": patch.name, "namespace": patch.namespace},
    }
    for c in patch.changes:
        _set(body, parse_path(c.path), c.after if c.after_present else None)
    return body


def strategic_merge_patch_yaml(patch: Patch, recommendation_id: str | None = None) -> str:
    """The strategic-merge patch in YAML, ready to commit (kustomize ``patches``, or
    ``kubectl patch --type strategic --patch-file``)."""
    about = f" recommendation {recommendation_id}" if recommendation_id else ""
    header = (
        f"# gpu-rightsizer{about} for {patch.kind} {patch.namespace}/{patch.name}: a "
        "strategic-merge patch (kustomize patches, kubectl patch --type strategic)\n"
    )
    return header + yamltext.dump(strategic_merge_patch(patch))


def plan(target: Mapping[str, Any], patch: Patch, recommendation_id: str) -> crd.Plan:
    return crd.Plan(
        recommendation_id=recommendation_id,
        target=f"{patch.kind} {patch.namespace}/{patch.name}",
        changes=tuple(
            crd.PlanChange(
                path=c.path,
                before=json.dumps(c.before, sort_keys=True) if c.before_present else None,
                after=json.dumps(c.after, sort_keys=True) if c.after_present else None,
            )
            for c in patch.changes
        ),
        diff=diff(target, patch),
        patch=strategic_merge_patch_yaml(patch, recommendation_id),
    )
