"""Webhook deliveries, GitHub style: the signature, the delivery id, the body and the `if`.

A delivery is checked in this order by the HTTP layer: its size (over :data:`MAX_BODY`: 413),
its ``X-Hub-Signature-256`` HMAC over the raw body (:func:`verify`: 401), its JSON body
(:func:`parse_body`: 400), then the trigger's ``if`` (:func:`passes`) with the body as ``event``.
Every refusal is a :class:`HookError` carrying the HTTP status and the label for the
``flowray_webhook_deliveries_total`` metric's ``result``. No message repeats the body, with
one exception: an ``if`` that gives ``fromJSON`` a bad text quotes up to 60 characters of it,
as it does in a step's ``if``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping
from typing import Any, NoReturn

from flowray import expr

__all__ = [
    "DELIVERY_HEADERS",
    "MAX_BODY",
    "MAX_DELIVERY_ID",
    "MAX_DEPTH",
    "SIGNATURE_HEADER",
    "HookError",
    "delivery_id",
    "parse_body",
    "passes",
    "sign",
    "verify",
]

MAX_BODY = 1024 * 1024
"""Bytes; a larger body is answered 413 (GitHub's own deliveries stop at 25 MB, but a trigger's
payload is a small JSON object, and the whole body is held in memory to check its HMAC)."""
MAX_DEPTH = 100
"""Levels of arrays and objects a body may nest: real payloads use about ten, and deeper ones
would only be there to break recursive readers further on (toJSON, the database)."""
MAX_DELIVERY_ID = 200
SIGNATURE_HEADER = "X-Hub-Signature-256"
DELIVERY_HEADERS = ("X-GitHub-Delivery", "X-Flowray-Delivery")
"""Looked up in this order; the first one present and not blank is the delivery's id."""

_SIGNATURE = re.compile(r"(?ai:sha256)=([0-9a-fA-F]{64})")


class HookError(Exception):
    """A delivery refused. ``status`` is the HTTP status (401 bad or missing signature, 413 too
    large, 400 not JSON, not an object, or a bad ``if``), ``result`` the metric label
    (``bad_signature``, ``too_large``, ``bad_request``) and ``message`` (also ``str(error)``)
    the answer's text."""

    def __init__(self, status: int, result: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.result = result
        self.message = message

    def __reduce__(self) -> tuple[type[HookError], tuple[int, str, str]]:
        return (type(self), (self.status, self.result, self.message))


def _refuse(status: int, result: str, message: str) -> NoReturn:
    # `from None`: a JSON or Unicode error being handled holds the body, kept out of tracebacks.
    raise HookError(status, result, message) from None


def sign(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value for ``body``: ``sha256=`` and the HMAC-SHA256 in hex,
    keyed with the secret's UTF-8 bytes (what GitHub sends, and what clients and tests send)."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> None:
    """Check ``header`` (the ``X-Hub-Signature-256`` value) against the raw ``body``.

    The digest is compared in constant time; its hex may be in either case. Raises
    :class:`HookError` (401) for a missing, malformed or wrong signature, and for an empty
    secret, which anyone could sign with.
    """
    if not secret:
        _refuse(
            401,
            "bad_signature",
            "the webhook's secret is empty, so no delivery can be trusted;"
            " store a non-empty secret",
        )
    if header is None or not header.strip():
        _refuse(401, "bad_signature", f"the delivery has no {SIGNATURE_HEADER} header")
    match = _SIGNATURE.fullmatch(header.strip())
    if match is None:
        _refuse(
            401,
            "bad_signature",
            f"the {SIGNATURE_HEADER} header is not 'sha256=' followed by 64 hexadecimal digits",
        )
    expected = sign(secret, body).encode("ascii")
    given = b"sha256=" + match.group(1).lower().encode("ascii")
    if not hmac.compare_digest(expected, given):
        _refuse(
            401,
            "bad_signature",
            f"the {SIGNATURE_HEADER} signature does not match the body"
            " (is the webhook's secret the same on both sides?)",
        )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # A case-insensitive mapping (Starlette's Headers) answers get(); a plain dict may spell
    # the name in any case, so it is looked for among the keys as well.
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, item in headers.items():
        if key.lower() == wanted:
            return item
    return None


def delivery_id(headers: Mapping[str, str]) -> str | None:
    """The delivery's id, for starting one run per delivery: ``X-GitHub-Delivery``, else
    ``X-Flowray-Delivery``, stripped; None when neither is given (or both are blank).

    Raises :class:`HookError` (400) for an id over 200 characters or with control characters.
    """
    for name in DELIVERY_HEADERS:
        value = _header(headers, name)
        if value is None or not value.strip():
            continue
        value = value.strip()
        if len(value) > MAX_DELIVERY_ID:
            _refuse(
                400,
                "bad_request",
                f"the {name} header is {len(value)} characters long;"
                f" a delivery id has at most {MAX_DELIVERY_ID}",
            )
        if not value.isprintable():
            _refuse(400, "bad_request", f"the {name} header holds control characters")
        return value
    return None


class _NotJSON(ValueError):
    """A token Python's json module accepts but JSON does not (NaN, Infinity, 1e999)."""


def _constant(token: str) -> NoReturn:
    raise _NotJSON(f"{token} is not a JSON value")


def _finite(token: str) -> float:
    number = float(token)
    if not math.isfinite(number):
        # 1e999 would become inf, which no database JSON column and no JSON reader takes.
        raise _NotJSON("a number is too large")
    return number


def parse_body(body: bytes) -> dict[str, Any]:
    """The delivery's body: a JSON object in UTF-8, at most :data:`MAX_BODY` bytes.

    Raises :class:`HookError`: 413 for a larger body, 400 for anything but a JSON object
    (including NaN, Infinity, numbers too large for a float and lone UTF-16 surrogates, which
    no database JSON column takes, and nesting deeper than :data:`MAX_DEPTH`).
    """
    if len(body) > MAX_BODY:
        _refuse(
            413,
            "too_large",
            f"the body is {len(body)} bytes; a webhook body is at most {MAX_BODY} bytes (1 MiB)",
        )
    try:
        # A leading byte order mark is allowed, as RFC 8259 lets a reader choose.
        text = bytes(body).decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        _refuse(400, "bad_request", f"the body is not UTF-8 text (bad byte at offset {exc.start})")
    if not text.strip():
        _refuse(400, "bad_request", "the body is empty; a webhook delivery is a JSON object")
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        # exc.msg, not str(exc): the position is enough, and nothing of the body is repeated.
        _refuse(
            400,
            "bad_request",
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
        )
    except _NotJSON as exc:
        _refuse(400, "bad_request", f"the body is not valid JSON: {exc}")
    except ValueError:
        # The one other ValueError: an integer past Python's digit limit for conversions.
        _refuse(400, "bad_request", "the body is not valid JSON: a number has too many digits")
    except RecursionError:
        _refuse(400, "bad_request", _TOO_DEEP)
    if not isinstance(value, dict):
        _refuse(
            400,
            "bad_request",
            f"the body is {_json_kind(value)}; a webhook delivery is a JSON object",
        )
    _check_tree(value)
    return value


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "a JSON array"
    if isinstance(value, str):
        return "a JSON string"
    if isinstance(value, bool):
        return "JSON true" if value else "JSON false"
    if value is None:
        return "JSON null"
    return "a JSON number"


_TOO_DEEP = f"the body is nested too deeply (more than {MAX_DEPTH} levels of arrays and objects)"


def _check_tree(value: Any) -> None:
    """Refuse a body nested deeper than :data:`MAX_DEPTH`, or with a string (or key) that
    cannot be written as UTF-8 (a lone surrogate from a ``\\ud800`` escape)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                _refuse(400, "bad_request", _TOO_DEEP)
            inner = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            pending.extend((x, depth + 1) for x in inner)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                _refuse(
                    400,
                    "bad_request",
                    "the body holds a lone UTF-16 surrogate"
                    " (a \\ud800-\\udfff escape without its pair), which is not text",
                )


def passes(condition: str | bool | None, event: Mapping[str, Any]) -> bool:
    """Whether a delivery starts a run: the trigger's ``if`` evaluated with only ``event``.

    ``condition`` is written as a step's or job's ``if:`` is (``${{ ... }}`` or a bare
    expression) and means the same (flowray's own ``evaluate_condition``); None or blank
    passes. Raises :class:`HookError` (400) with the expression's error when it cannot be
    evaluated (a syntax error, an unknown context, bad JSON given to ``fromJSON``).
    """
    try:
        return expr.evaluate_condition(condition, {"event": event}, failed=False, cancelled=False)
    except expr.ExprError as exc:
        problem = exc.message
    except RecursionError:  # an event not from parse_body, deeper than MAX_DEPTH
        problem = "the event is nested too deeply"
    _refuse(400, "bad_request", f"the webhook trigger's if: cannot be evaluated: {problem}")
