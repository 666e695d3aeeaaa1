"""flowray.service.hooks: webhook signatures, delivery ids, bodies and the trigger's `if`."""

from __future__ import annotations

import hashlib
import hmac
import json
import pickle
from typing import Any

import pytest
from starlette.datastructures import Headers

from flowray.service.hooks import (
    MAX_BODY,
    HookError,
    delivery_id,
    parse_body,
    passes,
    sign,
    verify,
)

SECRET = "It's a Secret to Everybody"
BODY = b"Hello, World!"
# GitHub's documented example ("Validating webhook deliveries"): this secret, this body.
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

MISSING = "the delivery has no X-Hub-Signature-256 header"
MALFORMED = "the X-Hub-Signature-256 header is not 'sha256=' followed by 64 hexadecimal digits"
MISMATCH = ("the X-Hub-Signature-256 signature does not match the body"
            " (is the webhook's secret the same on both sides?)")


def refused(exc: pytest.ExceptionInfo[HookError]) -> tuple[int, str, str]:
    return exc.value.status, exc.value.result, str(exc.value)


# -- signatures -------------------------------------------------------------------------------

def test_sign_matches_githubs_example() -> None:
    assert sign(SECRET, BODY) == GITHUB_SIGNATURE
    assert sign("ünï", b"") == "sha256=" + hmac.new("ünï".encode(), b"", hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    "header",
    [
        GITHUB_SIGNATURE,
        GITHUB_SIGNATURE.upper().replace("SHA256=", "sha256="),  # uppercase hex
        "SHA256=" + GITHUB_SIGNATURE[7:],
        f"  {GITHUB_SIGNATURE}\t",
    ],
    ids=["github", "uppercase-hex", "uppercase-prefix", "padded"],
)
def test_good_signatures(header: str) -> None:
    verify(SECRET, BODY, header)


@pytest.mark.parametrize("header", [None, "", "   "], ids=["absent", "empty", "blank"])
def test_missing_signature(header: str | None) -> None:
    with pytest.raises(HookError) as info:
        verify(SECRET, BODY, header)
    assert refused(info) == (401, "bad_signature", MISSING)


@pytest.mark.parametrize(
    "header",
    [
        "sha1=" + hmac.new(SECRET.encode(), BODY, hashlib.sha1).hexdigest(),  # the old header's
        "sha512=" + GITHUB_SIGNATURE[7:],
        GITHUB_SIGNATURE[7:],  # no prefix
        "sha256:" + GITHUB_SIGNATURE[7:],
        "sha256 =" + GITHUB_SIGNATURE[7:],
        GITHUB_SIGNATURE[:-1],  # 63 digits
        GITHUB_SIGNATURE + "0",  # 65 digits
        GITHUB_SIGNATURE + GITHUB_SIGNATURE[7:],
        "sha256=",
        "sha256=" + "g" * 64,
        GITHUB_SIGNATURE[:-1] + "\u0660",  # an Arabic-Indic zero is a digit, not a hex digit
        "ſha256=" + GITHUB_SIGNATURE[7:],  # U+017F folds to 's' only without the ASCII rule
        f"{GITHUB_SIGNATURE}, {GITHUB_SIGNATURE}",
        f"sha256={GITHUB_SIGNATURE}",
    ],
    ids=["sha1", "sha512", "no-prefix", "colon", "space", "63", "65", "128", "empty-digest",
         "not-hex", "unicode-digit", "long-s", "twice", "double-prefix"],
)
def test_malformed_signatures(header: str) -> None:
    with pytest.raises(HookError) as info:
        verify(SECRET, BODY, header)
    assert refused(info) == (401, "bad_signature", MALFORMED)


@pytest.mark.parametrize(
    ("secret", "body", "header"),
    [
        ("another secret", BODY, GITHUB_SIGNATURE),
        (SECRET, b"Hello, World?", GITHUB_SIGNATURE),
        (SECRET, BODY + b"\n", GITHUB_SIGNATURE),
        (SECRET, b"", GITHUB_SIGNATURE),
        (SECRET, BODY, "sha256=" + "0" * 64),
        (SECRET, BODY, GITHUB_SIGNATURE[:-1] + "f"),
        (SECRET.upper(), BODY, GITHUB_SIGNATURE),
    ],
    ids=["other-secret", "other-body", "extra-newline", "empty-body", "zeros", "last-digit",
         "secret-case"],
)
def test_wrong_signatures(secret: str, body: bytes, header: str) -> None:
    with pytest.raises(HookError) as info:
        verify(secret, body, header)
    assert refused(info) == (401, "bad_signature", MISMATCH)


def test_every_changed_byte_of_the_body_is_caught() -> None:
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    header = sign(SECRET, body)
    for i in range(len(body)):
        changed = bytearray(body)
        changed[i] ^= 0x01
        with pytest.raises(HookError):
            verify(SECRET, bytes(changed), header)


def test_an_empty_secret_trusts_nothing() -> None:
    with pytest.raises(HookError) as info:
        verify("", BODY, sign("", BODY))
    assert refused(info) == (
        401, "bad_signature",
        "the webhook's secret is empty, so no delivery can be trusted; store a non-empty secret",
    )


def test_hook_error_keeps_its_data_through_pickle() -> None:
    back = pickle.loads(pickle.dumps(HookError(413, "too_large", "big")))
    assert (back.status, back.result, str(back), back.message) == (413, "too_large", "big", "big")


# -- delivery ids -----------------------------------------------------------------------------

UUID = "72d3162e-cc78-11e3-81ab-4c9367dc0958"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-GitHub-Delivery": UUID}, UUID),
        ({"x-github-delivery": UUID}, UUID),
        ({"X-GITHUB-DELIVERY": f"  {UUID}\t"}, UUID),
        ({"X-Flowray-Delivery": "build-17"}, "build-17"),
        ({"x-flowray-delivery": "lieferung-ü"}, "lieferung-ü"),  # headers are Latin-1
        ({"X-GitHub-Delivery": UUID, "X-Flowray-Delivery": "other"}, UUID),
        ({"X-GitHub-Delivery": "  ", "X-Flowray-Delivery": "other"}, "other"),
        ({"X-GitHub-Delivery": ""}, None),
        ({"Content-Type": "application/json"}, None),
        ({}, None),
        ({"X-Flowray-Delivery": "x" * 200}, "x" * 200),
    ],
    ids=["github", "lower", "upper-padded", "flowray", "unicode", "both", "github-blank",
         "empty", "none", "no-headers", "200"],
)
def test_delivery_id(headers: dict[str, str], expected: str | None) -> None:
    assert delivery_id(headers) == expected
    # Starlette's headers (what the service hands over) answer the same.
    assert delivery_id(Headers(headers=headers)) == expected


def test_delivery_id_too_long() -> None:
    with pytest.raises(HookError) as info:
        delivery_id(Headers(headers={"X-GitHub-Delivery": "x" * 201}))
    assert refused(info) == (
        400, "bad_request",
        "the X-GitHub-Delivery header is 201 characters long; a delivery id has at most 200",
    )
    with pytest.raises(HookError) as info:
        delivery_id({"x-flowray-delivery": " " + "y" * 5000})
    assert refused(info) == (
        400, "bad_request",
        "the X-Flowray-Delivery header is 5000 characters long; a delivery id has at most 200",
    )


@pytest.mark.parametrize("value", ["a\x00b", "a\x1bb", "a\nb", "a\u2028b", "a\x7fb"])
def test_delivery_id_with_control_characters(value: str) -> None:
    with pytest.raises(HookError) as info:
        delivery_id({"X-GitHub-Delivery": value})
    assert refused(info) == (
        400, "bad_request", "the X-GitHub-Delivery header holds control characters"
    )


DEEP = "the body is nested too deeply (more than 100 levels of arrays and objects)"


# -- bodies -----------------------------------------------------------------------------------

def test_bodies_that_parse() -> None:
    event = {"ref": "refs/heads/main", "n": 3, "f": 1.5, "ok": True, "none": None,
             "commits": [{"id": "a", "message": "ünï 😀\n"}], "nested": {"a": {"b": [1, [2]]}}}
    assert parse_body(json.dumps(event).encode()) == event
    assert parse_body(json.dumps(event, ensure_ascii=False).encode()) == event
    assert parse_body(b"{}") == {}
    assert parse_body(b"\xef\xbb\xbf{\"a\": 1}") == {"a": 1}  # a byte order mark is allowed
    assert parse_body(b'{"s": "\\ud83d\\ude00"}') == {"s": "😀"}  # a surrogate pair
    assert parse_body(b'{"big": 123456789012345678901234567890}') == {
        "big": 123456789012345678901234567890
    }
    assert parse_body(b'{"a":' * 99 + b"[]" + b"}" * 99) is not None  # 100 levels
    assert parse_body(b'{"a":' * 100 + b"1" + b"}" * 100) is not None


def test_body_size_limit() -> None:
    at_limit = b'{"a":"' + b"x" * (MAX_BODY - 8) + b'"}'
    assert len(at_limit) == MAX_BODY == 1024 * 1024
    assert parse_body(at_limit) == {"a": "x" * (MAX_BODY - 8)}

    over = b'{"a":"' + b"x" * (MAX_BODY - 7) + b'"}'
    with pytest.raises(HookError) as info:
        parse_body(over)
    assert refused(info) == (
        413, "too_large",
        "the body is 1048577 bytes; a webhook body is at most 1048576 bytes (1 MiB)",
    )
    with pytest.raises(HookError) as info:
        parse_body(b" " * (10 * MAX_BODY))
    assert refused(info) == (
        413, "too_large",
        "the body is 10485760 bytes; a webhook body is at most 1048576 bytes (1 MiB)",
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "the body is empty; a webhook delivery is a JSON object"),
        (b" \n\t", "the body is empty; a webhook delivery is a JSON object"),
        (b"[]", "the body is a JSON array; a webhook delivery is a JSON object"),
        (b'"push"', "the body is a JSON string; a webhook delivery is a JSON object"),
        (b"42", "the body is a JSON number; a webhook delivery is a JSON object"),
        (b"1.5", "the body is a JSON number; a webhook delivery is a JSON object"),
        (b"true", "the body is JSON true; a webhook delivery is a JSON object"),
        (b"false", "the body is JSON false; a webhook delivery is a JSON object"),
        (b"null", "the body is JSON null; a webhook delivery is a JSON object"),
        (b"payload=%7B%22a%22%3A1%7D",
         "the body is not valid JSON: Expecting value at line 1 column 1"),
        (b'{"ref": }', "the body is not valid JSON: Expecting value at line 1 column 9"),
        (b'{"ref": "refs/heads/main"} {}',
         "the body is not valid JSON: Extra data at line 1 column 28"),
        (b"{'ref': 'main'}",
         "the body is not valid JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
        (b'{\n  "a": 1,\n  "password": hunter2\n}',
         "the body is not valid JSON: Expecting value at line 3 column 15"),
        (b'{"a": NaN}', "the body is not valid JSON: NaN is not a JSON value"),
        (b'{"a": [Infinity]}', "the body is not valid JSON: Infinity is not a JSON value"),
        (b'{"a": -Infinity}', "the body is not valid JSON: -Infinity is not a JSON value"),
        (b'{"a": 1e999}', "the body is not valid JSON: a number is too large"),
        (b'{"a": ' + b"9" * 5000 + b"}",
         "the body is not valid JSON: a number has too many digits"),
        (b'{"a": "caf\xe9"}', "the body is not UTF-8 text (bad byte at offset 10)"),
        ('{"a": 1}'.encode("utf-16"), "the body is not UTF-8 text (bad byte at offset 0)"),
        (b"[" * 100_000, DEEP),
        (b'{"a":' * 100_000, DEEP),
        (b'{"a":' * 101 + b"1" + b"}" * 101, DEEP),
        (b'{"a": ' + b"[" * 100 + b"]" * 100 + b"}", DEEP),
        (b'{"a": "\\ud800"}',
         "the body holds a lone UTF-16 surrogate (a \\ud800-\\udfff escape without its pair),"
         " which is not text"),
        (b'{"\\udfff": 1}',
         "the body holds a lone UTF-16 surrogate (a \\ud800-\\udfff escape without its pair),"
         " which is not text"),
        (b'{"a": [{"b": ["\\ud83d x"]}]}',
         "the body holds a lone UTF-16 surrogate (a \\ud800-\\udfff escape without its pair),"
         " which is not text"),
    ],
    ids=["empty", "blank", "array", "string", "int", "float", "true", "false", "null", "form",
         "no-value", "extra", "single-quotes", "multi-line", "nan", "infinity",
         "minus-infinity", "huge-float", "huge-int", "latin-1", "utf-16", "deep-list",
         "deep-object", "101-objects", "101-levels", "lone-surrogate", "surrogate-key", "deep-surrogate"],
)
def test_bodies_refused(body: bytes, message: str) -> None:
    with pytest.raises(HookError) as info:
        parse_body(body)
    assert refused(info) == (400, "bad_request", message)


# -- the trigger's `if` -----------------------------------------------------------------------

PUSH: dict[str, Any] = {
    "ref": "refs/heads/main",
    "repository": {"full_name": "octo/repo", "private": False},
    "commits": [{"id": "a1", "message": "fix: a thing"}, {"id": "b2", "message": "[skip ci]"}],
    "forced": False,
    "size": 2,
}


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (None, True),
        ("", True),
        ("  ", True),
        (True, True),
        (False, False),
        ("${{ event.ref == 'refs/heads/main' }}", True),
        ("${{ event.ref == 'refs/heads/dev' }}", False),
        ("event.ref == 'refs/heads/main'", True),
        ("  ${{ event.ref != 'refs/heads/main' }}  ", False),
        ("event.REF == 'REFS/HEADS/MAIN'", True),  # names and strings ignore case, as in GitHub
        ("startsWith(event.ref, 'refs/heads/')", True),
        ("startsWith(event.ref, 'refs/tags/')", False),
        ("event.repository.full_name == 'octo/repo' && !event.repository.private", True),
        ("contains(event.commits.*.message, '[skip ci]')", True),  # on a list: an equal item
        ("contains(event.commits.*.message, 'skip')", False),
        ("!contains(join(event.commits.*.message), '[skip ci]')", False),
        ("event.size > 1", True),
        ("event.size", True),
        ("event.forced", False),
        ("event['repository']['full_name']", True),
        # Missing keys are null, never an error.
        ("event.missing", False),
        ("event.missing.deeper.still", False),
        ("event.missing == null", True),
        ("!event.missing", True),
        ("event.commits[5].id == 'a1'", False),
        # Status functions mean what they mean for a job with nothing failed before it.
        ("success()", True),
        ("always()", True),
        ("failure()", False),
        ("cancelled()", False),
        ("${{ 0 }}", False),
        ("${{ 'false' }}", True),  # a non-empty string is truthy, as in every flowray `if:`
    ],
)
def test_conditions(condition: str | bool | None, expected: bool) -> None:
    assert passes(condition, PUSH) is expected


def test_condition_sees_only_the_event() -> None:
    assert passes("event.a == 1", {"a": 1})
    assert not passes("event.a == 1", {})
    with pytest.raises(HookError) as info:
        passes("inputs.a == 1", {"a": 1})
    assert refused(info) == (
        400, "bad_request",
        "the webhook trigger's if: cannot be evaluated: unknown context 'inputs' at position 0"
        " in 'inputs.a == 1'",
    )


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("steps.build.outputs.ok",
         "unknown context 'steps' at position 0 in 'steps.build.outputs.ok'"),
        ("${{ secrets.TOKEN == 'x' }}",
         "unknown context 'secrets' at position 0 in \"secrets.TOKEN == 'x'\""),
        ("evnt.ref == 'main'",
         "unknown context 'evnt' (did you mean 'event'?) at position 0 in \"evnt.ref == 'main'\""),
        ("event.ref ==", "expected a value after '==' at position 12 in 'event.ref =='"),
        ("${{ event.ref }} and ${{ event.size }}",
         "a condition must be one expression, bare or inside a single '${{ }}' at position 21"
         " in '${{ event.ref }} and ${{ event.size }}'"),
        ("${{ event.ref", "unclosed '${{' (no matching '}}') at position 0 in '${{ event.ref'"),
        ("nosuch(event)", "unknown function 'nosuch' at position 0 in 'nosuch(event)'"),
        ("fromJSON('{')",
         "fromJSON() got invalid JSON '{': Expecting property name enclosed in double quotes"
         " at line 1 column 2 at position 0 in \"fromJSON('{')\""),
    ],
    ids=["steps", "secrets", "typo", "syntax", "two-templates", "unclosed", "function",
         "from-json"],
)
def test_conditions_that_cannot_be_evaluated(condition: str, message: str) -> None:
    with pytest.raises(HookError) as info:
        passes(condition, PUSH)
    assert refused(info) == (
        400, "bad_request", f"the webhook trigger's if: cannot be evaluated: {message}"
    )


def test_the_deepest_body_still_works_in_a_condition() -> None:
    text = '{"x":' * 99 + '"leaf"' + "}" * 99
    event = parse_body(text.encode())
    assert passes("event" + ".x" * 50 + " != null", event)
    assert passes("contains(toJSON(event), 'leaf')", event)
