"""The service's HTTP API (FastAPI): SPEC "The service", under ``/api/v1``.

Every answer that is not a success is JSON ``{"error": message}`` with the status SPEC names;
a database that is not answering gives 503; nothing a client sends gives a 500. The routes
only translate HTTP to the service's nouns (:class:`~flowray.service.store.Store`,
:class:`~flowray.service.runs.RunManager`) and back.

FastAPI reads the routes' annotations at run time (its dependencies are closures over the app's
parts), so this module does not use postponed annotations.
"""

import asyncio
import contextlib
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

import flowray
from flowray import web
from flowray.service import hooks
from flowray.service.db import first_line, is_unavailable
from flowray.service.flows import BadFiles, PushError, check_flow, decode_files, diagnose
from flowray.service.runs import RunManager, TriggerError
from flowray.service.store import (
    ROLES,
    TERMINAL,
    Conflict,
    Store,
    role_allows,
    run_summary,
    token_hash,
)

log = logging.getLogger("flowray.service")

SESSION_COOKIE = "flowray_session"
CSRF_HEADER = "X-Flowray-CSRF"
SESSION_SECONDS = 12 * 3600  # a page sign-in lasts a working day
RECHECK_SECONDS = 5.0  # how soon an open event stream notices its sign-in has ended
MAX_BODY = 16 * 1024 * 1024  # any request body (a flow with its local actions, at most)
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,199}$"  # secrets and variables


class ApiError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


# ---------------------------------------------------------------------- request bodies

class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FlowPush(Strict):
    text: str = Field(description="the flow file's YAML (or JSON) text")
    keep_files: bool = Field(default=False, description="keep the local actions' files of "
                             "the flow's current version, or of `base_version` (the web "
                             "page's editor changes only the YAML); `files` must then be "
                             "empty")
    base_version: int | None = Field(default=None, ge=1, le=2**31 - 1,
                                     description="with keep_files: the version whose files "
                                     "to keep (an older version saved again)")
    path: str = Field(default="flow.yaml", max_length=300,
                      description="the file name it was pushed from, used in diagnostics")
    files: dict[str, str] = Field(default_factory=dict,
                                  description="its local actions' files: path -> base64")
    executable: list[str] = Field(default_factory=list, max_length=1000,
                                  description="the paths in files to make runnable (755)")


class ValidateBody(Strict):
    text: str
    path: str = Field(default="flow.yaml", max_length=300)
    flow: str | None = Field(default=None, max_length=200, description="check it with the "
                             "local actions kept with this stored flow (the web page's "
                             "editor sends only the YAML)")
    version: int | None = Field(default=None, ge=1, le=2**31 - 1,
                                description="that flow's version (default: its current one)")


class RunStart(Strict):
    inputs: dict[str, Any] = Field(default_factory=dict)


class Rerun(Strict):
    failed: bool = False
    jobs: list[str] = Field(default_factory=list)


MAX_VALUE = 1024 * 1024  # a secret's or variable's value, in bytes


class Value(Strict):
    value: str = Field(max_length=MAX_VALUE)


class SignIn(Strict):
    token: str = Field(min_length=1, max_length=500)


class TokenCreate(Strict):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@-]+$")
    role: str = Field(pattern="^(viewer|runner|admin)$")


# ---------------------------------------------------------------------- the app

def create_app(store: Store, manager: RunManager) -> FastAPI:
    app = FastAPI(title="flowray", version=flowray.__version__,
                  openapi_url=None, docs_url=None, redoc_url=None)
    bearer = HTTPBearer(auto_error=False, description="a token made by `flowray token "
                        "create` (the first admin token is in the data dir's admin-token)")

    # -- errors: always JSON {"error": ...}

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message, **exc.extra}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        text = {404: "not found", 405: "method not allowed"}.get(exc.status_code,
                                                                 str(exc.detail))
        if exc.status_code == 404 and exc.detail not in ("Not Found", None):
            text = str(exc.detail)
        return JSONResponse({"error": text}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors()[:10]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            msg = str(err.get("msg", "invalid"))
            if err.get("type") == "json_invalid":
                msg, where = "the body is not JSON", "body"
            problems.append(f"{where}: {msg}")
        return JSONResponse({"error": "; ".join(problems) or "invalid request"},
                            status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        from sqlalchemy.exc import DataError

        if isinstance(exc, DataError):  # a value the database cannot hold (a number too big)
            return JSONResponse({"error": f"a value the database cannot hold: "
                                 f"{first_line(exc)}"}, status_code=422)
        if is_unavailable(exc):
            return JSONResponse({"error": "the database is not answering: "
                                 f"{first_line(exc)}"}, status_code=503,
                                headers={"Retry-After": "5"})
        log.error("internal error", exc_info=exc)
        return JSONResponse({"error": f"internal error in the flowray service: "
                             f"{type(exc).__name__}"}, status_code=500)

    # -- access

    def access(needed: str) -> Callable[..., Awaitable[tuple[str, str]]]:
        async def check(request: Request,
                        credentials: Annotated[HTTPAuthorizationCredentials | None,
                                               Depends(bearer)]) -> tuple[str, str]:
            if credentials is not None and credentials.scheme.lower() == "bearer":
                found = await run_in_threadpool(store.token_role, credentials.credentials)
                if found is None:
                    raise ApiError(401, "the token is not valid")
            elif SESSION_COOKIE in request.cookies:
                found = await run_in_threadpool(_page_caller, request)
            else:
                raise ApiError(401, "a token is needed: Authorization: Bearer <token>")
            if not role_allows(found[1], needed):
                raise ApiError(403, f"the token '{found[0]}' has the role {found[1]}; this "
                               f"needs {needed}" + (" or admin" if needed != "admin" else ""))
            return found
        return check

    def _page_caller(request: Request) -> tuple[str, str]:
        """The caller of a request the web page makes with its session cookie. Every such
        request also carries the session's CSRF value (a header; a query parameter ``csrf``
        for the reads a browser makes without headers: event streams and downloads), and a
        change must come from this origin. Browsers send a host's cookies to every port of
        it, so the cookie alone opens nothing: another web server on this host would get
        it, but not the CSRF value, which only the sign-in answer holds and the page keeps
        in its own origin's storage."""
        session = request.cookies[SESSION_COOKIE]
        found = store.session_role(session)
        if found is None:
            raise ApiError(401, "the sign-in has ended: sign in again")
        given = request.headers.get(CSRF_HEADER)
        if given is None and request.method in ("GET", "HEAD"):
            given = request.query_params.get("csrf")
        if not hmac.compare_digest(token_hash(given or "").encode(), found[2].encode()):
            raise ApiError(403, f"a request made with the page's sign-in needs its "
                           f"{CSRF_HEADER} header")
        if request.method not in ("GET", "HEAD") and not same_origin(request):
            raise ApiError(403, "a change made with the page's sign-in must come from "
                           "the page itself (Origin)")
        return found[0], found[1]

    viewer = Depends(access("viewer"))
    runner = Depends(access("runner"))
    admin = Depends(access("admin"))

    # -- health, metrics, the API's description

    @app.get("/api/v1/openapi.json", include_in_schema=False, dependencies=[viewer])
    def openapi() -> JSONResponse:
        """The API's OpenAPI 3 description (every route, body, answer, the bearer scheme)."""
        return JSONResponse(app.openapi())

    @app.get("/livez", tags=["service"])
    def livez() -> dict[str, str]:
        """Whether the process answers (a liveness probe: it does not ask the database,
        which may be away while the service rides it out)."""
        return {"status": "alive"}

    @app.get("/healthz", tags=["service"])
    def healthz() -> JSONResponse:
        """Whether the service and its database answer."""
        try:
            store.ping()
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            return JSONResponse({"status": "unavailable", "database": first_line(exc)},
                                status_code=503)
        return JSONResponse({"status": "ok", "draining": manager.draining})

    @app.get("/metrics", tags=["service"])
    def metrics() -> Response:
        body, content_type = manager.metrics.render()
        return Response(body, media_type=content_type)

    # -- the web page's sign-in (a session cookie: HttpOnly, SameSite=Strict)

    @app.post("/api/v1/session", tags=["page"], status_code=201,
              responses={401: {"description": "the token is not valid"}})
    def sign_in(body: SignIn, request: Request) -> JSONResponse:
        """Sign the web page in with a token: sets the session cookie (HttpOnly,
        SameSite=Strict) and answers the token's name, role and the session's CSRF value,
        which the page sends as ``X-Flowray-CSRF`` with every request (this answer is the
        only one that holds it)."""
        if not same_origin(request):
            raise ApiError(403, "a sign-in must come from the page itself (Origin)")
        opened = store.open_session(body.token.strip(), lifetime=SESSION_SECONDS)
        if opened is None:
            raise ApiError(401, "the token is not valid")
        session, csrf, name, role = opened
        answer = JSONResponse({"name": name, "role": role, "csrf": csrf}, status_code=201,
                              headers={"Cache-Control": "no-store"})
        answer.set_cookie(SESSION_COOKIE, session, max_age=SESSION_SECONDS, path="/",
                          httponly=True, samesite="strict",
                          secure=request.url.scheme == "https")
        return answer

    @app.get("/api/v1/session", tags=["page"])
    def session_info(request: Request) -> JSONResponse:
        """Who the page's session is: the token's name and role."""
        if SESSION_COOKIE not in request.cookies:
            raise ApiError(401, "not signed in")
        name, role = _page_caller(request)
        return JSONResponse({"name": name, "role": role}, headers={"Cache-Control": "no-store"})

    @app.delete("/api/v1/session", tags=["page"], status_code=204)
    def sign_out(request: Request) -> Response:
        """End the page's session (its cookie no longer opens anything)."""
        session = request.cookies.get(SESSION_COOKIE)
        if session is not None and store.session_role(session) is not None:
            _page_caller(request)  # the CSRF check: another site cannot sign a user out
            store.close_session(session)
        answer = Response(status_code=204)
        answer.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return answer

    # -- the web page: one document for every page address, and its files

    page = web.page_document()

    @app.get("/", include_in_schema=False)
    @app.get("/sign-in", include_in_schema=False)
    @app.get("/flows", include_in_schema=False)
    @app.get("/flows/{rest:path}", include_in_schema=False)
    @app.get("/runs", include_in_schema=False)
    @app.get("/runs/{rest:path}", include_in_schema=False)
    @app.get("/secrets", include_in_schema=False)
    @app.get("/variables", include_in_schema=False)
    def web_page() -> Response:
        return Response(page, media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": web.CONTENT_SECURITY_POLICY,
                                 "Cache-Control": "no-cache"})

    app.mount("/static", _Static(directory=str(web.STATIC), follow_symlink=False),
              name="static")

    # -- flows

    @app.get("/api/v1/flows", tags=["flows"], dependencies=[viewer])
    def list_flows() -> dict[str, Any]:
        return {"flows": store.list_flows()}

    @app.get("/api/v1/flows/{name}", tags=["flows"], dependencies=[viewer])
    def get_flow(name: str, version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None
                 ) -> dict[str, Any]:
        flow = store.get_flow(name, version)
        if flow is None:
            raise ApiError(404, f"no flow named '{name}'" + (
                f" with version {version}" if version else ""))
        from flowray.spec.triggers import manual_inputs, manual_trigger

        try:
            data: dict[str, Any] = manager.load_flow(name, flow["version"])[1]
        except TriggerError:
            data = {}
        role = manual_trigger(data).get("role")
        return {**{k: flow[k] for k in ("name", "version", "text", "path", "created",
                                        "versions", "current")},
                "files": sorted(flow["files"]),
                "inputs": manual_inputs(data),
                # starting needs runner at least, whatever triggers.manual.role says
                "start_role": role if role in ROLES and role_allows(role, "runner")
                else "runner"}

    @app.put("/api/v1/flows/{name}", tags=["flows"], dependencies=[admin],
             responses={422: {"description": "the flow is not valid: its diagnostics"}})
    def put_flow(name: str, body: FlowPush) -> JSONResponse:
        problem = flow_name_problem(name)
        if problem:
            raise ApiError(422, problem)
        files, executable = body.files, body.executable
        if body.keep_files:
            if files or executable:
                raise ApiError(422, "keep_files keeps the files of the version edited: send "
                               "no files or executable with it")
            current = store.get_flow(name, body.base_version, versions=False)
            if current is not None:
                files, executable = current["files"], current["executable"]
            elif body.base_version is not None:
                raise ApiError(422, f"no flow named '{name}' with version "
                               f"{body.base_version} to keep the files of")
        try:
            pushed = check_flow(name, path=os.path.basename(body.path) or "flow.yaml",
                                text=body.text, files=files, executable=executable,
                                variables=list(store.variable_values()),
                                edges=store.flow_trigger_edges())
        except PushError as exc:
            raise ApiError(422, str(exc), diagnostics=exc.diagnostics) from None
        except BadFiles as exc:
            raise ApiError(422, str(exc)) from None
        version, created, new = store.push_flow(
            name, path=pushed.path, text=pushed.text, files=pushed.files,
            executable=pushed.executable,
            triggers=pushed.triggers, flow_triggers=pushed.flow_triggers,
            schedules=pushed.schedules)
        manager.remember_flow(name, version, pushed.data)
        # only this flow's schedules changed (None: it has none now)
        manager.metrics.schedule_next_fire(
            name, min((s[3] for s in pushed.schedules), default=None))
        manager.wake()
        return JSONResponse({"name": name, "version": version, "created": created,
                             "warnings": pushed.warnings}, status_code=201 if new else 200)

    @app.delete("/api/v1/flows/{name}", tags=["flows"], dependencies=[admin],
                status_code=204)
    def delete_flow(name: str) -> Response:
        if not store.delete_flow(name):
            raise ApiError(404, f"no flow named '{name}'")
        manager.metrics.schedule_next_fire(name, None)
        return Response(status_code=204)

    @app.post("/api/v1/validate", tags=["flows"], dependencies=[viewer])
    def validate(body: ValidateBody) -> dict[str, Any]:
        """The diagnostics of a flow's text (an empty list when it is valid), checked with
        the local actions of stored flow ``flow`` when it is given."""
        files: dict[str, bytes] = {}
        executable: list[str] = []
        if body.flow is not None:
            stored = store.get_flow(body.flow, body.version, versions=False)
            if stored is None:
                raise ApiError(404, f"no flow named '{body.flow}'" + (
                    f" with version {body.version}" if body.version else ""))
            files, executable = decode_files(stored["files"]), stored["executable"]
        return {"diagnostics": diagnose(body.text, path=os.path.basename(body.path)
                                        or "flow.yaml", variables=list(store.variable_values()),
                                        files=files, executable=executable)}

    # -- runs

    def may_start(name: str, caller: tuple[str, str], *, version: int | None = None) -> None:
        """403 unless ``caller`` may start flow ``name`` by hand: a flow whose
        ``triggers.manual.role`` names one of the service's roles needs that role or above
        (for reruns too)."""
        from flowray.spec.triggers import manual_trigger

        try:
            _, data = manager.load_flow(name, version)
        except TriggerError as exc:
            raise ApiError(exc.status, str(exc)) from None
        needed = manual_trigger(data).get("role")
        if needed in ROLES and not role_allows(caller[1], needed):
            raise ApiError(403, f"flow '{name}' may be started by hand only with the role "
                           f"{needed} (triggers.manual.role); the token '{caller[0]}' has the "
                           f"role {caller[1]}")

    @app.post("/api/v1/flows/{name}/runs", tags=["runs"], status_code=201)
    def start_run(name: str, body: RunStart, caller: Annotated[tuple[str, str], runner],
                  idempotency_key: Annotated[str | None, Header(max_length=200)] = None
                  ) -> JSONResponse:
        """Start a run by hand. A flow whose ``triggers.manual.role`` names one of the
        service's roles may be started only by tokens with that role or above."""
        may_start(name, caller)
        try:
            run_id, created = manager.trigger(name, trigger="manual", inputs=body.inputs,
                                              idempotency_key=idempotency_key)
        except TriggerError as exc:
            raise ApiError(exc.status, str(exc)) from None
        if created:
            return JSONResponse({"id": run_id, "status": "queued"}, status_code=201)
        row = store.get_run(run_id)
        return JSONResponse({"id": run_id, "status": row.status if row else "queued"},
                            status_code=200)

    @app.get("/api/v1/runs", tags=["runs"], dependencies=[viewer])
    def list_runs(flow: str | None = None,
                  status: Annotated[str | None, Query(
                      pattern="^(queued|running|success|failure|cancelled|skipped)$")] = None,
                  trigger: str | None = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 50,
                  before: Annotated[str | None, Query(max_length=200)] = None
                  ) -> dict[str, Any]:
        try:
            page, cursor = store.list_runs(flow=flow, status=status, trigger=trigger,
                                           limit=limit, before=before)
        except ValueError as exc:
            raise ApiError(422, str(exc)) from None
        return {"runs": page, "next": cursor}

    def _row(run_id: str) -> Any:
        row = store.get_run(run_id)
        if row is None:
            raise ApiError(404, f"no run with id '{run_id}'")
        return row

    def _record(row: Any) -> dict[str, Any] | None:
        if row.record:
            return json.loads(row.record)  # type: ignore[no-any-return]
        path = _in_run(row.id, "record.json")
        try:
            if path is None:
                return None
            with open(path, encoding="utf-8") as fh:
                found = json.load(fh)
        except (OSError, ValueError, RecursionError):
            return None
        return found if isinstance(found, dict) else None

    def _in_run(run_id: str, rel: str) -> str | None:
        """A file of a run's folder (``rel`` may not leave it), read only through real
        folders (see _no_links)."""
        if _escapes(rel) or _escapes(run_id):
            return None
        return _no_links(os.path.join(manager.options.data_dir, "workspaces"),
                         f"{run_id}/.flowray/runs/{run_id}/{rel}")

    @app.get("/api/v1/runs/{run_id}", tags=["runs"], dependencies=[viewer])
    def get_run(run_id: str) -> dict[str, Any]:
        row = _row(run_id)
        return {**run_summary(row), "inputs": json.loads(row.inputs),
                "rerun_of": row.rerun_of, "record": _record(row)}

    @app.get("/api/v1/runs/{run_id}/events", tags=["runs"], dependencies=[viewer],
             response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}}}})
    async def run_events(run_id: str, request: Request,
                         last_event_id: Annotated[str | None, Header()] = None,
                         since: Annotated[int, Query(
                             ge=0, le=10**9, description="start after this seq (for a reader "
                             "that cannot send Last-Event-ID; the header wins)")] = 0,
                         logs: Annotated[bool, Query(
                             description="false: leave out step.log events (a reader that "
                             "reads finished steps' logs from their files)")] = True
                         ) -> StreamingResponse:
        """Server-Sent Events of the run's events (``id:`` is the event's seq); resume with
        ``Last-Event-ID`` (or ``?since=``); the stream ends after ``run.finished``."""
        await run_in_threadpool(_row, run_id)
        after = since
        checked = time.monotonic()
        if last_event_id and last_event_id.isascii() and last_event_id.strip().isdigit() \
                and len(last_event_id.strip()) <= 9:
            after = int(last_event_id)

        loop = asyncio.get_running_loop()
        written = asyncio.Event()

        def wake() -> None:
            loop.call_soon_threadsafe(written.set)

        unwatch = manager.watch(run_id, wake)

        async def stream() -> AsyncIterator[bytes]:
            nonlocal after, checked
            try:
                yield b"retry: 1000\n\n"
                quiet = 0
                while True:
                    if time.monotonic() - checked > RECHECK_SECONDS:
                        # a stream outlives no sign-out, revoked token or ended session
                        if not await run_in_threadpool(_still_allowed, request):
                            return
                        checked = time.monotonic()
                    written.clear()
                    texts = await run_in_threadpool(store.events_after, run_id, after,
                                                    logs=logs)
                    for text in texts:
                        data = json.loads(text)
                        after = data["seq"]
                        yield f"id: {after}\ndata: {text}\n\n".encode()
                        if data["type"] == "run.finished":
                            return
                    if texts:
                        quiet = 0
                        continue
                    if await request.is_disconnected():
                        return
                    quiet += 1
                    if quiet % 5 == 0 and await run_in_threadpool(_over, run_id):
                        return  # it ended and the reader has every event: nothing will come
                    if quiet % 15 == 0:  # a comment keeps proxies from closing the stream
                        yield b": keep-alive\n\n"
                    # Woken by this process's writes; a run of another process is looked at
                    # again after a second.
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(written.wait(), 1.0)
            finally:
                unwatch()

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})

    def _still_allowed(request: Request) -> bool:
        """Whether what opened a stream (a token, or the page's session) still opens it."""
        header = request.headers.get("authorization", "")
        if header[:7].lower() == "bearer ":
            return store.token_role(header[7:].strip()) is not None
        session = request.cookies.get(SESSION_COOKIE)
        return session is not None and store.session_role(session) is not None

    def _over(run_id: str) -> bool:
        """The run ended more than 2 s ago (its last events are written by then)."""
        row = store.get_run(run_id)
        return row is None or (row.status in TERMINAL and row.ended is not None
                               and time.time() - row.ended > 2)

    @app.get("/api/v1/runs/{run_id}/logs/{job}/{step}", tags=["runs"],
             dependencies=[viewer], response_class=PlainTextResponse)
    def step_log(run_id: str, job: str, step: int) -> Response:
        row = _row(run_id)
        record = _record(row) or {}
        steps = ((record.get("jobs") or {}).get(job) or {}).get("steps") or []
        if not 0 <= step < len(steps) or not steps[step].get("log"):
            raise ApiError(404, f"run {run_id} has no log for job '{job}' step {step}")
        path = _in_run(run_id, str(steps[step]["log"]))
        if path is None or not os.path.isfile(path):
            raise ApiError(404, f"the log of job '{job}' step {step} is not kept")
        return FileResponse(path, media_type="text/plain; charset=utf-8")

    @app.get("/api/v1/runs/{run_id}/artifacts/{job}/{path:path}", tags=["runs"],
             dependencies=[viewer])
    def artifact(run_id: str, job: str, path: str) -> Response:
        _row(run_id)
        found = None if _escapes(f"{job}/{path}") else _in_run(run_id,
                                                                f"artifacts/{job}/{path}")
        if found is None or not os.path.isfile(found):
            raise ApiError(404, f"run {run_id} has no artifact '{path}' of job '{job}'")
        return FileResponse(found, filename=os.path.basename(found))

    @app.post("/api/v1/runs/{run_id}/cancel", tags=["runs"], dependencies=[runner],
              status_code=202)
    def cancel(run_id: str) -> JSONResponse:
        status = manager.cancel(run_id)
        if status is None:
            raise ApiError(404, f"no run with id '{run_id}'")
        return JSONResponse({"id": run_id, "status": status}, status_code=202)

    @app.post("/api/v1/runs/{run_id}/rerun", tags=["runs"], status_code=201)
    def rerun(run_id: str, body: Rerun, caller: Annotated[tuple[str, str], runner]
              ) -> JSONResponse:
        row = _row(run_id)
        may_start(row.flow, caller, version=row.version)
        try:
            new_id = manager.rerun(row, failed=body.failed, jobs=body.jobs,
                                   record=_record(row))
        except TriggerError as exc:
            raise ApiError(exc.status, str(exc)) from None
        return JSONResponse({"id": new_id}, status_code=201)

    # -- secrets and variables

    def named(name: str) -> str:
        import re

        if not re.fullmatch(NAME_PATTERN, name):
            raise ApiError(422, f"'{name[:100]}' is not a name: letters, digits and '_', "
                           "not starting with a digit")
        return name

    def sized(value: str) -> None:
        if len(value.encode("utf-8", "surrogatepass")) > MAX_VALUE:
            raise ApiError(413, f"a value is at most {MAX_VALUE} bytes (UTF-8)")

    def one(table: str, name: str, noun: str) -> dict[str, Any]:
        found = store.listing(table, name)
        if not found:
            raise ApiError(404, f"no {noun} named '{name}'")
        return found[0]

    @app.get("/api/v1/secrets", tags=["secrets"], dependencies=[admin])
    def list_secrets() -> dict[str, Any]:
        """Names and dates; never values."""
        return {"secrets": store.listing("secrets")}

    @app.get("/api/v1/secrets/{name}", tags=["secrets"], dependencies=[admin])
    def get_secret(name: str) -> dict[str, Any]:
        """A secret's name and dates; never its value."""
        return one("secrets", name, "secret")

    @app.put("/api/v1/secrets/{name}", tags=["secrets"], dependencies=[admin],
             status_code=204)
    def put_secret(name: str, body: Value) -> Response:
        named(name)
        sized(body.value)
        store.put_secret(name, manager.box.seal(name, body.value), manager.box.key_id)
        return Response(status_code=204)

    @app.delete("/api/v1/secrets/{name}", tags=["secrets"], dependencies=[admin],
                status_code=204)
    def delete_secret(name: str) -> Response:
        if not store.delete_named("secrets", name):
            raise ApiError(404, f"no secret named '{name}'")
        return Response(status_code=204)

    @app.get("/api/v1/variables", tags=["variables"], dependencies=[viewer])
    def list_variables() -> dict[str, Any]:
        return {"variables": store.listing("variables")}

    @app.get("/api/v1/variables/{name}", tags=["variables"], dependencies=[viewer])
    def get_variable(name: str) -> dict[str, Any]:
        return one("variables", name, "variable")

    @app.put("/api/v1/variables/{name}", tags=["variables"], dependencies=[admin],
             status_code=204)
    def put_variable(name: str, body: Value) -> Response:
        named(name)
        sized(body.value)
        store.put_variable(name, body.value)
        return Response(status_code=204)

    @app.delete("/api/v1/variables/{name}", tags=["variables"], dependencies=[admin],
                status_code=204)
    def delete_variable(name: str) -> Response:
        if not store.delete_named("variables", name):
            raise ApiError(404, f"no variable named '{name}'")
        return Response(status_code=204)

    # -- tokens

    @app.post("/api/v1/tokens", tags=["tokens"], dependencies=[admin], status_code=201)
    def create_token(body: TokenCreate) -> JSONResponse:
        """A new token; it is shown once, only a hash of it is kept."""
        try:
            token = store.create_token(body.name, body.role)
        except Conflict as exc:
            raise ApiError(409, str(exc)) from None
        return JSONResponse({"name": body.name, "role": body.role, "token": token},
                            status_code=201)

    @app.get("/api/v1/tokens", tags=["tokens"], dependencies=[admin])
    def list_tokens() -> dict[str, Any]:
        """Names, roles and dates of the tokens; never the tokens."""
        return {"tokens": store.list_tokens()}

    @app.delete("/api/v1/tokens/{name}", tags=["tokens"], status_code=204)
    def delete_token(name: str, caller: Annotated[tuple[str, str], admin]) -> Response:
        """Revoke a token at once (not the one making the call: that would lock out the
        last admin by mistake)."""
        if name == caller[0]:
            raise ApiError(409, f"the token '{name}' is the one making this call; revoke it "
                           "with another admin token")
        if not store.delete_token(name):
            raise ApiError(404, f"no token named '{name}'")
        return Response(status_code=204)

    # -- webhooks

    @app.post("/hooks/{flow}", tags=["webhooks"],
              responses={202: {"description": "a run was queued"},
                         200: {"description": "a duplicate delivery, or filtered out"}})
    async def webhook(flow: str, request: Request) -> JSONResponse:
        """A signed delivery (``X-Hub-Signature-256``) starting flow ``flow``."""
        length = request.headers.get("content-length", "")
        too_large = ApiError(413, f"the body is larger than {hooks.MAX_BODY} bytes")
        body = bytearray()
        if length.isdigit() and int(length) > hooks.MAX_BODY:
            await run_in_threadpool(_hook_trigger, flow, "too_large")
            raise too_large
        async for chunk in request.stream():
            body += chunk
            if len(body) > hooks.MAX_BODY:
                await run_in_threadpool(_hook_trigger, flow, "too_large")
                raise too_large
        return await run_in_threadpool(_deliver, flow, bytes(body), dict(request.headers))

    def _hook_trigger(flow: str, refused: str | None = None) -> Any:
        """The webhook trigger of stored flow ``flow``; 404 when it has none. ``refused``:
        the delivery's result to count first (only for flows that exist: the metric's
        ``flow`` label must stay bounded)."""
        from flowray.spec.triggers import webhook as webhook_trigger

        try:
            _, data = manager.load_flow(flow)
        except TriggerError:
            data = None
        trigger = webhook_trigger(data) if data is not None else None
        if trigger is None:
            raise ApiError(404, f"no flow named '{flow}' with a webhook trigger")
        if refused is not None:
            manager.metrics.webhook_delivery(flow, refused)
        return trigger

    def _deliver(flow: str, body: bytes, headers: dict[str, str]) -> JSONResponse:
        trigger = _hook_trigger(flow)
        metrics = manager.metrics
        blobs = dict(store.secret_blobs())
        if not trigger.secret or trigger.secret not in blobs:
            metrics.webhook_delivery(flow, "bad_signature")
            raise ApiError(401, "the flow's webhook secret is not set on the server "
                           f"(flowray secret set {trigger.secret or 'NAME'})")
        try:
            hooks.verify(manager.box.open(trigger.secret, blobs[trigger.secret]), body,
                         headers.get("x-hub-signature-256"))
            delivery = hooks.delivery_id(headers)
            event = hooks.parse_body(body)
            if not hooks.passes(trigger.condition, event):
                metrics.webhook_delivery(flow, "filtered")
                return JSONResponse({"filtered": True}, status_code=200)
        except hooks.HookError as exc:
            metrics.webhook_delivery(flow, exc.result)
            raise ApiError(exc.status, str(exc)) from None
        try:
            run_id, created = manager.trigger(flow, trigger="webhook", event=event,
                                              delivery=delivery)
        except TriggerError as exc:
            raise ApiError(exc.status, str(exc)) from None
        metrics.webhook_delivery(flow, "accepted" if created else "duplicate")
        if not created:
            return JSONResponse({"id": run_id, "duplicate": True}, status_code=200)
        return JSONResponse({"id": run_id}, status_code=202)

    app.state.store = store
    app.state.manager = manager
    return app


class _Static(StaticFiles):
    """The page's files, looked at again on every load (an upgraded package serves its new
    files at once; unchanged ones answer 304)."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        answer = super().file_response(*args, **kwargs)
        answer.headers["Cache-Control"] = "no-cache"
        return answer


def same_origin(request: Request) -> bool:
    """Whether a request's ``Origin`` (when it has one) is the host it was sent to."""
    from urllib.parse import urlsplit

    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return origin != "null" and urlsplit(origin).netloc.lower() == host.lower()


def flow_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a stored flow (it is a URL path segment, a metric label and
    something people read), or None."""
    import unicodedata

    if not name or len(name) > 200:
        return "a flow's name is 1 to 200 characters"
    if name != name.strip() or name in (".", "..") or "/" in name or "\\" in name:
        return (f"{name[:100]!r} cannot name a flow: no '/', no spaces around it, not '.' or "
                "'..'")
    bad = next((c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Zl",
                                                                "Zp")), None)
    if bad is not None:
        return (f"a flow's name cannot hold the character U+{ord(bad):04X} (control or "
                "formatting characters could make it read as another name)")
    return None


def _escapes(rel: str) -> bool:
    """Whether the relative path ``rel`` leaves its folder (``..``, absolute, empty)."""
    import posixpath

    norm = posixpath.normpath(rel.replace("\\", "/")) if rel else ".."
    return norm.startswith(("/", "../")) or norm in ("..", ".")


def _no_links(root: str, rel: str) -> str | None:
    """``root/rel`` when no part of ``rel`` is ``..`` or a symbolic link (a step may have
    put one in its own run folder, pointing anywhere the service can read), else None."""
    import posixpath
    import stat

    norm = posixpath.normpath(rel.replace(os.sep, "/"))
    if norm.startswith(("/", "../")) or norm == "..":
        return None
    path = root
    for part in norm.split("/"):
        path = os.path.join(path, part)
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):
                return None
        except OSError:
            return None
    return path
