"""The client of a flowray server's HTTP API (``flowray serve``), for the commands that talk
to one: every request, and every way one can go wrong turned into a :class:`ServerError` that
carries the one line to show and the exit code.

httpx is imported at the top of this module, and this module only inside the commands that
talk to a server, so that ``import flowray`` and ``flowray run`` never load httpx.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import httpx

from flowray.cli.common import EXIT_FAILED, EXIT_INVALID

API = "/api/v1"
Role = Literal["viewer", "runner", "admin"]

# A request's limits. A stream of events may be quiet for long (a step that prints nothing):
# a read that times out there only reconnects (resuming where it was), it is not an error.
_CONNECT_TIMEOUT = 10.0
_READ_TIMEOUT = 60.0
_STREAM_READ_TIMEOUT = 60.0
# How often in a row an event stream may fail to give one new event before the follower
# gives up, and how long it waits before reconnecting after that many such failures (a stream
# that gave new events reconnects at once: a dropped connection is the common case, and the
# server is usually there).
_STREAM_RETRIES = 6
_STREAM_BACKOFF = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)


class ServerError(Exception):
    """A request the server did not carry out, or that never reached it.

    ``message`` is one line for a person; ``status`` the HTTP status (None when no answer
    came); ``exit_code`` what the command exits with; ``diagnostics`` the problems of an
    invalid flow (422 on push: dicts with ``file line col path message severity``).
    """

    def __init__(self, message: str, *, status: int | None = None,
                 exit_code: int = EXIT_FAILED,
                 diagnostics: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.exit_code = exit_code
        self.diagnostics = diagnostics or []


class ServerUnreachable(ServerError):
    """No answer: the server is down, the address is wrong, or the connection broke."""


def check_server_url(url: str) -> str:
    """``url`` without a trailing slash when it is an http(s) URL; :class:`ServerError`
    (exit 2) otherwise."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ServerError(f"--server '{url}' is not an http:// or https:// URL (the flowray "
                          f"server's address, e.g. http://HOST:8420)", exit_code=EXIT_INVALID)
    try:
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        raise ServerError(f"--server '{url}' has a port that is not a number",
                          exit_code=EXIT_INVALID) from None
    return url


def _reason(exc: BaseException) -> str:
    """Why a request got no answer, in the words of the system call that failed when there
    is one ('Connection refused'), else httpx's."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return str(exc) or type(exc).__name__


def _seg(value: str) -> str:
    """``value`` as one path segment of a URL."""
    return quote(value, safe="")


class ServerClient:
    """One flowray server, reached at ``url`` with ``token`` (None: no Authorization header;
    the server then answers 401, which becomes a :class:`ServerError`).

    Every method raises :class:`ServerError` (:class:`ServerUnreachable` when no answer came);
    use it as a context manager, or :meth:`close` it.
    """

    def __init__(self, url: str, *, token: str | None = None) -> None:
        self.url = check_server_url(url)
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.url + API, headers=headers, follow_redirects=False,
            timeout=httpx.Timeout(_READ_TIMEOUT, connect=_CONNECT_TIMEOUT))

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------ flows

    def push_flow(self, name: str, *, text: str, path: str, files: dict[str, str],
                  executable: list[str] | None = None) -> tuple[dict[str, Any], bool]:
        """Store a new version of flow ``name`` (``files``: relative path -> base64 content,
        its local actions); the answer (``name version created``) and whether the flow is new
        (201). An invalid flow raises :class:`ServerError` with its ``diagnostics``."""
        resp = self._call("PUT", f"/flows/{_seg(name)}", role="admin", action="push flows",
                          json={"text": text, "path": path, "files": files,
                                "executable": executable or []})
        return self._object(resp), resp.status_code == 201

    def flows(self) -> list[dict[str, Any]]:
        """The stored flows (``name version updated triggers last_run next_fire``)."""
        return self._list(self._call("GET", "/flows", role="viewer", action="list flows"),
                          "flows")

    def flow(self, name: str) -> dict[str, Any]:
        """One stored flow: ``name version text created versions``."""
        return self._object(self._call("GET", f"/flows/{_seg(name)}", role="viewer",
                                       action="read flows"))

    def remove_flow(self, name: str) -> None:
        self._call("DELETE", f"/flows/{_seg(name)}", role="admin", action="remove flows")

    def validate(self, text: str) -> list[dict[str, Any]]:
        """The diagnostics of the flow YAML ``text`` (empty when it is valid)."""
        return self._list(self._call("POST", "/validate", role="viewer",
                                     action="validate flows", json={"text": text}),
                          "diagnostics")

    # ------------------------------------------------------------------ runs

    def trigger(self, flow: str, *, inputs: dict[str, str],
                idempotency_key: str | None = None) -> tuple[dict[str, Any], bool]:
        """Start a run of ``flow``: its answer (``id status``) and whether it is a new run
        (False: the server had seen ``idempotency_key`` and this is the run it started)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        resp = self._call("POST", f"/flows/{_seg(flow)}/runs", role="runner",
                          action="start runs", json={"inputs": inputs}, headers=headers)
        return self._object(resp), resp.status_code == 201

    def runs(self, *, flow: str | None = None, status: str | None = None,
             trigger: str | None = None, limit: int | None = None,
             before: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """Runs, newest first, and the ``before`` cursor of the next page (None: no more)."""
        params = {k: v for k, v in (("flow", flow), ("status", status), ("trigger", trigger),
                                    ("limit", limit), ("before", before)) if v is not None}
        resp = self._call("GET", "/runs", role="viewer", action="list runs", params=params)
        body = self._object(resp)
        nxt = body.get("next")
        return self._list(resp, "runs"), nxt if isinstance(nxt, str) else None

    def run(self, run_id: str) -> dict[str, Any]:
        """One run's summary and ``record`` (the record.json dict; None while queued)."""
        return self._object(self._call("GET", f"/runs/{_seg(run_id)}", role="viewer",
                                       action="read runs"))

    def last_run(self) -> dict[str, Any]:
        """The newest run's summary; :class:`ServerError` (exit 2) when there is none."""
        items, _ = self.runs(limit=1)
        if not items:
            raise ServerError(f"no runs on {self.url} yet", exit_code=EXIT_INVALID)
        return items[0]

    def log(self, run_id: str, job: str, step: int) -> str:
        """What step ``step`` (its index) of job ``job`` printed so far."""
        return self._call("GET", f"/runs/{_seg(run_id)}/logs/{_seg(job)}/{step}",
                          role="viewer", action="read logs").text

    def cancel(self, run_id: str) -> dict[str, Any]:
        """Ask the server to cancel the run; its answer (``id status``)."""
        return self._object(self._call("POST", f"/runs/{_seg(run_id)}/cancel", role="runner",
                                       action="cancel runs"))

    def rerun(self, run_id: str, *, failed: bool = False,
              jobs: list[str] | None = None) -> dict[str, Any]:
        """Start a new run of the run's flow version and inputs that runs its failed jobs
        (``failed``) or ``jobs`` again; the answer (``id``)."""
        body: dict[str, Any] = {}
        if failed:
            body["failed"] = True
        if jobs:
            body["jobs"] = list(jobs)
        return self._object(self._call("POST", f"/runs/{_seg(run_id)}/rerun", role="runner",
                                       action="rerun runs", json=body))

    def events(self, run_id: str, *, after: int = 0) -> Iterator[dict[str, Any]]:
        """The run's events after seq ``after``, live, ending after ``run.finished``.

        A dropped connection (or a stream that ends early, or a long silence) is resumed
        with ``Last-Event-ID``; an event whose seq was already given is skipped, so none is
        lost or repeated. A server that cannot be reached at all is :class:`ServerUnreachable`
        at once; one that goes away while followed, after several retries in a row that gave
        nothing new.
        """
        last = after
        failures = 0
        answered = False
        while True:
            progressed = False
            problem: httpx.TransportError | None = None
            try:
                for seq, event in self._event_stream(run_id, last):
                    answered = True
                    if seq <= last:
                        continue
                    last = seq
                    progressed = True
                    yield event
                    if event.get("type") == "run.finished":
                        return
                answered = True
            except httpx.ReadTimeout:
                answered = True
                continue  # a quiet run: ask again from where it was
            except httpx.TransportError as exc:
                if not answered and isinstance(exc, httpx.ConnectError):
                    raise ServerUnreachable(f"cannot reach the flowray server at {self.url}: "
                                            f"{_reason(exc)}") from None
                answered = True
                problem = exc
            failures = 0 if progressed else failures + 1
            if failures >= _STREAM_RETRIES:
                if problem is not None:
                    raise ServerUnreachable(
                        f"lost the flowray server at {self.url} while following run "
                        f"{run_id}: {_reason(problem)}")
                raise ServerError(f"the server at {self.url} ended run {run_id}'s event "
                                  f"stream before the run ended, {failures} times in a row")
            time.sleep(_STREAM_BACKOFF[min(failures, len(_STREAM_BACKOFF) - 1)])

    def _event_stream(self, run_id: str, last: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """One connection's events as (seq, event), parsed from Server-Sent Events; an event
        cut off by the connection's end is not given. httpx's errors pass through."""
        headers = {"Accept": "text/event-stream"}
        if last:
            headers["Last-Event-ID"] = str(last)
        timeout = httpx.Timeout(_STREAM_READ_TIMEOUT, connect=_CONNECT_TIMEOUT)
        with self._http.stream("GET", f"/runs/{_seg(run_id)}/events", headers=headers,
                               timeout=timeout) as resp:
            if not resp.is_success:
                resp.read()
                self._check(resp, role="viewer", action="read runs")
            event_id: str | None = None
            data: list[str] = []
            for line in resp.iter_lines():
                if line:
                    field, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if field == "data":
                        data.append(value)
                    elif field == "id":
                        event_id = value
                    continue  # ':' comments (keep-alives), 'event:' and 'retry:'
                if data:
                    event = self._event(run_id, "\n".join(data))
                    yield self._seq(event_id, event), event
                event_id, data = None, []

    def _event(self, run_id: str, data: str) -> dict[str, Any]:
        try:
            event = json.loads(data)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            raise ServerError(f"the server at {self.url} sent an event of run {run_id} that "
                              f"is not a JSON object: {data[:200]!r}")
        return event

    def _seq(self, event_id: str | None, event: dict[str, Any]) -> int:
        seq = event_id if event_id is not None else event.get("seq")
        try:
            return int(seq)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ServerError(f"the server at {self.url} sent an event without a number "
                              f"(id: {event_id!r}, seq: {event.get('seq')!r})") from None

    # ------------------------------------------------------------------ secrets, variables

    def set_secret(self, name: str, value: str) -> None:
        self._call("PUT", f"/secrets/{_seg(name)}", role="admin", action="set secrets",
                   json={"value": value})

    def secrets(self) -> list[dict[str, Any]]:
        """The secrets' names and dates (``name created updated``), never their values."""
        return self._list(self._call("GET", "/secrets", role="admin", action="list secrets"),
                          "secrets")

    def remove_secret(self, name: str) -> None:
        self._call("DELETE", f"/secrets/{_seg(name)}", role="admin", action="remove secrets")

    def set_variable(self, name: str, value: str) -> None:
        self._call("PUT", f"/variables/{_seg(name)}", role="admin", action="set variables",
                   json={"value": value})

    def variables(self) -> list[dict[str, Any]]:
        """The variables (``name value updated``)."""
        return self._list(self._call("GET", "/variables", role="viewer",
                                     action="list variables"), "variables")

    def remove_variable(self, name: str) -> None:
        self._call("DELETE", f"/variables/{_seg(name)}", role="admin",
                   action="remove variables")

    def create_token(self, name: str, *, role: Role) -> dict[str, Any]:
        """A new token (``name role token``): the server shows ``token`` only this once."""
        return self._object(self._call("POST", "/tokens", role="admin", action="create tokens",
                                       json={"name": name, "role": role}))

    def tokens(self) -> list[dict[str, Any]]:
        """The tokens (``name role created``), never their values."""
        return self._list(self._call("GET", "/tokens", role="admin", action="list tokens"),
                          "tokens")

    def remove_token(self, name: str) -> None:
        self._call("DELETE", f"/tokens/{_seg(name)}", role="admin", action="revoke tokens")

    # ------------------------------------------------------------------ requests

    def _call(self, method: str, path: str, *, role: Role, action: str,
              json: Any = None, params: dict[str, Any] | None = None,
              headers: dict[str, str] | None = None) -> httpx.Response:
        """One request; its response when it succeeded, else :class:`ServerError`.
        ``role`` and ``action`` say, for a 403, what the token was refused and which role
        does it."""
        try:
            resp = self._http.request(method, path, json=json, params=params, headers=headers)
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"cannot reach the flowray server at {self.url}: "
                                    f"{_reason(exc)}") from None
        self._check(resp, role=role, action=action)
        return resp

    def _check(self, resp: httpx.Response, *, role: Role, action: str) -> None:
        status = resp.status_code
        if resp.is_success:
            return
        if status == 401:
            raise ServerError("the server refused the token (401): set FLOWRAY_TOKEN or "
                              "--token", status=401, exit_code=EXIT_INVALID)
        body = self._error_body(resp)
        message = body.get("error")
        if status == 403:
            # the server's words name the token and its role; without them, the role needed
            why = message if isinstance(message, str) and message.strip() else \
                f"that needs a token with the {role} role"
            raise ServerError(f"the token may not {action} (403): {why}", status=403,
                              exit_code=EXIT_INVALID)
        if not isinstance(message, str) or not message.strip():
            message = (f"the server at {self.url} answered {status} "
                       f"{resp.reason_phrase or ''}".rstrip())
        diagnostics = body.get("diagnostics")
        # Asking for what is not there or is malformed is the caller's mistake (exit 2); a
        # conflict (a run that already ended) or the server's failure is not (exit 1).
        code = EXIT_INVALID if status in (400, 404, 405, 413, 422) else EXIT_FAILED
        raise ServerError(message, status=status, exit_code=code,
                          diagnostics=[d for d in diagnostics if isinstance(d, dict)]
                          if isinstance(diagnostics, list) else None)

    @staticmethod
    def _error_body(resp: httpx.Response) -> dict[str, Any]:
        try:
            body = resp.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    def _object(self, resp: httpx.Response) -> dict[str, Any]:
        """The response's JSON object; :class:`ServerError` when it is not one (the address
        is not a flowray server, or a proxy answered)."""
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            kind = resp.headers.get("content-type", "no content type")
            raise ServerError(f"the server at {self.url} answered {resp.request.method} "
                              f"{resp.request.url.path} with something that is not a JSON "
                              f"object ({kind}): is it a flowray server?")
        return body

    def _list(self, resp: httpx.Response, key: str) -> list[dict[str, Any]]:
        items = self._object(resp).get(key)
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise ServerError(f"the server at {self.url} answered {resp.request.method} "
                              f"{resp.request.url.path} without a list of '{key}': is it a "
                              f"flowray server of this version?")
        return items
