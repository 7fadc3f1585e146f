"""Build the GPUWorkload CustomResourceDefinition from the pydantic models in ``models.crd``.

The models are the single source of the resource's schema. pydantic emits JSON Schema (draft
2020-12) with ``$defs``/``$ref``, ``anyOf: [X, {type: null}]`` for optional fields, titles and
``default: null``; the Kubernetes API server wants a *structural* OpenAPI v3 schema: every node
typed, no references, no ``anyOf`` carrying types or defaults, exclusive bounds as booleans. This
module does that rewrite and wraps the result in an ``apiextensions.k8s.io/v1`` CRD with printer
columns and the status subresource.

Pure: it does no I/O. ``hack/gen-crds.py`` writes the result to
``crds/gpuworkloads.gpu-rightsizer.dev.yaml`` and a unit test fails when the file drifts. A
development tool: it runs from the source tree and is left out of the wheel and the image (the
CRD ships as that YAML file, in the chart), so nothing the operator runs may import it.

The rewriter is deliberately strict: a JSON Schema construct it does not know how to express
structurally (a union of two real types, a tuple, a recursive model) raises ``ValueError`` naming
the path, rather than producing a CRD that the API server would reject.
"""

from __future__ import annotations

import copy
import typing

import pydantic

from gpu_rightsizer.models import crd

Schema = dict[str, typing.Any]

CATEGORIES = ("gpu-rightsizer",)
CRD_NAME = f"{crd.PLURAL}.{crd.GROUP}"

PRINTER_COLUMNS: tuple[dict[str, str], ...] = (
    {
        "name": "TARGET",
        "type": "string",
        "description": "the Deployment or StatefulSet being right-sized",
        "jsonPath": ".spec.targetRef.name",
    },
    {
        "name": "MODE",
        "type": "string",
        "description": "Off, Recommend or Apply",
        "jsonPath": ".spec.mode",
    },
    {
        "name": "CURRENT",
        "type": "string",
        "description": "GPUs per replica the target runs on now",
        "jsonPath": ".status.summary.current",
    },
    {
        "name": "RECOMMENDED",
        "type": "string",
        "description": "the cheapest allocation that fits with headroom",
        "jsonPath": ".status.summary.recommended",
    },
    {
        "name": "SAVINGS/MO",
        "type": "string",
        "description": "projected money saved per month, all replicas",
        "jsonPath": ".status.summary.monthlySavings",
    },
    {
        "name": "READY",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    },
    {
        "name": "AGE",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
    },
)

# JSON Schema keywords copied unchanged: the structural subset of OpenAPI v3 that pydantic emits.
_KEPT = frozenset(
    {
        "type",
        "format",
        "description",
        "enum",
        "minimum",
        "maximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "pattern",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "nullable",
    }
)

# Key order inside every schema node of the output, so the YAML reads the same way everywhere and
# regenerating is byte-stable. Keys not listed (none today) sort after these, alphabetically.
_KEY_ORDER = (
    "description",
    "type",
    "format",
    "enum",
    "default",
    "nullable",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "example",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "x-kubernetes-validations",
)
_RANK = {key: rank for rank, key in enumerate(_KEY_ORDER)}

_NULL = {"type": "null"}
_MISSING = object()


def build_crd() -> dict[str, typing.Any]:
    """The complete GPUWorkload CustomResourceDefinition as a JSON-ready dict."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": crd.GROUP,
            "names": {
                "kind": crd.KIND,
                "listKind": f"{crd.KIND}List",
                "plural": crd.PLURAL,
                "singular": crd.SINGULAR,
                "shortNames": list(crd.SHORT_NAMES),
                "categories": list(CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": crd.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [dict(c) for c in PRINTER_COLUMNS],
                    "schema": {"openAPIV3Schema": resource_schema()},
                }
            ],
        },
    }


def resource_schema() -> Schema:
    """openAPIV3Schema of the whole object: apiVersion, kind, metadata, spec (required), status."""
    return _ordered(
        {
            "description": (
                "A Deployment or StatefulSet on GPUs to right-size: its measured use, the "
                "cheapest allocation that fits and the savings are in status."
            ),
            "type": "object",
            "required": ["spec"],
            "properties": {
                "apiVersion": {
                    "description": "versioned schema of this representation of an object",
                    "type": "string",
                },
                "kind": {
                    "description": "REST resource this object represents",
                    "type": "string",
                },
                "metadata": {"type": "object"},
                "spec": structural_schema(crd.GPUWorkloadSpec),
                "status": structural_schema(crd.GPUWorkloadStatus),
            },
        }
    )


def structural_schema(model: type[pydantic.BaseModel]) -> Schema:
    """A model's validation JSON Schema rewritten as a structural OpenAPI v3 schema."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    return _rewrite(raw, defs, path=model.__name__, trail=())


def _rewrite(node: Schema, defs: Schema, path: str, trail: tuple[str, ...]) -> Schema:
    """Rewrite one JSON Schema node (and everything under it) into its structural form."""
    rest = dict(node)
    rest.pop("$defs", None)
    out: Schema = {}

    ref = rest.pop("$ref", None)
    if ref is not None:
        out.update(_resolve(ref, defs, path, trail))

    all_of = rest.pop("allOf", None)
    if all_of is not None:
        if len(all_of) != 1:
            raise ValueError(f"{path}: allOf with {len(all_of)} members has no structural form")
        out.update(_rewrite(all_of[0], defs, path, trail))

    null_allowed = False
    for junctor in ("anyOf", "oneOf"):
        branches = rest.pop(junctor, None)
        if branches is None:
            continue
        real = [b for b in branches if b != _NULL]
        null_allowed = len(real) < len(branches)
        if len(real) == 1:
            out.update(_rewrite(real[0], defs, path, trail))
        elif sorted(b.get("type", "") for b in real) == ["integer", "string"]:
            out["x-kubernetes-int-or-string"] = True
        else:
            raise ValueError(f"{path}: a union of {len(real)} schemas has no structural form")

    default = rest.pop("default", _MISSING)
    if default is not None and default is not _MISSING:
        out["default"] = _without_none(default)
    if null_allowed and default is not None:
        # Optional fields whose default is None are simply not required (the API server prunes
        # nulls). Only a field that must be present yet may be null needs `nullable`.
        out["nullable"] = True

    for key, value in rest.items():
        here = f"{path}.{key}"
        if key == "title":
            continue
        if key == "examples":
            if value:
                out["example"] = copy.deepcopy(value[0])
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            _exclusive_bound(out, rest, key, value, path)
        elif key == "properties":
            out["properties"] = {
                name: _rewrite(value[name], defs, f"{path}.{name}", trail) for name in sorted(value)
            }
        elif key == "required":
            if value:
                out["required"] = sorted(value)
        elif key == "items":
            if not isinstance(value, dict):
                raise ValueError(f"{here}: tuple-style items have no structural form")
            out["items"] = _rewrite(value, defs, f"{path}[]", trail)
        elif key == "prefixItems":
            raise ValueError(
                f"{here}: fixed-length tuples have no structural form; use tuple[X, ...]"
            )
        elif key == "additionalProperties":
            _additional_properties(out, value, defs, path, trail)
        elif key == "uniqueItems":
            if value:
                out.setdefault("x-kubernetes-list-type", "set")
        elif key == "x-kubernetes-validations":
            out[key] = [_ordered_rule(rule) for rule in value]
        elif key in _KEPT or key.startswith("x-kubernetes-"):
            out[key] = copy.deepcopy(value)
        else:
            raise ValueError(f"{here}: JSON Schema keyword {key!r} is not supported in a CRD")

    _infer_type(out, path)
    if "properties" in out and isinstance(out.get("additionalProperties"), dict):
        raise ValueError(f"{path}: a CRD object cannot have both properties and a value schema")
    if out.get("x-kubernetes-list-type") == "set" and out.get("items", {}).get("type") in (
        "object",
        "array",
    ):
        raise ValueError(f"{path}: x-kubernetes-list-type set needs scalar items")
    return _ordered(out)


def _resolve(ref: str, defs: Schema, path: str, trail: tuple[str, ...]) -> Schema:
    prefix = "#/$defs/"
    if not ref.startswith(prefix):
        raise ValueError(f"{path}: only local $defs references are supported, not {ref!r}")
    name = ref[len(prefix) :]
    if name in trail:
        raise ValueError(f"{path}: {name} refers to itself; recursive types have no CRD schema")
    if name not in defs:
        raise ValueError(f"{path}: $ref {ref!r} names no definition")
    target: Schema = defs[name]
    return _rewrite(target, defs, path, (*trail, name))


def _exclusive_bound(out: Schema, rest: Schema, key: str, value: typing.Any, path: str) -> None:
    """Draft 2020 numeric exclusive bounds become OpenAPI v3's ``minimum`` + boolean flag."""
    if isinstance(value, bool):
        out[key] = value
        return
    inclusive = "minimum" if key == "exclusiveMinimum" else "maximum"
    if inclusive in rest:
        raise ValueError(f"{path}: both {inclusive} and {key} set; keep one")
    out[inclusive] = value
    out[key] = True


def _additional_properties(
    out: Schema, value: typing.Any, defs: Schema, path: str, trail: tuple[str, ...]
) -> None:
    """``dict[str, X]`` keeps its value schema; ``extra="forbid"``'s ``false`` is dropped.

    The API server prunes unknown fields of a structural schema, which is what ``false`` asks for;
    ``true`` or an empty schema (``dict[str, Any]``) means "keep whatever is there".
    """
    if value is False:
        return
    if value is True or value == {}:
        out["x-kubernetes-preserve-unknown-fields"] = True
        return
    if not isinstance(value, dict):
        raise ValueError(f"{path}.additionalProperties: unexpected value {value!r}")
    out["additionalProperties"] = _rewrite(value, defs, f"{path}{{}}", trail)


def _infer_type(out: Schema, path: str) -> None:
    """Every node of a structural schema has a type; derive it where pydantic left it implicit."""
    if isinstance(out.get("type"), list) or out.get("type") == "null":
        raise ValueError(f"{path}: type {out['type']!r} has no structural form")
    if "type" in out or out.get("x-kubernetes-int-or-string"):
        return
    if "enum" in out:
        kinds = {_json_type(v) for v in out["enum"]}
        if len(kinds) != 1:
            raise ValueError(f"{path}: enum mixes JSON types {sorted(kinds)}")
        out["type"] = kinds.pop()
    elif "properties" in out or "additionalProperties" in out:
        out["type"] = "object"
    elif "items" in out:
        out["type"] = "array"
    else:
        # typing.Any: any JSON value, kept as is.
        out["x-kubernetes-preserve-unknown-fields"] = True


def _json_type(value: typing.Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    raise ValueError(f"enum value {value!r} is not a JSON scalar")


def _without_none(value: typing.Any) -> typing.Any:
    """A default as the API server should apply it: no null members (they would be pruned)."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_without_none(v) for v in value]
    return value


_RULE_KEYS = ("rule", "message", "messageExpression", "reason", "fieldPath", "optionalOldSelf")


def _ordered_rule(rule: dict[str, typing.Any]) -> dict[str, typing.Any]:
    """A CEL rule with its keys in the order the Kubernetes API documents them."""
    unknown = set(rule) - set(_RULE_KEYS)
    if unknown:
        raise ValueError(f"x-kubernetes-validations: unknown keys {sorted(unknown)}")
    return {key: copy.deepcopy(rule[key]) for key in _RULE_KEYS if key in rule}


def _ordered(node: Schema) -> Schema:
    return {key: node[key] for key in sorted(node, key=lambda k: (_RANK.get(k, len(_RANK)), k))}
