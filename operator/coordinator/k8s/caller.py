"""The API server as one caller sees it: a person's kubeconfig, or an agent's bearer token.

The kubectl plugin and the HTTP gateway act *as the caller*: every read and write here
goes to the API server with the caller's own credentials, so RBAC decides what they may
see and do, and the admission webhooks record the real user. Nothing here uses the
operator's identity. Plain synchronous calls (the gateway runs them in threads).
"""

from __future__ import annotations

import copy
import json
from typing import Any, Final

import kubernetes

from coordinator.api.common import APPROVALS, GROUP, PLANS, RECOMMENDATIONS, VERSION

_config: Any = kubernetes.config  # typed loosely: the client's loaders are untyped
TIMEOUT: Final = 15
"""Seconds any one call may take."""

PLURALS: Final = {
    "recommendation": RECOMMENDATIONS,
    "approval": APPROVALS,
    "plan": PLANS,
}


class CallerError(Exception):
    """The API server refused or failed a call: `status` (HTTP) and a one-line message."""

    def __init__(self, status: int, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason


def _error(exc: kubernetes.client.ApiException) -> CallerError:
    status = int(exc.status or 0)
    message = str(exc.reason or "error")
    reason = ""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    if isinstance(body, dict):
        message = str(body.get("message") or message)
        reason = str(body.get("reason") or "")
    return CallerError(status, " ".join(message.split()), reason=reason)


def configuration(path: str | None = None, context: str | None = None) -> Any:
    """Where the API server is, how to trust it and who the kubeconfig's user is: from a
    kubeconfig (KUBECONFIG or ~/.kube/config by default, its current context unless
    `context`), or the in-cluster service account when there is none."""
    config = kubernetes.client.Configuration()
    try:
        _config.load_kube_config(config_file=path, context=context, client_configuration=config)
    except _config.ConfigException:
        if path is not None or context is not None:
            raise
        _config.load_incluster_config(client_configuration=config)
    return config


def client(config: Any, token: str | None = None) -> Any:
    """An API client over `config` (see `configuration`): as the configuration's user, or,
    given a `token`, authenticating with that bearer token and nothing else (an empty
    token: no credentials at all). The one way the plugin and the gateway build clients."""
    if token is None:
        return kubernetes.client.ApiClient(config)
    config = copy.copy(config)
    config.api_key = {"authorization": f"Bearer {token}"} if token else {}
    config.api_key_prefix = {}
    config.cert_file = None
    config.key_file = None
    config.username = None
    config.password = None
    config.refresh_api_key_hook = None
    return kubernetes.client.ApiClient(config)


def default_namespace(path: str | None = None, context: str | None = None) -> str:
    """The namespace of the kubeconfig's context, as kubectl takes it (default: default)."""
    try:
        contexts, active = _config.list_kube_config_contexts(config_file=path)
    except (kubernetes.config.ConfigException, OSError):
        return "default"
    chosen = next((c for c in contexts if c["name"] == context), None) if context else active
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")


def denied(message: str) -> str:
    """An admission refusal without the webhook's name: what was refused, and why."""
    marker = "denied the request: "
    return message.split(marker, 1)[1] if marker in message else message


def whoami(api: Any) -> tuple[str, list[str]]:
    """The caller's user name and groups, as the API server authenticates them."""
    authn: Any = kubernetes.client.AuthenticationV1Api(api)
    try:
        review = authn.create_self_subject_review(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            _request_timeout=TIMEOUT,
        )
    except kubernetes.client.ApiException as exc:
        raise _error(exc) from None
    info = review.status.user_info
    return str(info.username), list(info.groups or [])


def get(api: Any, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
    """The object, or None when it does not exist."""
    custom: Any = kubernetes.client.CustomObjectsApi(api)
    try:
        found: dict[str, Any] = custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, name, _request_timeout=TIMEOUT
        )
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise _error(exc) from None
    return found


def list_(api: Any, namespace: str | None, plural: str) -> list[dict[str, Any]]:
    """The objects of `plural` in `namespace`, or in every namespace when it is None."""
    custom: Any = kubernetes.client.CustomObjectsApi(api)
    try:
        if namespace is None:
            found = custom.list_cluster_custom_object(
                GROUP, VERSION, plural, _request_timeout=TIMEOUT
            )
        else:
            found = custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, _request_timeout=TIMEOUT
            )
    except kubernetes.client.ApiException as exc:
        raise _error(exc) from None
    items: list[dict[str, Any]] = found.get("items") or []
    return items


def leases(api: Any, namespace: str, selector: str) -> list[dict[str, Any]]:
    """The coordination.k8s.io Leases in `namespace` matching the label `selector`, as the
    API server returns them (camelCase dicts)."""
    coordination: Any = kubernetes.client.CoordinationV1Api(api)
    try:
        found = coordination.list_namespaced_lease(
            namespace, label_selector=selector, _preload_content=False, _request_timeout=TIMEOUT
        )
    except kubernetes.client.ApiException as exc:
        raise _error(exc) from None
    items: list[dict[str, Any]] = json.loads(found.data).get("items") or []
    return items


def lease(api: Any, namespace: str, name: str) -> dict[str, Any] | None:
    """The Lease `namespace`/`name` (a camelCase dict), or None when it does not exist."""
    coordination: Any = kubernetes.client.CoordinationV1Api(api)
    try:
        found = coordination.read_namespaced_lease(
            name, namespace, _preload_content=False, _request_timeout=TIMEOUT
        )
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise _error(exc) from None
    read: dict[str, Any] = json.loads(found.data)
    return read


def patch(api: Any, namespace: str, plural: str, name: str, body: Any) -> dict[str, Any]:
    """A JSON merge patch of the object (a dict) or a JSON patch (a list)."""
    custom: Any = kubernetes.client.CustomObjectsApi(api)
    kind = (
        "application/json-patch+json" if isinstance(body, list) else "application/merge-patch+json"
    )
    try:
        result: dict[str, Any] = custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            plural,
            name,
            body,
            _content_type=kind,
            _request_timeout=TIMEOUT,
        )
    except kubernetes.client.ApiException as exc:
        raise _error(exc) from None
    return result


def create(api: Any, namespace: str, plural: str, body: dict[str, Any]) -> dict[str, Any]:
    custom: Any = kubernetes.client.CustomObjectsApi(api)
    try:
        result: dict[str, Any] = custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, body, _request_timeout=TIMEOUT
        )
    except kubernetes.client.ApiException as exc:
        raise _error(exc) from None
    return result


def put_recommendation(api: Any, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    """Create the Recommendation, or replace the spec of the one of that name (a JSON
    patch: fields the new spec leaves out are removed, as `kubectl replace` would)."""
    name = body["metadata"]["name"]
    try:
        return create(api, namespace, PLURALS["recommendation"], body)
    except CallerError as exc:
        if exc.status != 409:
            raise
    return patch(
        api,
        namespace,
        PLURALS["recommendation"],
        name,
        [{"op": "replace", "path": "/spec", "value": body["spec"]}],
    )


def reachable(api: Any) -> tuple[bool, str]:
    """Whether the API server answers (its /version, which anyone may read), and what it
    said: its version, or why not."""
    version: Any = kubernetes.client.VersionApi(api)
    try:
        info = version.get_code(_request_timeout=5)
    except kubernetes.client.ApiException as exc:
        return False, f"{exc.status} {exc.reason}"
    except Exception as exc:  # any failure to reach it is "not healthy"
        return False, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return True, str(info.git_version)
