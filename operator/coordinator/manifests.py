"""Manifests read from files and folders: the Recommendations, ApprovalPolicies and
VerificationTemplates in them.

For ``coordinator check``. Each document is validated with the API models (and the params
of each step, as the admission webhook does); every problem is one message naming the
file (and the document in it), the object and the field. It reads files, nothing else.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple, TypeVar

import pydantic
import yaml

from coordinator.api.common import API_VERSION
from coordinator.api.policy import ApprovalPolicy
from coordinator.api.recommendation import Recommendation
from coordinator.api.verification import VerificationTemplate
from coordinator.core import admission, catalogue
from coordinator.core import policy as policies_
from coordinator.core import verification as verification_

SUFFIXES: Final = (".yaml", ".yml", ".json")
KIND: Final = "Recommendation"
POLICY_KIND: Final = "ApprovalPolicy"
TEMPLATE_KIND: Final = "VerificationTemplate"
_Admin = TypeVar("_Admin", ApprovalPolicy, VerificationTemplate)


@dataclasses.dataclass(frozen=True, slots=True)
class Manifest:
    """A valid Recommendation and where it was read from."""

    recommendation: Recommendation
    origin: str
    """The file, and the document in it when there are several: ``a.yaml (document 2)``."""


def read(paths: Sequence[str]) -> tuple[list[Manifest], list[str]]:
    """The Recommendations in ``paths`` and every problem found, as messages.

    A folder is searched recursively for ``SUFFIXES``; a file named on its own is read
    whatever its name. Documents that are not Recommendations of this API version, and
    empty ones, are skipped. The status of a Recommendation is dropped unread.
    """
    found = read_all(paths)
    return found.manifests, found.problems


class Contents(NamedTuple):
    """Everything ``read_all`` found."""

    manifests: list[Manifest]
    policies: list[ApprovalPolicy]
    templates: list[VerificationTemplate]
    problems: list[str]


def read_all(paths: Sequence[str]) -> Contents:
    """``read``, and the ApprovalPolicies and VerificationTemplates found among the same
    files (each validated as admission validates it)."""
    manifests: list[Manifest] = []
    policies: list[ApprovalPolicy] = []
    templates: list[VerificationTemplate] = []
    problems: list[str] = []
    seen: dict[tuple[str, str], str] = {}
    for file in _files(paths, problems):
        documents = list(_documents(file, problems))
        for where, document in documents:
            origin = file if len(documents) == 1 and not where.item else f"{file} ({where})"
            found = _admin(
                document,
                ApprovalPolicy,
                POLICY_KIND,
                origin=origin,
                problems=problems,
                check=_windows,
            )
            if found is not None:
                policies.append(found)
                continue
            template = _admin(
                document,
                VerificationTemplate,
                TEMPLATE_KIND,
                origin=origin,
                problems=problems,
                check=_template,
            )
            if template is not None:
                templates.append(template)
                continue
            manifest = _manifest(document, origin=origin, problems=problems)
            if manifest is None:
                continue
            key = (manifest.recommendation.metadata.namespace, manifest.recommendation.name)
            if key in seen:
                problems.append(
                    f"{origin}: {_object(manifest.recommendation)}: metadata.name: "
                    f"defined twice, also in {seen[key]}"
                )
                continue
            seen[key] = origin
            manifests.append(manifest)
    return Contents(manifests, policies, templates, problems)


def _of_kind(document: Any, kind: str) -> dict[str, Any] | None:
    """`document` without its status if it is a `kind` of this API version, else None.
    Status belongs to the operator: `kubectl apply` ignores it, and so does check."""
    if not (
        isinstance(document, dict)
        and document.get("kind") == kind
        and document.get("apiVersion") == API_VERSION
    ):
        return None
    return {key: value for key, value in document.items() if key != "status"}


def _admin(
    document: Any,
    model: type[_Admin],
    kind: str,
    *,
    origin: str,
    problems: list[str],
    check: Callable[[_Admin], list[str]],
) -> _Admin | None:
    """A document of an admin's `kind` (ApprovalPolicy, VerificationTemplate), validated
    by the model and by `check` (the fields the admission webhook checks, each problem
    naming its field); None for other kinds (and for an invalid one, with the problems)."""
    document = _of_kind(document, kind)
    if document is None:
        return None
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    what = f"{kind} {name or 'without a name'}"
    try:
        found = model.model_validate(document)
    except pydantic.ValidationError as error:
        problems.extend(
            f"{origin}: {what}: {_field(problem['loc'])}{problem['msg']}"
            for problem in error.errors()
        )
        return None
    bad = [f"{origin}: {what}: {problem}" for problem in check(found)]
    problems.extend(bad)
    return None if bad else found


def _windows(policy: ApprovalPolicy) -> list[str]:
    return [
        f"spec.windows[{index}]: {problem}"
        for index, window in enumerate(policy.spec.windows)
        if (problem := policies_.window_problem(window))
    ]


def _template(template: VerificationTemplate) -> list[str]:
    return verification_.template_problems(template.spec)


def _files(paths: Sequence[str], problems: list[str]) -> Iterator[str]:
    for path in map(Path, paths):
        if path.is_dir():
            yield from sorted(
                str(found)
                for found in path.rglob("*")
                if found.suffix in SUFFIXES and found.is_file()
            )
        elif path.is_file():
            yield str(path)
        else:
            problems.append(f"{path}: no such file or folder")


class _Where(NamedTuple):
    """Where a document is in its file: the document, and the item of a ``kind: List``."""

    document: int
    item: int | None = None

    def __str__(self) -> str:
        where = f"document {self.document}"
        return where if self.item is None else f"{where}, item {self.item}"


def _documents(file: str, problems: list[str]) -> Iterator[tuple[_Where, Any]]:
    """The documents of ``file``, the items of a ``kind: List`` one by one.

    A syntax error is a problem naming the line; the documents before it still count.
    """
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        problems.append(f"{file}: cannot read: {error}")
        return
    try:
        parsed = [json.loads(text)] if file.endswith(".json") else yaml.safe_load_all(text)
        for number, document in enumerate(parsed, start=1):
            if isinstance(document, dict) and document.get("kind") == "List":
                for item, entry in enumerate(document.get("items") or (), start=1):
                    yield _Where(number, item), entry
            else:
                yield _Where(number), document
    except json.JSONDecodeError as error:
        problems.append(
            f"{file}: line {error.lineno}, column {error.colno}: invalid JSON: {error.msg}"
        )
    except yaml.YAMLError as error:
        problems.append(f"{file}: {_yaml_problem(error)}")


def _yaml_problem(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        what = " ".join(part for part in (error.context, error.problem) if part)
        return f"line {mark.line + 1}, column {mark.column + 1}: invalid YAML: {what}"
    return f"invalid YAML: {error}"


def _manifest(document: Any, *, origin: str, problems: list[str]) -> Manifest | None:
    document = _of_kind(document, KIND)
    if document is None:
        return None
    try:
        recommendation = Recommendation.model_validate(document)
    except pydantic.ValidationError as error:
        name = _object_name(document)
        problems.extend(
            f"{origin}: {name}: {_field(problem['loc'])}{problem['msg']}"
            for problem in error.errors()
        )
        return None
    # The params of each step, as the admission webhook checks them (it refuses these).
    found = admission.step_problems(old=None, new=recommendation)
    if found:
        problems.extend(f"{origin}: {_object(recommendation)}: {problem}" for problem in found)
    try:
        catalogue.plan_steps(recommendation.spec)
    except catalogue.NoDefaultPlanError as error:  # the API server would refuse it too
        problems.append(f"{origin}: {_object(recommendation)}: {error}")
        return None
    return Manifest(recommendation, origin)


def _object_name(document: Mapping[str, Any]) -> str:
    """``Recommendation namespace/name``, or just the kind when there is no usable name."""
    metadata = document.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("name"), str):
        namespace = metadata.get("namespace")
        namespace = namespace if isinstance(namespace, str) else "default"
        return f"{KIND} {namespace}/{metadata['name']}"
    return f"{KIND} without a name"


def _object(recommendation: Recommendation) -> str:
    return f"{KIND} {recommendation.metadata.namespace}/{recommendation.name}"


def _field(location: tuple[int | str, ...]) -> str:
    """``spec.steps[0].name: `` for pydantic's ``('spec', 'steps', 0, 'name')``."""
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else part
    return f"{path}: " if path else ""
