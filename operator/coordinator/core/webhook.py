"""The webhook protocol between the operator and an agent, without the I/O.

Used by both sides: the webhook executor (``coordinator.executors.webhook``) builds,
signs and sends requests and classifies the answers; the reference agent
(``coordinator.agent``) verifies them. See docs/concepts/executors.md, "The webhook
executor".

- The body is JSON: ``{"operation": "execute"|"undo", "idempotencyKey", "namespace",
  "recommendation", "customerId", "plan", "step": {"name", "action", "params"},
  "previousResult", "submitter": {"user", "groups"}}`` (``previousResult`` for undo only;
  ``submitter``: who submitted the recommendation, as the API server authenticated them
  at admission, so the agent knows on whose behalf it acts). The bytes sent are the bytes
  signed; the same request is sent again byte for byte, only the timestamp and
  signature headers change.
- ``X-Optiinfra-Timestamp``: Unix seconds. ``X-Optiinfra-Signature``:
  ``sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`` for a step request. What else is
  signed with the same key says what it is for, before the timestamp, so that no
  signature is good for anything but its purpose: ``"notify.<timestamp>.<body>"`` for a
  notification (``NOTIFY``: a captured notification cannot be replayed as a step), and
  ``"read.<timestamp>.<path>"`` for a GET of an agent's read-only endpoints (``READ``).
  The receiver compares bytes in constant time; a header that is not ASCII is a bad
  signature, never an error.
- The idempotency key is sha256 of ``"<plan uid>|<step name>|<operation>"`` in hex: the
  same across retries and operator restarts, different for execute and undo.
- Answers: 200 done, 202 accepted (ask again), 4xx failed, 5xx or none: ask again. An
  answer's body is read up to ``MAX_ANSWER_BYTES`` (64 KiB) and no further: a longer one
  (or a ``Content-Length`` saying so) fails the step at once, whatever its status.

Pure: no I/O, no clock (``now`` is passed in), no kopf, no kubernetes client.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

TIMESTAMP_HEADER: Final = "X-Optiinfra-Timestamp"
SIGNATURE_HEADER: Final = "X-Optiinfra-Signature"
SIGNATURE_PREFIX: Final = "sha256="
MAX_SKEW_SECONDS: Final = 300
"""How far a request's timestamp may be from the receiver's clock (either way)."""
MAX_ANSWER_BYTES: Final = 64 * 1024
"""The most the operator reads of an agent's answer (a step's or a notification's)."""
STEP_TIMEOUT_SECONDS: Final = 300
"""The whole step (every request and wait) unless params.timeoutSeconds says otherwise."""
STEP: Final = ""
"""The purpose of a step request: none, ``"<timestamp>.<body>"`` (as agents verify it)."""
NOTIFY: Final = "notify"
"""The purpose of a notification: ``"notify.<timestamp>.<body>"``."""
READ: Final = "read"
"""The purpose of a GET of an agent's read-only endpoints: ``"read.<timestamp>.<path>"``."""
EXECUTE: Final = "execute"
UNDO: Final = "undo"
RESERVED_PARAMS: Final = ("endpoint", "timeoutSeconds")
"""Params the operator reads; they are sent to the agent too (harmless, and honest)."""


def idempotency_key(plan_uid: str, step: str, operation: str) -> str:
    """The same for the same plan, step and operation, whoever asks and whenever."""
    return hashlib.sha256(f"{plan_uid}|{step}|{operation}".encode()).hexdigest()


def body(
    *,
    operation: str,
    key: str,
    namespace: str,
    recommendation: str,
    customer_id: str,
    plan: str,
    step: Mapping[str, Any],
    previous_result: Mapping[str, Any] | None = None,
    submitter: str | None = None,
    groups: Sequence[str] = (),
) -> bytes:
    """The request body, serialised once (compact, keys sorted): what is signed is sent."""
    document: dict[str, Any] = {
        "operation": operation,
        "idempotencyKey": key,
        "namespace": namespace,
        "recommendation": recommendation,
        "customerId": customer_id,
        "plan": plan,
        "step": dict(step),
        "submitter": {"user": submitter, "groups": list(groups)},
    }
    if operation == UNDO:
        document["previousResult"] = dict(previous_result or {})
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def signature(key: bytes, timestamp: int | str, payload: bytes, *, purpose: str = STEP) -> str:
    """The X-Optiinfra-Signature value of `payload` sent at `timestamp` for `purpose`."""
    prefix = f"{purpose}.{timestamp}." if purpose else f"{timestamp}."
    mac = hmac.new(key, prefix.encode() + payload, hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def headers(key: bytes, timestamp: int, payload: bytes, *, purpose: str = STEP) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(key, timestamp, payload, purpose=purpose),
    }


def read_payload(path: str) -> bytes:
    """What a GET of an agent's read-only `path` signs (with purpose ``READ``)."""
    return path.encode()


def read_headers(key: bytes, timestamp: int, path: str) -> dict[str, str]:
    """The headers of a signed GET of an agent's read-only `path` (``/applied``)."""
    return headers(key, timestamp, read_payload(path), purpose=READ)


def _bytes(value: str | bytes) -> bytes:
    # A header as bytes; whatever is not ASCII cannot match a signature anyway.
    return value if isinstance(value, bytes) else value.encode("utf-8", "replace")


def verify(
    key: bytes,
    *,
    timestamp: str | bytes | None,
    signature_header: str | bytes | None,
    payload: bytes,
    now: float,
    purpose: str = STEP,
    max_skew: float = MAX_SKEW_SECONDS,
) -> str | None:
    """Why a received request must be refused (signature or timestamp), or None.

    The headers are compared as bytes: any value (not ASCII, not UTF-8) is refused with a
    reason, never an exception."""
    if not timestamp or not signature_header:
        return f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER}"
    stamp = _bytes(timestamp).strip()
    if not stamp.isdigit() or len(stamp) > 12:  # bytes.isdigit: ASCII digits only
        return f"{TIMESTAMP_HEADER} is not Unix seconds"
    sent = int(stamp)
    if abs(now - sent) > max_skew:
        return f"{TIMESTAMP_HEADER} is more than {int(max_skew)} s from now"
    expected = signature(key, sent, payload, purpose=purpose).encode()
    if not hmac.compare_digest(expected, _bytes(signature_header).strip()):
        return "bad signature"
    return None


class Answer(enum.Enum):
    """What an agent's answer means for the step."""

    DONE = "done"  # 200: the result is the step's
    AGAIN = "again"  # 202, 5xx, no answer: send the same request again after a pause
    FAILED = "failed"  # 4xx (and anything else unexpected): the step failed


def classify(status: int | None) -> Answer:
    """The meaning of HTTP `status`; None is no answer (refused, reset, timed out)."""
    if status is None or status == 202 or 500 <= status <= 599:
        return Answer.AGAIN
    if status == 200:
        return Answer.DONE
    return Answer.FAILED


def step_timeout(params: Mapping[str, Any]) -> float:
    """The whole step's time limit: params.timeoutSeconds (> 0) or STEP_TIMEOUT_SECONDS."""
    value = params.get("timeoutSeconds")
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return float(STEP_TIMEOUT_SECONDS)


def error_text(status: int, payload: bytes, *, limit: int = 500) -> str:
    """The agent's message of a refusal: ``{"error": ...}``, else the start of the body."""
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        document = None
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        message: str = document["error"]
    else:
        message = payload.decode(errors="replace").strip() or "(no message)"
    return message[:limit]


def result_of(payload: bytes) -> dict[str, Any] | None:
    """The result of a 200 answer (``{"result": {...}}``; no result is ``{}``), or None when
    the body is not such a JSON object."""
    try:
        document = json.loads(payload) if payload.strip() else {}
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        return None
    if not isinstance(document, dict):
        return None
    result = document.get("result", {})
    return result if isinstance(result, dict) else None
