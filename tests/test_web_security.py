"""The web page's defenses, attacked against a real `flowray serve` (uvicorn on a free port,
SQLite) and, for what only a browser can show, a real headless Chromium.

What is attacked: the sign-in (its cookie's attributes, what the database keeps, login CSRF
from another site or another port of the same host, a planted cookie), changes made with the
cookie (no CSRF header, a wrong or another session's one, a foreign or ``null`` Origin),
the ends of a session (its token revoked, sign-out, expiry), a viewer's session reaching for
more, the headers of every kind of answer (the page's policy, the safety headers, caching),
``/static/`` reaching outside its folder (``..``, encodings, symbolic links planted in a copy
of the package), HTML artifacts, the cookie at ``/hooks/``, and markup in every place a flow,
a run or a person can put text on the page.

The browser checks need Debian's chromium (/usr/bin/chromium) and Python Playwright; without
them they are skipped, saying which is missing.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import httpx
import pytest

from tests.servicefixtures import Served, push, serving, wait_run

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "flowray" / "web" / "static"
CHROMIUM = Path("/usr/bin/chromium")

COOKIE = "flowray_session"
CSRF = "X-Flowray-CSRF"
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
          "img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; "
          "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SAFETY = {"x-content-type-options": "nosniff", "x-frame-options": "DENY",
          "referrer-policy": "no-referrer"}
NEEDS_CSRF = {"error": "a request made with the page's sign-in needs its X-Flowray-CSRF header"}
FOREIGN = {"error": "a change made with the page's sign-in must come from the page itself "
                    "(Origin)"}
ENDED = {"error": "the sign-in has ended: sign in again"}

# Markup that would run if the page ever put text in as HTML: each sets window.__xss and opens
# a dialog. The image one has no '/', so that it can be a flow's name.
IMG = "<img src=x onerror=window.__xss=1;alert(1)>"
SCRIPT = "<script>window.__xss=2;alert(2)</script>"
SVG = "<svg onload=window.__xss=3;alert(3)>"
PAYLOAD = f"{IMG} {SCRIPT} {SVG}"
FLOW = f"web {IMG}"


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# Every place a flow, a run or a person puts text on the page holds markup: the flow's name,
# a job's and a step's name, an input's description and value, matrix values, outputs, log
# lines (plain and coloured), a test case's name, message and text, a job's warning.
XSS_FLOW = f"""\
name: '{FLOW}'
triggers:
  manual:
    inputs:
      note: {{type: string, default: plain, description: '{IMG} described'}}
jobs:
  shown:
    name: 'job {SCRIPT} {IMG}'
    outputs: {{said: "${{{{ steps.s.outputs.said }}}}"}}
    reports: [junit.xml]
    artifacts: [evil.html, 'missing-{IMG}.bin']
    steps:
      - id: s
        name: 'step {IMG} {SCRIPT}'
        env: {{P: "${{{{ inputs.note }}}}"}}
        run: |
          echo "$P"
          printf '\\033[31m%s\\033[0m\\n' "$P"
          echo "said=$P" >> "$FLOWRAY_OUTPUT"
          echo '{SCRIPT}' > evil.html
          cat > junit.xml <<'XML'
          <testsuite name="s" tests="1" failures="1"><testcase classname="{_xml(SVG)}" name="{_xml(IMG)}"><failure message="{_xml(PAYLOAD)}">{_xml(SCRIPT)} traceback</failure></testcase></testsuite>
          XML
  cells:
    strategy:
      matrix:
        v: ['{IMG}', '{SCRIPT}']
    outputs:
      echoed: "${{{{ steps.e.outputs.echoed }}}}"
      score: "${{{{ steps.e.outputs.score }}}}"
    steps:
      - id: e
        env: {{V: "${{{{ matrix.v }}}}"}}
        run: |
          echo "echoed=$V" >> "$FLOWRAY_OUTPUT"
          echo "score=${{#V}}" >> "$FLOWRAY_OUTPUT"
"""
PLAIN = "name: plain\njobs:\n  a:\n    steps:\n      - run: echo plain\n"
HOOKED = """\
name: hooked
triggers:
  webhook:
    secret: HOOK_KEY
jobs:
  a:
    steps:
      - run: 'true'
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("serve")) as server:
        yield server


@pytest.fixture(scope="module")
def flows(served: Served) -> None:
    """The module's flows, pushed once."""
    with served.client() as admin:
        for name, text in (("plain", PLAIN), ("hooked", HOOKED), (FLOW, XSS_FLOW)):
            got = push(admin, name, text)
            assert got.status_code == 201, got.text
        assert admin.put("/api/v1/secrets/HOOK_KEY", json={"value": "hook-key-1"}
                         ).status_code == 204


@pytest.fixture(scope="module")
def xss_run(served: Served, flows: None) -> str:
    """A finished run of the flow full of markup, its input holding markup too."""
    with served.client() as admin:
        started = admin.post(f"/api/v1/flows/{quote(FLOW, safe='')}/runs",
                             json={"inputs": {"note": PAYLOAD}})
        assert started.status_code == 201, started.text
        run_id: str = started.json()["id"]
        done = wait_run(admin, run_id)
    assert done["status"] == "success", done
    return run_id


@dataclass
class PageSession:
    """A sign-in as the web page makes it: the cookie's value and the answer's fields."""

    served: Served
    cookie: str
    csrf: str
    name: str
    role: str

    def client(self, *, csrf: str | None = None, origin: str | None = None) -> httpx.Client:
        """A client that sends the cookie (and, when given, a CSRF header and an Origin),
        as a browser does; no Authorization header."""
        headers = {"Cookie": f"{COOKIE}={self.cookie}"}
        if csrf is not None:
            headers[CSRF] = csrf
        if origin is not None:
            headers["Origin"] = origin
        return httpx.Client(base_url=self.served.url, timeout=30, headers=headers)


def sign_in(served: Served, token: str) -> PageSession:
    got = httpx.post(served.url + "/api/v1/session", json={"token": token},
                     headers={"Origin": served.url}, timeout=30)
    assert got.status_code == 201, got.text
    cookie = got.cookies[COOKIE]
    answer = got.json()
    return PageSession(served, cookie, answer["csrf"], answer["name"], answer["role"])


def new_token(served: Served, name: str, role: str) -> str:
    with served.client() as admin:
        made = admin.post("/api/v1/tokens", json={"name": name, "role": role})
    assert made.status_code == 201, made.text
    token: str = made.json()["token"]
    return token


def cookie_parts(header: str) -> tuple[str, str, set[str]]:
    """(name, value, the attributes as written) of one Set-Cookie header."""
    first, *attributes = [part.strip() for part in header.split(";")]
    name, _, value = first.partition("=")
    return name, value, set(attributes)


def raw_get(served: Served, target: str) -> tuple[int, dict[str, str], bytes]:
    """GET ``target`` exactly as written: httpx would remove its dot segments first."""
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    try:
        conn.request("GET", target)
        answer = conn.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        conn.close()


def db_bytes(served: Served) -> bytes:
    """Every byte of the service's SQLite database (its write-ahead log too)."""
    folder = Path(served.data_dir)
    return b"".join(p.read_bytes() for p in sorted(folder.glob("flowray.db*")))


def sql(served: Served, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(os.path.join(served.data_dir, "flowray.db"), timeout=30)
    try:
        with db:
            return db.execute(statement, args).fetchall()
    finally:
        db.close()


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def assert_safe(answer: httpx.Response | dict[str, str], what: str) -> None:
    headers = answer.headers if isinstance(answer, httpx.Response) else answer
    assert {k: headers.get(k) for k in SAFETY} == SAFETY, what


# ---------------------------------------------------------------------- sign-in


def test_sign_in_sets_a_strict_httponly_cookie_and_keeps_only_its_hash(served: Served) -> None:
    url = served.url + "/api/v1/session"
    bad = httpx.post(url, json={"token": "frt_not-a-token"})
    assert (bad.status_code, bad.json()) == (401, {"error": "the token is not valid"})
    assert "set-cookie" not in bad.headers
    empty = httpx.post(url, json={"token": ""})
    assert (empty.status_code, empty.json()) == (
        422, {"error": "token: String should have at least 1 character"})

    good = httpx.post(url, json={"token": served.token})
    assert good.status_code == 201, good.text
    assert len(good.headers.get_list("set-cookie")) == 1
    name, value, attributes = cookie_parts(good.headers["set-cookie"])
    # Plain http: no Secure (a browser would drop a Secure cookie sent over http).
    assert (name, attributes) == (COOKIE, {"HttpOnly", "SameSite=strict", "Path=/",
                                           "Max-Age=43200"})
    answer = good.json()
    assert sorted(answer) == ["csrf", "name", "role"]
    assert (answer["name"], answer["role"]) == ("admin", "admin")
    assert len(answer["csrf"]) == 43 and answer["csrf"] != value
    assert served.token not in good.text and value not in good.text
    assert good.headers["cache-control"] == "no-store"

    # A second sign-in is another session: another cookie, another CSRF value.
    other = httpx.post(url, json={"token": served.token})
    assert other.cookies[COOKIE] != value and other.json()["csrf"] != answer["csrf"]

    # The database keeps hashes of each session id and CSRF value, never them, nor the token.
    rows = sql(served, "SELECT hash, token_hash, csrf_hash FROM sessions WHERE hash = ?",
               sha256(value))
    assert rows == [(sha256(value), sha256(served.token), sha256(answer["csrf"]))]
    stored = db_bytes(served)
    for secret in (value, other.cookies[COOKIE], served.token, answer["csrf"]):
        assert secret.encode() not in stored

    # Who the session is: never its CSRF value again (only the sign-in's answer holds it).
    me = httpx.get(url, headers={"Cookie": f"{COOKIE}={value}", CSRF: answer["csrf"]})
    assert (me.status_code, me.json()) == (200, {"name": "admin", "role": "admin"})
    assert me.headers["cache-control"] == "no-store"
    # The cookie alone opens nothing, not even who it is: browsers send it to every port of
    # this host, where another server may be listening.
    alone = httpx.get(url, headers={"Cookie": f"{COOKIE}={value}"})
    assert (alone.status_code, alone.json()) == (403, NEEDS_CSRF)
    nobody = httpx.get(url)
    assert (nobody.status_code, nobody.json()) == (401, {"error": "not signed in"})


def test_another_site_cannot_sign_the_browser_in(served: Served) -> None:
    """Login CSRF: a page elsewhere (another host, another port of this one, a sandboxed
    frame) posting a token of its own would sign the user in as its owner."""
    url = served.url + "/api/v1/session"
    port = served.port
    for origin in ("http://evil.example", f"http://127.0.0.1:{port + 1}", "null",
                   f"https://127.0.0.1:{port}.evil.example"):
        got = httpx.post(url, json={"token": served.token}, headers={"Origin": origin})
        assert (got.status_code, got.json()) == (
            403, {"error": "a sign-in must come from the page itself (Origin)"}), origin
        assert "set-cookie" not in got.headers
    # A form cannot send JSON: a text/plain body shaped as JSON (a form's name=value with a
    # duplicate key taking the '=') is not read as JSON, Origin or not.
    body = '{"token":"=","token":"' + served.token + '"}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        got = httpx.post(url, content=body, headers={"content-type": content_type})
        assert (got.status_code, got.json()) == (422, {
            "error": "body: Input should be a valid dictionary or object to extract fields "
                     "from"}), content_type
        assert "set-cookie" not in got.headers


def test_a_cookie_the_server_did_not_issue_opens_nothing(served: Served) -> None:
    """Session fixation: an id planted in the browser is never adopted; a sign-in gets a
    fresh one from the server."""
    planted = "attacker-chosen-session-id-0123456789abcdef"
    headers = {"Cookie": f"{COOKIE}={planted}"}
    got = httpx.get(served.url + "/api/v1/flows", headers=headers)
    assert (got.status_code, got.json()) == (401, ENDED)
    signed = httpx.post(served.url + "/api/v1/session", json={"token": served.token},
                        headers=headers)
    assert signed.status_code == 201
    assert signed.cookies[COOKIE] != planted
    assert httpx.get(served.url + "/api/v1/flows", headers=headers).status_code == 401
    assert sql(served, "SELECT count(*) FROM sessions WHERE hash = ?", sha256(planted)) == [(0,)]
    # Tokens and session ids are kept as hashes of one kind, in two tables: neither opens
    # the other's door, nor does the CSRF value open either.
    session, csrf = signed.cookies[COOKIE], signed.json()["csrf"]
    for as_cookie in (served.token, csrf):
        got = httpx.get(served.url + "/api/v1/flows", headers={"Cookie": f"{COOKIE}={as_cookie}"})
        assert (got.status_code, got.json()) == (401, ENDED)
    for as_token in (session, csrf):
        got = httpx.get(served.url + "/api/v1/flows",
                        headers={"Authorization": f"Bearer {as_token}"})
        assert (got.status_code, got.json()) == (401, {"error": "the token is not valid"})


# ---------------------------------------------------------------------- CSRF


def test_changes_made_with_the_cookie_need_the_csrf_header_and_this_origin(
        served: Served, flows: None) -> None:
    session = sign_in(served, served.token)
    someone = sign_in(served, served.token)  # another session's value must not do
    port = served.port
    changes: list[tuple[str, str, Any]] = [
        ("PUT", "/api/v1/variables/WEB_V", {"value": "1"}),
        ("POST", "/api/v1/flows/plain/runs", {}),
        ("PUT", "/api/v1/flows/plain", {"text": PLAIN}),
        ("DELETE", "/api/v1/flows/plain", None),
        ("POST", "/api/v1/tokens", {"name": "csrf-made", "role": "admin"}),
        ("PUT", "/api/v1/secrets/WEB_S", {"value": "s"}),
        ("POST", "/api/v1/validate", {"text": PLAIN}),
        ("DELETE", "/api/v1/session", None),
    ]
    refusals: list[tuple[str | None, str | None, dict[str, str]]] = [
        (None, None, NEEDS_CSRF),
        ("", None, NEEDS_CSRF),
        ("0" * 64, None, NEEDS_CSRF),
        (session.csrf.upper(), None, NEEDS_CSRF),
        (someone.csrf, None, NEEDS_CSRF),
        (session.csrf, "http://evil.example", FOREIGN),
        (session.csrf, f"http://127.0.0.1:{port + 1}", FOREIGN),  # same site, another port
        (session.csrf, "null", FOREIGN),
    ]
    runs_before = len(httpx.get(served.url + "/api/v1/runs", headers={
        "Authorization": f"Bearer {served.token}"}).json()["runs"])
    for csrf, origin, message in refusals:
        with session.client(csrf=csrf, origin=origin) as client:
            for method, path, body in changes:
                got = client.request(method, path, json=body)
                assert (got.status_code, got.json()) == (403, message), (method, path, csrf,
                                                                         origin)
    with served.client() as admin:
        # nothing changed: no variable, secret, token or run; the flow is still there
        assert admin.get("/api/v1/variables/WEB_V").status_code == 404
        assert admin.get("/api/v1/secrets/WEB_S").status_code == 404
        assert "csrf-made" not in admin.get("/api/v1/tokens").text
        assert len(admin.get("/api/v1/runs").json()["runs"]) == runs_before
        assert admin.get("/api/v1/flows/plain").status_code == 200
    # reads need the CSRF value too (a header, or ?csrf= where a browser sends no headers),
    # but no Origin
    with session.client() as reader:
        got = reader.get("/api/v1/flows")
        assert (got.status_code, got.json()) == (403, NEEDS_CSRF)
        got = reader.get("/api/v1/runs", params={"limit": 1, "csrf": someone.csrf})
        assert (got.status_code, got.json()) == (403, NEEDS_CSRF)
        assert reader.get("/api/v1/runs", params={"limit": 1, "csrf": session.csrf}
                          ).status_code == 200
        # ... and the query's value never stands in for the header on a change
        got = reader.put("/api/v1/variables/WEB_V", params={"csrf": session.csrf},
                         json={"value": "1"})
        assert (got.status_code, got.json()) == (403, NEEDS_CSRF)
    with session.client(csrf=session.csrf) as reader:
        assert reader.get("/api/v1/flows").status_code == 200
    # the page itself: its header, its Origin (or none, as some same-origin requests have)
    started = []
    for origin in (served.url, None):
        with session.client(csrf=session.csrf, origin=origin) as page:
            assert page.put("/api/v1/variables/WEB_V", json={"value": "1"}).status_code == 204
            got = page.post("/api/v1/flows/plain/runs", json={})
            assert got.status_code == 201, got.text
            started.append(got.json()["id"])
            assert page.delete("/api/v1/variables/WEB_V").status_code == 204
    with served.client() as admin:
        for run_id in started:
            wait_run(admin, run_id)
    # A bearer token is no ambient credential: it needs neither, as before.
    with served.client() as admin:
        got = admin.put("/api/v1/variables/WEB_V", json={"value": "2"},
                        headers={"Origin": "http://evil.example"})
        assert got.status_code == 204
    # A wrong bearer token next to a good cookie is refused: the cookie is no fallback.
    with session.client(csrf=session.csrf) as client:
        got = client.get("/api/v1/flows", headers={"Authorization": "Bearer frt_wrong"})
        assert (got.status_code, got.json()) == (401, {"error": "the token is not valid"})


# ---------------------------------------------------------------------- ends of a session


def test_a_session_ends_with_its_token_with_sign_out_and_when_it_expires(
        served: Served) -> None:
    flows = "/api/v1/flows"
    # revoking the token ends its page sessions at once
    token = new_token(served, "web-admin", "admin")
    session = sign_in(served, token)
    with session.client(csrf=session.csrf) as client:
        assert client.get(flows).status_code == 200
        with served.client() as admin:
            assert admin.delete("/api/v1/tokens/web-admin").status_code == 204
        got = client.get(flows)
        assert (got.status_code, got.json()) == (401, ENDED)
        got = client.get("/api/v1/session")
        assert (got.status_code, got.json()) == (401, ENDED)
    with session.client(csrf=session.csrf) as client:
        got = client.put("/api/v1/variables/AFTER", json={"value": "1"})
        assert (got.status_code, got.json()) == (401, ENDED)

    # sign-out needs the CSRF header (no other site signs the user out) ...
    session = sign_in(served, served.token)
    with session.client() as client:
        got = client.delete("/api/v1/session")
        assert (got.status_code, got.json()) == (403, NEEDS_CSRF)
    with session.client(csrf=session.csrf) as client:
        assert client.get(flows).status_code == 200
    # ... ends the session, and clears the cookie
    with session.client(csrf=session.csrf) as client:
        got = client.delete("/api/v1/session")
        assert got.status_code == 204
        name, value, attributes = cookie_parts(got.headers["set-cookie"])
        assert (name, value) == (COOKIE, '""')
        assert {a for a in attributes if not a.startswith("expires=")} == {
            "HttpOnly", "Max-Age=0", "Path=/", "SameSite=strict"}
        got = client.get(flows)
        assert (got.status_code, got.json()) == (401, ENDED)
    assert sql(served, "SELECT count(*) FROM sessions WHERE hash = ?",
               sha256(session.cookie)) == [(0,)]

    # a session past its end is refused, and the next sign-in removes it
    session = sign_in(served, served.token)
    sql(served, "UPDATE sessions SET expires = ? WHERE hash = ?", time.time() - 1,
        sha256(session.cookie))
    with session.client(csrf=session.csrf) as client:
        got = client.get(flows)
        assert (got.status_code, got.json()) == (401, ENDED)
    sign_in(served, served.token)
    assert sql(served, "SELECT count(*) FROM sessions WHERE hash = ?",
               sha256(session.cookie)) == [(0,)]


def test_a_viewer_s_session_reads_and_nothing_more(served: Served, flows: None) -> None:
    session = sign_in(served, new_token(served, "web-viewer", "viewer"))
    assert (session.name, session.role) == ("web-viewer", "viewer")
    needs_runner = {"error": "the token 'web-viewer' has the role viewer; this needs runner "
                             "or admin"}
    needs_admin = {"error": "the token 'web-viewer' has the role viewer; this needs admin"}
    with session.client(csrf=session.csrf, origin=served.url) as client:
        assert client.get("/api/v1/flows").status_code == 200
        assert client.get("/api/v1/variables").status_code == 200
        for method, path, body, message in (
                ("POST", "/api/v1/flows/plain/runs", {}, needs_runner),
                ("GET", "/api/v1/secrets", None, needs_admin),
                ("GET", "/api/v1/secrets/HOOK_KEY", None, needs_admin),
                ("PUT", "/api/v1/secrets/X", {"value": "v"}, needs_admin),
                ("PUT", "/api/v1/flows/plain", {"text": PLAIN}, needs_admin),
                ("DELETE", "/api/v1/flows/plain", None, needs_admin),
                ("PUT", "/api/v1/variables/X", {"value": "v"}, needs_admin),
                ("POST", "/api/v1/tokens", {"name": "mine", "role": "admin"}, needs_admin),
                ("GET", "/api/v1/tokens", None, needs_admin)):
            got = client.request(method, path, json=body)
            assert (got.status_code, got.json()) == (403, message), (method, path)


# ---------------------------------------------------------------------- headers


def test_an_open_event_stream_ends_with_its_sign_in(served: Served, tmp_path: Path) -> None:
    """A stream is checked again while it is open (every few seconds): signing out, or
    revoking the token it was opened with, ends it though its run goes on."""
    gate = tmp_path / "gate"
    with served.client() as admin:
        push(admin, "waits", "name: waits\njobs:\n  w:\n    steps:\n"
                             f"      - run: while [ ! -e {gate} ]; do sleep 0.1; done\n")
        run_id = admin.post("/api/v1/flows/waits/runs", json={}).json()["id"]
    token = new_token(served, "streamer", "viewer")
    session = sign_in(served, served.token)
    ways: list[tuple[dict[str, str], Any]] = [
        ({"Cookie": f"{COOKIE}={session.cookie}", CSRF: session.csrf},
         lambda: session.client(csrf=session.csrf).delete("/api/v1/session")),
        ({"Authorization": f"Bearer {token}"},
         lambda: served.client().delete("/api/v1/tokens/streamer")),
    ]
    try:
        for headers, end in ways:
            with httpx.stream("GET", f"{served.url}/api/v1/runs/{run_id}/events",
                              headers=headers, timeout=30) as stream:
                assert stream.status_code == 200
                lines = stream.iter_lines()
                assert next(lines) == "retry: 1000"
                assert end().status_code == 204
                rest = list(lines)  # ends by itself: a read timeout would fail here
            assert not any('"run.finished"' in line for line in rest)
    finally:
        gate.write_text("")
        with served.client() as admin:
            assert wait_run(admin, run_id)["status"] == "success"


def test_every_answer_has_the_safety_headers_and_api_answers_are_not_stored(
        served: Served, xss_run: str) -> None:
    session = sign_in(served, served.token)
    page = web_page_document()
    for path in ("/", "/sign-in", "/flows", "/flows/new", "/flows/x/start", "/runs",
                 f"/runs/{xss_run}", f"/runs/{xss_run}/sweep", "/secrets", "/variables"):
        got = httpx.get(served.url + path)
        assert (got.status_code, got.content) == (200, page), path
        assert got.headers["content-type"] == "text/html; charset=utf-8"
        assert got.headers["content-security-policy"] == POLICY, path
        assert_safe(got, path)

    bearer = {"Authorization": f"Bearer {served.token}"}
    cookie = {"Cookie": f"{COOKIE}={session.cookie}", CSRF: session.csrf}
    log = f"/api/v1/runs/{xss_run}/logs/shown/0"
    answers: list[tuple[str, str, dict[str, str], dict[str, Any], int]] = [
        # (method, path, headers, request options, status); API answers come last
        ("GET", "/nope", {}, {}, 404),
        ("GET", "/static/app.css", {}, {}, 200),
        ("GET", "/static/js/app.js", {}, {}, 200),
        ("GET", "/static/nope.js", {}, {}, 404),
        ("GET", "/healthz", {}, {}, 200),
        ("GET", "/metrics", {}, {}, 200),
        ("POST", "/hooks/nope", {}, {}, 404),
        ("GET", "/api/v1/flows", {}, {}, 401),  # refused by the guard, before the app
        ("GET", "/api/v1/flows/a%00", bearer, {}, 400),  # the guard's too
        ("POST", "/api/v1/validate", bearer, {"content": _chunks(17)}, 413),  # the guard's
        ("GET", "/api/v1/flows", bearer, {}, 200),
        ("GET", "/api/v1/flows", cookie, {}, 200),
        ("GET", "/api/v1/runs/nope", cookie, {}, 404),
        ("GET", "/api/v1/flows/plain?version=0", cookie, {}, 422),
        ("PUT", "/api/v1/variables/X", {"Cookie": f"{COOKIE}={session.cookie}"},
         {"json": {"value": "v"}}, 403),
        ("GET", "/api/v1/flows", {"Cookie": f"{COOKIE}=gone"}, {}, 401),
        ("GET", f"/api/v1/runs/{xss_run}", cookie, {}, 200),
        ("GET", log, cookie, {}, 200),
        ("GET", f"/api/v1/runs/{xss_run}/artifacts/shown/evil.html", cookie, {}, 200),
        ("GET", "/api/v1/variables", cookie, {}, 200),
    ]
    for method, path, headers, options, status in answers:
        got = httpx.request(method, served.url + path, headers=headers, **options)
        assert got.status_code == status, (path, got.text)
        assert_safe(got, path)
        if path.startswith("/api/"):
            # an answer for one caller, kept nowhere: not by the browser after sign-out,
            # not by a proxy between
            assert got.headers.get("cache-control") == "no-store", path
    # the run's event stream keeps its own (no-cache: a stream is never stored whole)
    with httpx.stream("GET", f"{served.url}/api/v1/runs/{xss_run}/events",
                      headers=cookie) as stream:
        assert stream.status_code == 200
        assert_safe(dict(stream.headers), "events")
        assert stream.headers["cache-control"] == "no-cache"
    # a log is text, never a document
    got = httpx.get(served.url + log, headers=cookie)
    assert got.headers["content-type"] == "text/plain; charset=utf-8"
    assert PAYLOAD in got.text
    # An HTML artifact (a step wrote it: it may hold anything) is a download, never a page
    # of this origin.
    got = httpx.get(f"{served.url}/api/v1/runs/{xss_run}/artifacts/shown/evil.html",
                    headers=cookie)
    assert got.headers["content-disposition"] == 'attachment; filename="evil.html"'
    assert got.text == SCRIPT + "\n"


def web_page_document() -> bytes:
    return (ROOT / "flowray" / "web" / "page.html").read_bytes()


def _chunks(mib: int) -> Iterator[bytes]:
    """A body sent in pieces (chunked: no Content-Length to refuse it by)."""
    for _ in range(mib):
        yield b"x" * (1 << 20)


# ---------------------------------------------------------------------- /static/


def test_static_serves_its_folder_only_and_javascript_as_javascript(served: Served) -> None:
    not_found = (404, b'{"error":"not found"}')
    for target in ("/static/../page.html", "/static/%2e%2e/page.html",
                   "/static/%2E%2E/page.html", "/static/js/../../page.html",
                   "/static/js/%2e%2e/%2e%2e/__init__.py", "/static/..%2fpage.html",
                   "/static/%2e%2e%2fpage.html", "/static/%252e%252e/page.html",
                   "/static/..%5cpage.html", "/static/js/..%2f..%2f..%2fservice%2fapp.py",
                   "//static/../page.html", "/static//etc/passwd", "/static/%2fetc%2fpasswd",
                   "/static/", "/static/js", "/static/js/", "/static/vendor/"):
        status, headers, body = raw_get(served, target)
        assert (status, body) == not_found, target
        assert_safe(headers, target)
    scripts = sorted(STATIC.glob("js/*.js")) + sorted(STATIC.glob("vendor/*.js"))
    assert len(scripts) > 10
    for path in scripts:
        rel = path.relative_to(STATIC).as_posix()
        got = httpx.get(f"{served.url}/static/{rel}")
        assert (got.status_code, got.content) == (200, path.read_bytes()), rel
        # a module script with another type is refused by the browser (nosniff is on)
        assert got.headers["content-type"].split(";")[0] in ("text/javascript",
                                                             "application/javascript"), rel


def test_static_does_not_follow_a_link_out_of_its_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Links planted in the static folder of a copy of the package, served by a real
    `flowray serve` of that copy: none is followed out of the folder."""
    copy = tmp_path / "pkg"
    shutil.copytree(ROOT / "flowray", copy / "flowray",
                    ignore=shutil.ignore_patterns("__pycache__"))
    static = copy / "flowray" / "web" / "static"
    outside = tmp_path / "outside-secret.txt"
    outside.write_text("not for the web\n")
    (static / "only-in-copy.txt").write_text("served from the copy\n")
    (static / "absolute.txt").symlink_to(outside)
    (static / "relative.txt").symlink_to(os.path.relpath(outside, static))
    (static / "js" / "etc").symlink_to("/etc")
    (static / "page-link.html").symlink_to(static.parent / "page.html")
    (static / "inside.css").symlink_to(static / "app.css")  # stays inside: may be served
    # `python -m` puts its working directory first on sys.path: not the repository's
    monkeypatch.chdir(tmp_path)
    with serving(tmp_path / "serve", env={"PYTHONPATH": str(copy)}) as server:
        got = httpx.get(server.url + "/static/only-in-copy.txt")
        assert (got.status_code, got.text) == (200, "served from the copy\n")
        for rel in ("absolute.txt", "relative.txt", "js/etc/passwd", "js/etc/hostname",
                    "page-link.html"):
            got = httpx.get(f"{server.url}/static/{rel}")
            assert (got.status_code, got.json()) == (404, {"error": "not found"}), rel
        got = httpx.get(server.url + "/static/inside.css")
        assert (got.status_code, got.content) == (200, (static / "app.css").read_bytes())


# ---------------------------------------------------------------------- /hooks/


def test_the_session_cookie_opens_no_webhook(served: Served, flows: None) -> None:
    session = sign_in(served, served.token)
    with served.client() as admin:
        before = len(admin.get("/api/v1/runs?flow=hooked").json()["runs"])
    unsigned = {"error": "the delivery has no X-Hub-Signature-256 header"}
    for headers in ({}, {"Cookie": f"{COOKIE}={session.cookie}", CSRF: session.csrf,
                         "Origin": served.url}):
        got = httpx.post(served.url + "/hooks/hooked", json={"ref": "x"}, headers=headers)
        assert (got.status_code, got.json()) == (401, unsigned), headers
    with served.client() as admin:
        assert len(admin.get("/api/v1/runs?flow=hooked").json()["runs"]) == before


def test_names_of_secrets_and_variables_cannot_hold_markup(served: Served) -> None:
    """The secrets page shows names only; a name is an identifier, so it holds no markup."""
    session = sign_in(served, served.token)
    with session.client(csrf=session.csrf, origin=served.url) as page:
        for kind in ("secrets", "variables"):
            got = page.put(f"/api/v1/{kind}/{quote(IMG, safe='')}", json={"value": "v"})
            assert (got.status_code, got.json()) == (422, {
                "error": f"'{IMG}' is not a name: letters, digits and '_', not starting "
                         "with a digit"}), kind


# ---------------------------------------------------------------------- in a browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"browser checks skipped: {CHROMIUM} not found (Debian's chromium package)")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("browser checks skipped: Python Playwright is not installed "
                    "(pip install playwright)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"])
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Watched:
    """A page with what must never happen on it: dialogs, requests leaving the service."""

    page: Page
    dialogs: list[str]
    elsewhere: list[str]


def open_page(browser: Browser, served: Served, *, bypass_csp: bool) -> Watched:
    context = browser.new_context(bypass_csp=bypass_csp, viewport={"width": 1280,
                                                                   "height": 900})
    page = context.new_page()
    # No wall-clock bound on waits: pytest-timeout ends a test that hangs.
    page.set_default_timeout(0)
    watched = Watched(page, [], [])

    def on_dialog(dialog: Any) -> None:
        watched.dialogs.append(dialog.message)
        dialog.dismiss()

    def on_request(request: Any) -> None:
        if not request.url.startswith(served.url + "/") and not request.url.startswith(
                ("data:", "blob:")):
            watched.elsewhere.append(request.url)

    page.on("dialog", on_dialog)
    page.on("request", on_request)
    return watched


def sign_in_through_the_page(watched: Watched, served: Served, *, path: str = "/sign-in"
                             ) -> None:
    page = watched.page
    page.goto(served.url + path)
    page.get_by_label("Token").fill(served.token)
    page.get_by_role("button", name="Sign in").click()


# What markup the page would hold if any text had gone in as HTML: an element a payload
# makes, or an event-handler attribute (the page's own handlers are listeners, never
# attributes). The page's one script is its module.
INJECTED = """() => {
  const made = [...document.querySelectorAll(
    "img, script:not([src='/static/js/app.js']), svg:not(.edges), iframe, object, embed")];
  const handlers = [...document.querySelectorAll("*")].filter((el) =>
    [...el.attributes].some((a) => a.name.toLowerCase().startsWith("on")));
  return [...made, ...handlers].map((el) => el.outerHTML.slice(0, 200));
}"""


def settle(watched: Watched, selector: str, where: str) -> None:
    """Wait until ``selector`` (a part of the view that holds no payload) is drawn; then no
    markup may be in the page."""
    watched.page.locator(selector).first.wait_for()
    assert_inert(watched, where)


def assert_inert(watched: Watched, where: str) -> None:
    page = watched.page
    assert page.evaluate(INJECTED) == [], where
    assert page.evaluate("() => window.__xss") is None, where
    assert watched.dialogs == [], where
    assert watched.elsewhere == [], where


def test_text_from_flows_runs_and_people_is_shown_as_text(
        browser: Browser, served: Served, xss_run: str) -> None:
    """Every view that shows what a flow, a run or a person wrote, with markup in each of
    those places. The page's policy is switched off in this browser (bypass_csp) so that
    only the page's own handling of text is tested: an injected handler would run."""
    watched = open_page(browser, served, bypass_csp=True)
    page = watched.page
    with served.client() as admin:
        assert admin.put("/api/v1/variables/WEB_MARKUP", json={"value": PAYLOAD}
                         ).status_code == 204
    try:
        # Positive control: with the policy off, markup put in as HTML runs here.
        page.goto(served.url + "/sign-in")
        page.evaluate("""() => new Promise((done) => {
          const probe = document.createElement("div");
          probe.innerHTML = '<img src="data:," onerror="window.__probe=1">';
          probe.firstChild.addEventListener("error", () => setTimeout(done, 0));
          document.body.append(probe);
          probe.remove();
        })""")
        assert page.evaluate("() => window.__probe") == 1

        sign_in_through_the_page(watched, served)
        page.wait_for_url(served.url + "/flows")
        # Each view: first its frame is drawn and checked for markup (so that a defect is
        # named here, whatever it does to the text), then the text is read back whole.
        settle(watched, "main table.list tbody tr", "the flows")
        page.get_by_role("link", name=FLOW, exact=True).wait_for()

        encoded = quote(FLOW, safe="")
        page.goto(f"{served.url}/flows/{encoded}")
        settle(watched, ".cm-content .cm-line", "the flow's editor")
        page.get_by_role("heading", name=f"{FLOW} v1").wait_for()
        page.locator(".cm-content").get_by_text(f"name: '{FLOW}'").wait_for()

        page.goto(f"{served.url}/flows/{encoded}/start")
        settle(watched, "main form .hint", "the start form")
        page.get_by_text(f"{IMG} described", exact=True).wait_for()

        page.goto(f"{served.url}/runs/{xss_run}")
        job = page.locator('button[data-key="shown"]')
        settle(watched, 'button[data-key="shown"]', "the run")
        page.get_by_role("link", name=FLOW, exact=True).wait_for()
        page.get_by_text(f"note={PAYLOAD}", exact=True).wait_for()  # the run's input
        assert job.text_content() == f"job {SCRIPT} {IMG}"
        job.click()
        panel = page.locator(".job-panel")
        rows = page.locator(".log-line")
        settle(watched, ".job-panel .tests-table tbody tr", "the run, job 'shown'")
        rows.nth(1).wait_for()
        assert_inert(watched, "the run's log")
        panel.get_by_text(f"step {IMG} {SCRIPT}", exact=True).wait_for()
        panel.get_by_role("cell", name=PAYLOAD, exact=True).wait_for()  # the output
        panel.get_by_text(f"{SVG}.{IMG}", exact=True).wait_for()  # a test case's name
        panel.get_by_text(PAYLOAD, exact=True).first.wait_for()  # its message
        assert panel.locator("details pre").text_content() == f"{SCRIPT} traceback"
        panel.get_by_text(f"artifacts: nothing matches 'missing-{IMG}.bin'",
                          exact=False).wait_for()
        assert rows.evaluate_all("(rows) => rows.map((r) => r.textContent)") == [
            f"1{PAYLOAD}", f"2{PAYLOAD}"]
        assert rows.nth(1).locator("span.a-f1").text_content() == PAYLOAD  # coloured
        page.locator('button.cell[data-key="cells.1"]').click()
        settle(watched, ".job-panel h2:text-is('cells.1')", "the run, cell cells.1")
        panel.get_by_text(f"v={IMG}", exact=True).wait_for()  # the cell's matrix
        panel.get_by_role("cell", name=IMG, exact=True).wait_for()  # its output

        page.goto(f"{served.url}/runs/{xss_run}/sweep")
        table = page.locator("table.sweep")
        settle(watched, "table.sweep tbody tr:nth-child(2)", "the sweep")
        assert table.locator("tbody tr").count() == 2
        for value in (IMG, SCRIPT):
            assert table.get_by_role("cell", name=value, exact=True).count() == 2  # v, echoed
        settle(watched, "figure.plot canvas", "the sweep's plot")

        page.goto(served.url + "/runs")
        settle(watched, "main table.list tbody tr[data-run]", "the runs")
        page.get_by_role("link", name=FLOW, exact=True).first.wait_for()

        page.goto(served.url + "/variables")
        settle(watched, "main td.value", "the variables")
        page.get_by_role("cell", name=PAYLOAD, exact=True).wait_for()

        page.goto(served.url + "/secrets")
        settle(watched, "main tbody th", "the secrets")
        page.get_by_role("rowheader", name="HOOK_KEY", exact=True).wait_for()
    finally:
        page.context.close()


def test_the_page_s_policy_holds_and_sign_in_never_leaves_the_origin(
        browser: Browser, served: Served) -> None:
    """With the policy on (as served): markup that got in anyway could not run; and the
    address a sign-in returns to (?next=) never leads to another origin."""
    watched = open_page(browser, served, bypass_csp=False)
    page = watched.page
    try:
        page.goto(served.url + "/sign-in")
        page.get_by_label("Token").wait_for()
        blocked = page.evaluate("""() => new Promise((done) => {
          document.addEventListener("securitypolicyviolation",
            (e) => done(e.effectiveDirective), { once: true });
          const probe = document.createElement("div");
          probe.innerHTML = '<img src="data:," onerror="window.__probe=1">';
          document.body.append(probe);
        })""")
        assert blocked == "script-src-attr"
        assert page.evaluate("() => window.__probe") is None
        page.context.clear_cookies()
        for target in ("//evil.example/x", "https://evil.example/x", "javascript:alert(1)",
                       "/\\evil.example/x"):
            page.goto(served.url + "/sign-in?next=" + quote(target, safe=""))
            page.get_by_label("Token").fill(served.token)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_function("() => location.pathname !== '/sign-in' || "
                                   "!document.querySelector('p.error').hidden")
            assert urlsplit(page.url).netloc == urlsplit(served.url).netloc, target
            page.context.clear_cookies()
        assert watched.elsewhere == [] and watched.dialogs == []
    finally:
        page.context.close()
