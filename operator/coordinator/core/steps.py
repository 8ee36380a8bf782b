"""The kubernetes executor's steps, the pure parts: their params, checked at admission, and
the bookkeeping that makes them undoable.

``problems(step, where=..., namespace=...)`` lists what is wrong with a step's params, one
message per problem naming the field (``spec.steps[2].params.target.kind: required``). The
admission webhook refuses a recommendation with any, and ``coordinator check`` reports them.

The rest is what the executor (``coordinator.executors.kubernetes``) computes without I/O:

- ``before_image``: which fields a patch sets, and what they held before. Walking the patch
  down the object, a field is recorded at the first key where the patch stops being an
  object, or where the object has no object to merge into (so a subtree that did not exist
  is one field, removed whole on undo). Lists are always one field, for a merge patch (which
  replaces them) and for a strategic-merge patch alike: the whole list at the patched key is
  recorded and restored, whatever merge keys the server used.
- ``drift``: which recorded fields no longer hold what the step wrote (undo refuses then).
- ``restore_patch``: the JSON merge patch that puts the recorded fields back (``null`` for
  fields that did not exist).
- ``json_path``/``lookup``/``condition_seen``: what a ``wait`` step looks at; ``seen``: how
  a value it read is shown in a message (scalars only, cut short: never an object's content).

The kinds the executor may touch are an allowlist (``DEFAULT_KINDS``, ``coordinator run
--executor-kinds``), written ``Kind.group`` as kubectl does (``Deployment.apps``; a core kind
alone: ``ConfigMap``). A step on any other kind is refused at admission, naming the field,
and again when it runs. Secrets are never in the default: a ``wait`` or ``patch`` of a
Secret would copy what it holds into a plan's status, which the view role reads. Nor may a
step set or change the operator's own marks (labels and annotations of ``optiinfra.io/``):
undo trusts them (``optiinfra.io/created-by`` says what an ``apply`` created, and deletes it).

Pure: no I/O, no clock, no kopf, no kubernetes client.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final, TypeGuard

from coordinator.api.plan import Executor, Step

SCALE_ACTIONS: Final = ("scale", "scale_workload")
ACTIONS: Final = (*SCALE_ACTIONS, "patch", "apply", "wait")
"""The actions of the kubernetes executor; ``scale_workload`` is an alias of ``scale``."""
PATCH_TYPES: Final = ("merge", "strategic")
DEFAULT_WAIT_SECONDS: Final = 300
DEFAULT_SCALE_KIND: Final = "Deployment"
ANNOTATION_PREFIX: Final = "optiinfra.io/"
DEFAULT_KINDS: Final = frozenset(
    {
        "Deployment.apps",
        "StatefulSet.apps",
        "ReplicaSet.apps",
        "HorizontalPodAutoscaler.autoscaling",
        "ConfigMap",
    }
)
"""The kinds the kubernetes executor may touch unless told otherwise: the workloads it scales
and patches, the autoscalers it applies, and the settings (ConfigMaps) plans change; the
same kinds manifests/ grant it. Never Secrets (nor RBAC, webhooks, pods: a plan changes
workloads, not who may do what)."""
SEEN_MAX: Final = 64
"""At most this many characters of a value read from an object go into a message."""
_NAME_MAX: Final = 63  # the name part of an annotation key, and a label value
_DNS_SUBDOMAIN: Final = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_LABEL_VALUE: Final = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]{0,61}[A-Za-z0-9]|[A-Za-z0-9])$")


class _Absent:
    """A field that the object does not have (distinct from a field holding null)."""

    _instance: _Absent | None = None

    def __new__(cls) -> _Absent:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<absent>"


ABSENT: Final = _Absent()

Path = tuple[str | int, ...]


# -- Targets ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """An object in the plan's namespace: ``params.target``."""

    api_version: str
    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"

    def to_wire(self) -> dict[str, str]:
        return {"apiVersion": self.api_version, "kind": self.kind, "name": self.name}


_SCALE_GROUPS: Final = {"Deployment": "apps/v1", "StatefulSet": "apps/v1", "ReplicaSet": "apps/v1"}


def target(params: Mapping[str, Any]) -> Target:
    """The target of a step whose params passed ``problems``; for ``scale`` the legacy
    ``kind``/``name`` too (kind default Deployment). Raises ValueError otherwise."""
    raw = params.get("target")
    if isinstance(raw, Mapping):
        api_version, kind, name = raw.get("apiVersion"), raw.get("kind"), raw.get("name")
    else:
        kind = params.get("kind", DEFAULT_SCALE_KIND)
        name = params.get("name")
        api_version = _SCALE_GROUPS.get(kind) if isinstance(kind, str) else None
    if not all(isinstance(v, str) and v for v in (api_version, kind, name)):
        raise ValueError("params.target: needs apiVersion, kind and name")
    return Target(str(api_version), str(kind), str(name))


def kind_name(api_version: str, kind: str) -> str:
    """How an allowlist names a kind: ``Deployment.apps``; ``ConfigMap`` for the core group."""
    group = api_version.rpartition("/")[0]
    return f"{kind}.{group}" if group else kind


def parse_kinds(text: str) -> frozenset[str]:
    """The allowlist of ``--executor-kinds``: ``Deployment.apps,ConfigMap`` (empty: none).
    Raises ValueError naming an entry that is not ``Kind`` or ``Kind.group``."""
    kinds = set()
    for part in text.split(","):
        entry = part.strip()
        if not entry:
            continue
        kind, _, group = entry.partition(".")
        bad_group = bool(group) and not _DNS_SUBDOMAIN.match(group)
        if not re.fullmatch(r"[A-Z][A-Za-z0-9]*", kind) or bad_group:
            raise ValueError(
                f"{entry!r} is not a kind: write Kind.group as kubectl does (Deployment.apps, "
                "HorizontalPodAutoscaler.autoscaling) or Kind alone for the core group (ConfigMap)"
            )
        kinds.add(entry)
    return frozenset(kinds)


def _kind_problems(api_version: Any, kind: Any, at: str, kinds: frozenset[str]) -> list[str]:
    if not (_text(api_version) and _text(kind)):
        return []  # reported as required
    name = kind_name(str(api_version), str(kind))
    if name in kinds:
        return []
    allowed = ", ".join(sorted(kinds)) or "none"
    return [
        f"{at}: the kubernetes executor may not act on {name} ({api_version} {kind}); it acts "
        f"only on {allowed} (coordinator run --executor-kinds)"
    ]


def _mark_problems(metadata: Any, at: str) -> list[str]:
    """Labels and annotations of the operator's own domain: undo trusts them."""
    if not isinstance(metadata, Mapping):
        return []
    found = []
    for part in ("labels", "annotations"):
        keys = metadata.get(part)
        if not isinstance(keys, Mapping):
            continue
        for key in sorted(str(k) for k in keys):
            domain = key.partition("/")[0] if "/" in key else ""
            if domain == ANNOTATION_PREFIX[:-1] or domain.endswith("." + ANNOTATION_PREFIX[:-1]):
                found.append(
                    f"{at}.{part}[{key!r}]: cannot be set by a step: the operator's own marks "
                    f"({ANNOTATION_PREFIX}) are what undo trusts"
                )
    return found


def timeout_seconds(step: Step) -> int:
    """How long a ``wait`` step waits: params.timeoutSeconds, else the step's, else 300."""
    value = step.params.get("timeoutSeconds")
    if _whole(value) and value > 0:
        return int(value)
    return step.timeout_seconds or DEFAULT_WAIT_SECONDS


# -- Admission: what is wrong with a step's params --------------------------------------------


def _whole(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def steps_problems(
    steps: Sequence[Step],
    *,
    namespace: str,
    prefix: str = "spec.steps",
    kinds: frozenset[str] = DEFAULT_KINDS,
) -> list[str]:
    """``problems`` of every step of a list."""
    found: list[str] = []
    for index, step in enumerate(steps):
        found.extend(problems(step, where=f"{prefix}[{index}]", namespace=namespace, kinds=kinds))
    return found


def problems(
    step: Step, *, where: str, namespace: str, kinds: frozenset[str] = DEFAULT_KINDS
) -> list[str]:
    """What is wrong with `step` (at `where`, e.g. ``spec.steps[2]``) for its executor, one
    message per problem naming the field; empty when it can run. Only kubernetes steps are
    checked here (simulated params are free form). A kind outside `kinds` is a problem."""
    if step.executor is not Executor.KUBERNETES:
        return []
    params = step.params
    at = f"{where}.params"
    found: list[str] = []
    if step.action not in ACTIONS:
        return [
            f"{where}.action: the kubernetes executor has no action {step.action!r} "
            f"(it has {', '.join(ACTIONS)})"
        ]
    if "timeoutSeconds" in params and not (
        _whole(params["timeoutSeconds"]) and params["timeoutSeconds"] > 0
    ):
        found.append(f"{at}.timeoutSeconds: must be a whole number > 0")
    if step.action in SCALE_ACTIONS:
        if "target" in params:
            found.extend(_target_problems(params["target"], f"{at}.target", kinds))
        else:
            kind = params.get("kind", DEFAULT_SCALE_KIND)
            if kind not in _SCALE_GROUPS:
                found.append(
                    f"{at}.kind: must be one of {', '.join(_SCALE_GROUPS)} (or use params.target "
                    "with apiVersion, kind and name for any kind with a /scale subresource)"
                )
            else:
                found.extend(_kind_problems(_SCALE_GROUPS[kind], kind, f"{at}.kind", kinds))
            if not _text(params.get("name")):
                found.append(f"{at}.name: required (or params.target)")
        replicas = params.get("replicas")
        if replicas is None:
            found.append(f"{at}.replicas: required")
        elif not (_whole(replicas) and replicas >= 0):
            found.append(f"{at}.replicas: must be a whole number >= 0, not {replicas!r}")
    elif step.action == "patch":
        found.extend(_target_problems(params.get("target"), f"{at}.target", kinds))
        kind = params.get("type", "merge")
        if kind not in PATCH_TYPES:
            found.append(f"{at}.type: must be merge or strategic, not {kind!r}")
        found.extend(_patch_problems(params.get("patch"), f"{at}.patch", kind == "strategic"))
    elif step.action == "apply":
        found.extend(_manifest_problems(params.get("manifest"), f"{at}.manifest", namespace, kinds))
    else:  # wait
        found.extend(_target_problems(params.get("target"), f"{at}.target", kinds))
        found.extend(_wait_problems(params, at))
    return found


def _target_problems(raw: Any, at: str, kinds: frozenset[str]) -> list[str]:
    if raw is None:
        return [f"{at}: required ({{apiVersion, kind, name}} of an object in the namespace)"]
    if not isinstance(raw, Mapping):
        return [f"{at}: must be an object {{apiVersion, kind, name}}"]
    found = [f"{at}.{key}: required" for key in ("apiVersion", "kind", "name") if key not in raw]
    found += [
        f"{at}.{key}: must be a non-empty string"
        for key in ("apiVersion", "kind", "name")
        if key in raw and not _text(raw[key])
    ]
    if "namespace" in raw:
        found.append(f"{at}.namespace: not allowed: steps act in the recommendation's namespace")
    found += [
        f"{at}.{key}: unknown field"
        for key in sorted(raw)
        if key not in ("apiVersion", "kind", "name", "namespace")
    ]
    found += _kind_problems(raw.get("apiVersion"), raw.get("kind"), f"{at}.kind", kinds)
    return found


def _patch_problems(raw: Any, at: str, strategic: bool) -> list[str]:
    if raw is None:
        return [f"{at}: required (the fields to change)"]
    if not isinstance(raw, Mapping) or not raw:
        return [f"{at}: must be a non-empty object"]
    found = [
        f"{at}.{key}: cannot be patched" for key in ("apiVersion", "kind", "status") if key in raw
    ]
    metadata = raw.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            found.append(f"{at}.metadata: must be an object")
        else:
            found += [
                f"{at}.metadata.{key}: cannot be patched (only labels and annotations)"
                for key in sorted(metadata)
                if key not in ("labels", "annotations")
            ]
            found += _mark_problems(metadata, f"{at}.metadata")
    if strategic:
        found += [
            f"{at}{format_path(path)}: strategic-merge directives are not supported"
            for path in _directive_paths(raw, ())
        ]
    return found


def _directive_paths(node: Any, path: Path) -> Iterator[Path]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if str(key).startswith("$"):
                yield (*path, key)
            else:
                yield from _directive_paths(value, (*path, key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _directive_paths(item, (*path, index))


def _manifest_problems(raw: Any, at: str, namespace: str, kinds: frozenset[str]) -> list[str]:
    if raw is None:
        return [f"{at}: required (one object)"]
    if not isinstance(raw, Mapping):
        return [f"{at}: must be one object"]
    found = [f"{at}.{key}: required" for key in ("apiVersion", "kind") if not _text(raw.get(key))]
    if _text(raw.get("kind")) and str(raw["kind"]).endswith("List"):
        found.append(f"{at}.kind: must be one object, not a {raw['kind']}")
    else:
        found += _kind_problems(raw.get("apiVersion"), raw.get("kind"), f"{at}.kind", kinds)
    metadata = raw.get("metadata")
    if not isinstance(metadata, Mapping):
        return [*found, f"{at}.metadata.name: required"]
    found += _mark_problems(metadata, f"{at}.metadata")
    name = metadata.get("name")
    if not _text(name):
        found.append(f"{at}.metadata.name: required")
    elif not _DNS_SUBDOMAIN.match(str(name)):
        found.append(f"{at}.metadata.name: {name!r} is not a valid name")
    other = metadata.get("namespace")
    if other is not None and other != namespace:
        found.append(
            f"{at}.metadata.namespace: must be the recommendation's namespace {namespace!r} "
            f"(or left out), not {other!r}"
        )
    return found


def _wait_problems(params: Mapping[str, Any], at: str) -> list[str]:
    condition, path = params.get("condition"), params.get("jsonPath")
    if condition is None and path is None:
        return [f"{at}.condition: required ({{type, status}}), or params.jsonPath with value"]
    if condition is not None and path is not None:
        return [f"{at}.condition: give either condition or jsonPath, not both"]
    found: list[str] = []
    if condition is not None:
        if not isinstance(condition, Mapping):
            return [f"{at}.condition: must be an object {{type, status}}"]
        found += [
            f"{at}.condition.{key}: required (a string)"
            for key in ("type", "status")
            if not _text(condition.get(key))
        ]
        found += [
            f"{at}.condition.{key}: unknown field"
            for key in sorted(condition)
            if key not in ("type", "status")
        ]
        return found
    if not _text(path):
        found.append(f"{at}.jsonPath: must be a non-empty string like .status.observedGeneration")
    else:
        try:
            json_path(str(path))
        except ValueError as error:
            found.append(f"{at}.jsonPath: {error}")
    if "value" not in params:
        found.append(f"{at}.value: required with jsonPath")
    elif not isinstance(params["value"], str | int | float | bool):
        found.append(f"{at}.value: must be a string, number or boolean")
    return found


# -- JSON paths -------------------------------------------------------------------------------

_SEGMENT: Final = re.compile(
    r"""\.(?P<key>[A-Za-z0-9_-]+)|\[(?P<index>\d+)\]|\[(?P<q>['"])(?P<quoted>[^'"]+)(?P=q)\]"""
)


def json_path(text: str) -> Path:
    """The path of a simple JSONPath: ``{.status.observedGeneration}``, ``.spec.replicas``,
    ``.status.conditions[0].type``, ``.metadata.annotations['a.b/c']``. No filters or
    wildcards. Raises ValueError naming what it cannot read."""
    body = text.strip()
    if body.startswith("{") and body.endswith("}"):
        body = body[1:-1].strip()
    if body and body[0] not in ".[":
        body = f".{body}"
    path: list[str | int] = []
    position = 0
    while position < len(body):
        match = _SEGMENT.match(body, position)
        if match is None:
            raise ValueError(
                f"cannot read {text!r} at {body[position:]!r} (simple paths only: "
                ".a.b, [0], ['key'])"
            )
        if match["key"] is not None:
            path.append(match["key"])
        elif match["index"] is not None:
            path.append(int(match["index"]))
        else:
            path.append(match["quoted"])
        position = match.end()
    if not path:
        raise ValueError(f"{text!r} names no field")
    return tuple(path)


def lookup(obj: Any, path: Path) -> Any:
    """The value at `path` in `obj`, or ABSENT."""
    node = obj
    for part in path:
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                return ABSENT
            node = node[part]
        else:
            if not isinstance(node, Mapping) or part not in node:
                return ABSENT
            node = node[part]
    return node


def format_path(path: Path) -> str:
    """``.spec.template.metadata.labels["app.kubernetes.io/name"]`` style, for messages."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part):
            text += f".{part}"
        else:
            text += f"[{json.dumps(part)}]"
    return text


def field_name(path: Path) -> str:
    """A path as people write it, without the leading dot: ``spec.replicas``."""
    return format_path(path).removeprefix(".")


def show(value: Any) -> str:
    """A value in a message: JSON, or ``<absent>``."""
    return "<absent>" if value is ABSENT else json.dumps(value, sort_keys=True)


# -- Before-images of patches -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Field:
    """One field a patch set: what it held before, and (once written) what the step wrote."""

    path: tuple[str, ...]
    before: Any = ABSENT
    after: Any = ABSENT

    def to_wire(self, *, after: bool = True) -> dict[str, Any]:
        wire: dict[str, Any] = {"path": list(self.path), "field": field_name(self.path)}
        if self.before is not ABSENT:
            wire["before"] = self.before
        if after and self.after is not ABSENT:
            wire["after"] = self.after
        return wire

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Field:
        return cls(
            path=tuple(str(part) for part in wire["path"]),
            before=wire.get("before", ABSENT),
            after=wire.get("after", ABSENT),
        )


def patched_paths(obj: Mapping[str, Any], patch: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """The fields `patch` sets on `obj`: where the patch stops being an object, or where
    `obj` has no object to merge into. Lists and nulls are fields of their own."""
    found: list[tuple[str, ...]] = []

    def walk(node: Any, part: Mapping[str, Any], path: tuple[str, ...]) -> None:
        for key, value in part.items():
            here = (*path, str(key))
            current = node.get(key, ABSENT) if isinstance(node, Mapping) else ABSENT
            if isinstance(value, Mapping) and value and isinstance(current, Mapping):
                walk(current, value, here)
            else:
                found.append(here)

    walk(obj, patch, ())
    return found


def before_image(obj: Mapping[str, Any], patch: Mapping[str, Any]) -> list[Field]:
    """The fields `patch` sets on `obj`, each with the value it holds now (or ABSENT)."""
    return [Field(path, before=lookup(obj, path)) for path in patched_paths(obj, patch)]


def written(fields: Sequence[Field], obj: Mapping[str, Any]) -> list[Field]:
    """The fields with what they hold in `obj` (as the server answered the patch)."""
    return [dataclasses.replace(field, after=lookup(obj, field.path)) for field in fields]


@dataclasses.dataclass(frozen=True, slots=True)
class Drift:
    """A field that no longer holds what the step wrote."""

    path: tuple[str, ...]
    expected: Any
    found: Any

    def __str__(self) -> str:
        return (
            f"{field_name(self.path)}: expected {show(self.expected)} (what this step wrote), "
            f"found {show(self.found)}"
        )


def drift(obj: Mapping[str, Any], fields: Sequence[Field]) -> list[Drift]:
    """The fields of `obj` that someone changed since the step wrote them."""
    return [
        Drift(field.path, field.after, found)
        for field in fields
        if (found := lookup(obj, field.path)) != field.after
    ]


def restored(obj: Mapping[str, Any], fields: Sequence[Field]) -> bool:
    """Every field holds its before-image already (an undo that ran before)."""
    return all(lookup(obj, field.path) == field.before for field in fields)


def restore_patch(fields: Sequence[Field]) -> dict[str, Any]:
    """The JSON merge patch that puts every field back: its before-image, or null."""
    patch: dict[str, Any] = {}
    for field in fields:
        node = patch
        for part in field.path[:-1]:
            node = node.setdefault(part, {})
        node[field.path[-1]] = None if field.before is ABSENT else field.before
    return patch


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with the objects of `extra` merged in (the executor's annotations into a patch)."""
    merged = dict(base)
    for key, value in extra.items():
        old = merged.get(key)
        merged[key] = (
            merge(old, value) if isinstance(old, Mapping) and isinstance(value, Mapping) else value
        )
    return merged


# -- Names the executor writes ----------------------------------------------------------------


def _short(name: str, limit: int) -> str:
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: limit - 11].rstrip('-_.')}-{digest}"


def before_annotation(plan: str, step: str) -> str:
    """``optiinfra.io/before.<plan>.<step>``; shortened with a hash when longer than an
    annotation key may be (the value names the plan uid and step in full)."""
    return ANNOTATION_PREFIX + _short(f"before.{plan}.{step}", _NAME_MAX)


def label_value(name: str) -> str:
    """`name` as a label value (at most 63 characters; shortened with a hash)."""
    value = _short(name, _NAME_MAX)
    return value if _LABEL_VALUE.match(value) else hashlib.sha256(name.encode()).hexdigest()[:20]


# -- wait -------------------------------------------------------------------------------------


def text(value: Any) -> str:
    """A value as ``kubectl get -o jsonpath`` prints it (what ``value`` is compared with)."""
    if value is ABSENT:
        return "<absent>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, sort_keys=True)


def seen(value: Any) -> str:
    """A value a ``wait`` read, for a message that status keeps (and the view role reads): a
    scalar as ``text`` prints it, cut to ``SEEN_MAX`` characters; of an object or a list only
    what it is and its size, never its content."""
    if isinstance(value, Mapping):
        return f"an object of {len(value)} field{'s' if len(value) != 1 else ''}"
    if isinstance(value, list):
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    shown = text(value) if value is not None else "null"
    if len(shown) > SEEN_MAX:
        return f"{shown[:SEEN_MAX]}... ({len(shown)} characters)"
    return shown


def condition_seen(obj: Mapping[str, Any], kind: str) -> str | None:
    """The status of condition `kind` in ``status.conditions``, or None when there is none."""
    conditions = lookup(obj, ("status", "conditions"))
    for condition in conditions if isinstance(conditions, list) else ():
        if isinstance(condition, Mapping) and condition.get("type") == kind:
            return str(condition.get("status"))
    return None
