"""What the service keeps in its database, one method per thing it does with it.

Every write that must happen once across several service processes is a compare-and-set
(a conditional ``UPDATE`` whose row count says who won) or a unique key: claiming a queued
run, claiming a schedule's fire, a webhook delivery id, an idempotency key.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets as pysecrets
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from flowray.service import tables as t
from flowray.store.records import pid_gone

ROLES = ("viewer", "runner", "admin")  # each role may do what the ones before it may
TERMINAL = ("success", "failure", "cancelled", "skipped")
TOKEN_PREFIX = "frt_"


_CLAIM_FIRE = update(t.schedules).where(
    t.schedules.c.flow == bindparam("f"), t.schedules.c.idx == bindparam("i"),
    t.schedules.c.next_fire == bindparam("old")).values(next_fire=bindparam("new"))
_NEXT_NUMBER = update(t.flows).where(t.flows.c.name == bindparam("f")).values(
    last_number=t.flows.c.last_number + 1).returning(t.flows.c.last_number)
_INSERT_RUN = insert(t.runs)


def role_allows(role: str, needed: str) -> bool:
    return ROLES.index(role) >= ROLES.index(needed)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + pysecrets.token_urlsafe(32)


class Conflict(Exception):
    """A name that is taken (a token's), or a state that forbids the change."""


@dataclass
class NewRun:
    """A run to queue: what the trigger gave, checked."""

    flow: str
    version: int
    trigger: str
    inputs: dict[str, Any]
    event: dict[str, Any]
    group: str | None = None
    group_max: int = 1
    idempotency_key: str | None = None
    rerun_of: str | None = None
    reuse: dict[str, Any] | None = None


RUN_FIELDS = ("id", "flow", "version", "number", "status", "trigger", "created", "started",
              "ended", "exit_code", "reason")


def run_summary(row: Any) -> dict[str, Any]:
    return {k: getattr(row, k) for k in RUN_FIELDS}


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ------------------------------------------------------------------ health, instances

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(select(1))

    def register_instance(self, instance: str | None = None) -> str:
        """Say that this process serves the database (again, with ``instance``)."""
        instance = instance or \
            f"{socket.gethostname()[:40]}-{os.getpid()}-{pysecrets.token_hex(4)}"
        with self.engine.begin() as conn:
            conn.execute(insert(t.instances).values(
                id=instance, host=machine_identity(), pid=os.getpid(), heartbeat=time.time()))
        return instance

    def heartbeat(self, instance: str) -> bool:
        """Note that ``instance`` is alive; False when its row was gone (another process
        took it for dead), in which case it is made again."""
        with self.engine.begin() as conn:
            done = conn.execute(update(t.instances).where(t.instances.c.id == instance)
                                .values(heartbeat=time.time())).rowcount
        if not done:
            self.register_instance(instance)
        return bool(done)

    def remove_instance(self, instance: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(t.instances).where(t.instances.c.id == instance))

    def dead_instances(self, *, stale: float | None) -> list[str]:
        """Instances that are gone: on this machine (same boot, same process namespace) with
        no such process, or silent for ``stale`` seconds (None: only the first kind)."""
        here = machine_identity()
        out = []
        with self.engine.connect() as conn:
            for row in conn.execute(select(t.instances)):
                gone = row.host == here and pid_gone(row.pid)
                if gone or (stale is not None and time.time() - row.heartbeat > stale):
                    out.append(row.id)
        return out

    def ownerless_runs(self) -> list[str]:
        """Runs ``running`` in a process that has no instance row at all (it was removed):
        nobody will ever end them."""
        with self.engine.connect() as conn:
            alive = select(t.instances.c.id)
            return [r.id for r in conn.execute(select(t.runs.c.id).where(
                t.runs.c.status == "running", t.runs.c.owner.is_not(None),
                t.runs.c.owner.not_in(alive)))]

    def settle_orphans(self, dead: Sequence[str], reason: str,
                       runs: Sequence[str] = ()) -> list[str]:
        """Mark ``failure`` every run that was running in a service process that is gone
        (and the ``runs`` named); the ids."""
        if not dead and not runs:
            return []
        with self.engine.begin() as conn:
            ids = [r.id for r in conn.execute(
                select(t.runs.c.id).where(or_(t.runs.c.owner.in_(list(dead)),
                                              t.runs.c.id.in_(list(runs))),
                                          t.runs.c.status == "running"))]
            now = time.time()
            for run_id in ids:
                conn.execute(update(t.runs).where(t.runs.c.id == run_id,
                                                  t.runs.c.status == "running")
                             .values(status="failure", ended=now, exit_code=1, reason=reason))
            conn.execute(delete(t.instances).where(t.instances.c.id.in_(dead)))
        return ids

    # ------------------------------------------------------------------ tokens

    def has_tokens(self) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(t.tokens)).scalar_one() > 0

    def create_token(self, name: str, role: str) -> str:
        token = new_token()
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(t.tokens).values(name=name, role=role,
                                                     hash=token_hash(token),
                                                     created=time.time()))
        except IntegrityError:
            raise Conflict(f"a token named '{name}' exists already") from None
        return token

    def list_tokens(self) -> list[dict[str, Any]]:
        """Names, roles and dates; never the tokens (only their hashes are kept)."""
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(
                select(t.tokens.c.name, t.tokens.c.role, t.tokens.c.created)
                .order_by(t.tokens.c.name))]

    def delete_token(self, name: str) -> bool:
        with self.engine.begin() as conn:
            return bool(conn.execute(delete(t.tokens).where(t.tokens.c.name == name)).rowcount)

    def token_role(self, token: str) -> tuple[str, str] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.tokens.c.name, t.tokens.c.role)
                               .where(t.tokens.c.hash == token_hash(token))).first()
        return (row.name, row.role) if row else None

    # ------------------------------------------------------------------ page sessions

    def open_session(self, token: str, *, lifetime: float
                     ) -> tuple[str, str, str, str] | None:
        """A new web page session for ``token``: (session id, its CSRF value, token name,
        role), or None when the token is not valid. Only hashes of the two values are kept.
        Sessions that have ended are removed on the way."""
        found = self.token_role(token)
        if found is None:
            return None
        session, csrf = pysecrets.token_urlsafe(32), pysecrets.token_urlsafe(32)
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(delete(t.sessions).where(t.sessions.c.expires < now))
            conn.execute(insert(t.sessions).values(hash=token_hash(session),
                                                   token_hash=token_hash(token),
                                                   csrf_hash=token_hash(csrf),
                                                   created=now, expires=now + lifetime))
        return session, csrf, found[0], found[1]

    def session_role(self, session: str) -> tuple[str, str, str] | None:
        """(token name, role, hash of the CSRF value) of a live session: not ended, and its
        token not revoked."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.tokens.c.name, t.tokens.c.role, t.sessions.c.csrf_hash)
                .join(t.sessions, t.sessions.c.token_hash == t.tokens.c.hash)
                .where(t.sessions.c.hash == token_hash(session),
                       t.sessions.c.expires > time.time())).first()
        return (row.name, row.role, row.csrf_hash) if row else None

    def close_session(self, session: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(t.sessions).where(t.sessions.c.hash == token_hash(session)))

    # ------------------------------------------------------------------ flows

    def push_flow(self, name: str, *, path: str, text: str, files: Mapping[str, str],
                  executable: Sequence[str],
                  triggers: Sequence[str], flow_triggers: Sequence[tuple[str, list[str]]],
                  schedules: Sequence[tuple[str, str, float, float]]
                  ) -> tuple[int, float, bool]:
        """Store a new version of flow ``name`` and replace its schedules; (version, time,
        whether the flow is new: it was not kept, or was removed).
        Two pushes of one flow at once get two versions (the loser of the race on the
        version number tries again)."""
        for attempt in range(10):
            try:
                return self._push(name, path=path, text=text, files=files,
                                  executable=executable, triggers=triggers,
                                  flow_triggers=flow_triggers, schedules=schedules)
            except IntegrityError:
                if attempt == 9:
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def _push(self, name: str, *, path: str, text: str, files: Mapping[str, str],
              executable: Sequence[str], triggers: Sequence[str],
              flow_triggers: Sequence[tuple[str, list[str]]],
              schedules: Sequence[tuple[str, str, float, float]]
              ) -> tuple[int, float, bool]:
        now = time.time()
        with self.engine.begin() as conn:
            row = conn.execute(select(t.flows).where(t.flows.c.name == name)
                               .with_for_update()).first()
            new = row is None or bool(row.deleted)
            if row is None:
                version = 1
                conn.execute(insert(t.flows).values(name=name, version=1, deleted=False,
                                                    created=now, updated=now, last_number=0))
            else:
                version = row.version + 1
                conn.execute(update(t.flows).where(t.flows.c.name == name)
                             .values(version=version, deleted=False, updated=now))
            conn.execute(insert(t.flow_versions).values(
                flow=name, version=version, path=path, text=text,
                files=json.dumps(dict(files)), executable=json.dumps(sorted(executable)),
                triggers=json.dumps(list(triggers)),
                flow_triggers=json.dumps([[f, s] for f, s in flow_triggers]), created=now))
            conn.execute(delete(t.schedules).where(t.schedules.c.flow == name))
            for i, (cron, tz, catchup, next_fire) in enumerate(schedules):
                conn.execute(insert(t.schedules).values(flow=name, idx=i, cron=cron,
                                                        timezone=tz, catchup=catchup,
                                                        next_fire=next_fire))
        return version, now, new

    def list_flows(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.flows, t.flow_versions.c.triggers)
                .join(t.flow_versions, and_(t.flow_versions.c.flow == t.flows.c.name,
                                            t.flow_versions.c.version == t.flows.c.version))
                .where(t.flows.c.deleted.is_(False)).order_by(t.flows.c.name)).all()
            fires = self.next_fires()
            out = []
            for row in rows:
                last = conn.execute(select(t.runs.c.id, t.runs.c.status, t.runs.c.created)
                                    .where(t.runs.c.flow == row.name)
                                    .order_by(t.runs.c.created.desc()).limit(1)).first()
                out.append({
                    "name": row.name, "version": row.version, "updated": row.updated,
                    "triggers": json.loads(row.triggers),
                    "last_run": {"id": last.id, "status": last.status,
                                 "created": last.created} if last else None,
                    "next_fire": fires.get(row.name),
                })
        return out

    def flow_version(self, name: str) -> int | None:
        """The current version of flow ``name`` (None: no such flow, or it was removed)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(t.flows.c.version).where(
                t.flows.c.name == name, t.flows.c.deleted.is_(False))).first()
        return int(row.version) if row else None

    def get_flow(self, name: str, version: int | None = None, *, versions: bool = True
                 ) -> dict[str, Any] | None:
        """Flow ``name`` at ``version`` (its current one by default), with the list of its
        versions unless ``versions`` is False."""
        with self.engine.connect() as conn:
            flow = conn.execute(select(t.flows).where(t.flows.c.name == name,
                                                      t.flows.c.deleted.is_(False))).first()
            if flow is None:
                return None
            row = conn.execute(select(t.flow_versions).where(
                t.flow_versions.c.flow == name,
                t.flow_versions.c.version == (version or flow.version))).first()
            if row is None:
                return None
            listed = [{"version": r.version, "created": r.created} for r in conn.execute(
                select(t.flow_versions.c.version, t.flow_versions.c.created)
                .where(t.flow_versions.c.flow == name)
                .order_by(t.flow_versions.c.version.desc()))] if versions else []
        return {"name": name, "version": row.version, "path": row.path, "text": row.text,
                "files": json.loads(row.files), "executable": json.loads(row.executable),
                "created": row.created, "versions": listed,
                "current": flow.version}

    def delete_flow(self, name: str) -> bool:
        with self.engine.begin() as conn:
            done = conn.execute(update(t.flows).where(t.flows.c.name == name,
                                                      t.flows.c.deleted.is_(False))
                                .values(deleted=True, updated=time.time())).rowcount
            conn.execute(delete(t.schedules).where(t.schedules.c.flow == name))
        return bool(done)

    def flow_trigger_edges(self) -> dict[str, list[tuple[str, list[str]]]]:
        """Each flow's current flow triggers: name -> [(upstream flow, statuses)]."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.flows.c.name, t.flow_versions.c.flow_triggers)
                .join(t.flow_versions, and_(t.flow_versions.c.flow == t.flows.c.name,
                                            t.flow_versions.c.version == t.flows.c.version))
                .where(t.flows.c.deleted.is_(False)))
            return {r.name: [(f, list(s)) for f, s in json.loads(r.flow_triggers)]
                    for r in rows}

    # ------------------------------------------------------------------ schedules

    def due_schedules(self, now: float) -> list[Any]:
        """Schedules whose next fire has come, with their flow's current version."""
        with self.engine.connect() as conn:
            return list(conn.execute(
                select(t.schedules, t.flows.c.version)
                .join(t.flows, t.flows.c.name == t.schedules.c.flow)
                .where(t.schedules.c.next_fire <= now).order_by(t.schedules.c.next_fire)))

    def claim_fires(self, moves: Sequence[tuple[str, int, float, float]]
                    ) -> set[tuple[str, int]]:
        """Move each schedule (flow, idx) from its next fire ``old`` to ``new``; the
        schedules this process moved (compare-and-set: with several processes, each fire
        is moved by one)."""
        won: set[tuple[str, int]] = set()
        with self.engine.begin() as conn:
            for flow, idx, old, new in moves:
                if conn.execute(_CLAIM_FIRE, {"f": flow, "i": idx, "old": old,
                                              "new": new}).rowcount == 1:
                    won.add((flow, idx))
        return won

    def next_due(self) -> float | None:
        """When the next schedule fire of any flow is due."""
        with self.engine.connect() as conn:
            due = conn.execute(select(func.min(t.schedules.c.next_fire))).scalar_one()
        return float(due) if due is not None else None

    def next_fires(self) -> dict[str, float]:
        with self.engine.connect() as conn:
            return {r.flow: r.next_fire for r in conn.execute(
                select(t.schedules.c.flow, func.min(t.schedules.c.next_fire).label("next_fire"))
                .group_by(t.schedules.c.flow))}

    # ------------------------------------------------------------------ runs

    def queue_runs(self, runs: Sequence[tuple[str, NewRun]]) -> None:
        """Queue several runs (without idempotency keys or deliveries) in one transaction."""
        if not runs:
            return
        with self.engine.begin() as conn:
            for run_id, new in runs:
                self._insert_run(conn, run_id, new, time.time())

    def queue_run(self, run_id: str, new: NewRun, *, delivery: str | None = None
                  ) -> tuple[str, bool]:
        """Queue a run; (its id, True) or, when its idempotency key or webhook delivery id
        was seen, (the id of the run they started, False)."""
        now = time.time()
        try:
            with self.engine.begin() as conn:
                if delivery is not None:
                    conn.execute(insert(t.deliveries).values(flow=new.flow, delivery=delivery,
                                                             run=run_id, created=now))
                self._insert_run(conn, run_id, new, now)
        except IntegrityError:
            existing = self._existing_run(new, delivery)
            if existing is None:
                raise
            return existing, False
        return run_id, True

    @staticmethod
    def _insert_run(conn: Any, run_id: str, new: NewRun, now: float) -> None:
        # Statements made once, with their values as parameters: a thousand schedule fires
        # queue their runs in one transaction without compiling a statement for each.
        number = conn.execute(_NEXT_NUMBER, {"f": new.flow}).scalar_one()
        conn.execute(_INSERT_RUN, {
            "id": run_id, "flow": new.flow, "version": new.version, "number": number,
            "status": "queued", "trigger": new.trigger, "inputs": json.dumps(new.inputs),
            "event": json.dumps(new.event), "created": now,
            "idempotency_key": new.idempotency_key, "group_name": new.group,
            "group_max": new.group_max, "cancel_requested": False, "rerun_of": new.rerun_of,
            "reuse": json.dumps(new.reuse) if new.reuse is not None else None})

    def _existing_run(self, new: NewRun, delivery: str | None) -> str | None:
        with self.engine.connect() as conn:
            if delivery is not None:
                row = conn.execute(select(t.deliveries.c.run).where(
                    t.deliveries.c.flow == new.flow, t.deliveries.c.delivery == delivery)).first()
                if row is not None:
                    return str(row.run)
            if new.idempotency_key is not None:
                row = conn.execute(select(t.runs.c.id).where(
                    t.runs.c.flow == new.flow,
                    t.runs.c.idempotency_key == new.idempotency_key)).first()
                if row is not None:
                    return str(row.id)
        return None

    def get_run(self, run_id: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(select(t.runs).where(t.runs.c.id == run_id)).first()

    def list_runs(self, *, flow: str | None = None, status: str | None = None,
                  trigger: str | None = None, limit: int = 50, before: str | None = None
                  ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first; ``before`` is the cursor the previous page returned."""
        query = select(*[t.runs.c[k] for k in RUN_FIELDS])
        if flow:
            query = query.where(t.runs.c.flow == flow)
        if status:
            query = query.where(t.runs.c.status == status)
        if trigger:
            query = query.where(t.runs.c.trigger == trigger)
        if before:
            created_text, _, after_id = before.partition("_")
            try:
                created = float(created_text)
            except ValueError:
                raise ValueError("before: not a cursor this server gave") from None
            query = query.where(or_(t.runs.c.created < created,
                                    and_(t.runs.c.created == created, t.runs.c.id < after_id)))
        query = query.order_by(t.runs.c.created.desc(), t.runs.c.id.desc()).limit(limit + 1)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        page = [run_summary(r) for r in rows[:limit]]
        cursor = f"{rows[limit - 1].created!r}_{rows[limit - 1].id}" \
            if len(rows) > limit else None
        return page, cursor

    def queued_runs(self, limit: int = 100) -> list[Any]:
        """The oldest queued runs that may start now: those of a concurrency group with
        room (a long queue of one group does not hide the runs behind it)."""
        others = t.runs.alias("others")
        running = select(func.count()).select_from(others).where(
            others.c.group_name == t.runs.c.group_name,
            others.c.status == "running").scalar_subquery()
        with self.engine.connect() as conn:
            return list(conn.execute(
                select(t.runs).where(t.runs.c.status == "queued",
                                     or_(t.runs.c.group_name.is_(None),
                                         running < t.runs.c.group_max))
                .order_by(t.runs.c.created, t.runs.c.id).limit(limit)))

    def claim_run(self, run_id: str, owner: str, *, group: str | None = None,
                  group_max: int = 1) -> bool:
        """queued -> running for ``owner``; True for the one process that did. With a
        concurrency ``group``, only while fewer than ``group_max`` of its runs are running:
        checked in the same statement, under a per-group lock on PostgreSQL (SQLite takes
        its one write lock for the statement), so two processes never exceed it."""
        claim = update(t.runs).where(t.runs.c.id == run_id, t.runs.c.status == "queued")
        if group is not None:
            others = t.runs.alias("others")
            running = select(func.count()).select_from(others).where(
                others.c.group_name == group, others.c.status == "running").scalar_subquery()
            claim = claim.where(running < group_max)
        with self.engine.begin() as conn:
            if group is not None and conn.dialect.name == "postgresql":
                key = int.from_bytes(hashlib.sha256(group.encode()).digest()[:8], "big",
                                     signed=True)
                conn.execute(select(func.pg_advisory_xact_lock(key)))
            return conn.execute(claim.values(status="running", owner=owner,
                                             started=time.time())).rowcount == 1

    def requeue(self, run_id: str, owner: str) -> None:
        """running -> queued again, for a run ``owner`` claimed but could not start."""
        with self.engine.begin() as conn:
            conn.execute(update(t.runs).where(t.runs.c.id == run_id,
                                              t.runs.c.status == "running",
                                              t.runs.c.owner == owner)
                         .values(status="queued", owner=None, started=None))

    def finish_run(self, run_id: str, *, status: str, exit_code: int | None,
                   reason: str | None = None, record: Mapping[str, Any] | None = None,
                   only_from: Iterable[str] = ("queued", "running"),
                   owner: str | None = None) -> bool:
        """Set a run's final status once; False when it had one already. ``owner``: the
        process that ran it, whose end also replaces a ``failure`` set by a process that
        took it for lost (it has no record)."""
        allowed: Any = t.runs.c.status.in_(list(only_from))
        if owner is not None:
            allowed = or_(allowed, and_(t.runs.c.owner == owner, t.runs.c.record.is_(None),
                                        t.runs.c.status == "failure"))
        with self.engine.begin() as conn:
            return conn.execute(update(t.runs).where(t.runs.c.id == run_id, allowed).values(
                status=status, exit_code=exit_code, ended=time.time(), reason=reason,
                record=json.dumps(record) if record is not None else None)).rowcount == 1

    def request_cancel(self, run_ids: Iterable[str]) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(t.runs).where(t.runs.c.id.in_(list(run_ids)))
                         .values(cancel_requested=True))

    def running_in_group_ids(self, group: str) -> list[str]:
        with self.engine.connect() as conn:
            return [r.id for r in conn.execute(select(t.runs.c.id).where(
                t.runs.c.group_name == group, t.runs.c.status.in_(["running", "queued"])))]

    def cancel_requests(self, owner: str) -> list[str]:
        with self.engine.connect() as conn:
            return [r.id for r in conn.execute(select(t.runs.c.id).where(
                t.runs.c.owner == owner, t.runs.c.status == "running",
                t.runs.c.cancel_requested.is_(True)))]

    def count_runs(self, status: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(t.runs)
                                    .where(t.runs.c.status == status)).scalar_one())

    def old_runs(self, flow: str, *, keep: int | None, before: float | None) -> list[str]:
        """Ended runs of ``flow`` past the newest ``keep`` or ended before ``before``."""
        out: set[str] = set()
        with self.engine.connect() as conn:
            ended = select(t.runs.c.id).where(t.runs.c.flow == flow,
                                              t.runs.c.status.in_(TERMINAL))
            if keep is not None:
                out.update(r.id for r in conn.execute(
                    ended.order_by(t.runs.c.created.desc(), t.runs.c.id.desc()).offset(keep)))
            if before is not None:
                out.update(r.id for r in conn.execute(ended.where(t.runs.c.ended < before)))
        return sorted(out)

    def delete_runs(self, ids: Sequence[str]) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(t.events).where(t.events.c.run.in_(list(ids))))
            conn.execute(delete(t.runs).where(t.runs.c.id.in_(list(ids))))

    # ------------------------------------------------------------------ events

    def add_events(self, run_id: str, events: Sequence[Mapping[str, Any]]) -> None:
        if not events:
            return
        with self.engine.begin() as conn:
            conn.execute(insert(t.events), [
                {"run": run_id, "seq": e["seq"], "type": e["type"], "data": json.dumps(e)}
                for e in events])

    def drop_events(self, run_id: str, *, from_seq: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(t.events).where(t.events.c.run == run_id,
                                                t.events.c.seq >= from_seq))

    def events_after(self, run_id: str, after: int, limit: int = 1000, *,
                     logs: bool = True) -> list[str]:
        """The JSON texts of run ``run_id``'s events with ``seq > after``, in order (without
        its step.log events unless ``logs``)."""
        query = select(t.events.c.data).where(t.events.c.run == run_id,
                                              t.events.c.seq > after)
        if not logs:
            query = query.where(t.events.c.type != "step.log")
        with self.engine.connect() as conn:
            return [r.data for r in conn.execute(query.order_by(t.events.c.seq).limit(limit))]

    def last_seq(self, run_id: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.max(t.events.c.seq), 0))
                                    .where(t.events.c.run == run_id)).scalar_one())

    # ------------------------------------------------------------------ secrets, variables

    def put_secret(self, name: str, blob: bytes, key_id: str) -> None:
        self._put(t.secrets, name, {"blob": blob, "key_id": key_id})

    def secret_blobs(self) -> list[tuple[str, bytes]]:
        with self.engine.connect() as conn:
            return [(r.name, bytes(r.blob)) for r in conn.execute(
                select(t.secrets.c.name, t.secrets.c.blob))]

    def replace_secret_blobs(self, blobs: Sequence[tuple[str, bytes]], key_id: str,
                             canary: bytes) -> None:
        """Rotation: every secret and the canary in one transaction."""
        with self.engine.begin() as conn:
            for name, blob in blobs:
                conn.execute(update(t.secrets).where(t.secrets.c.name == name)
                             .values(blob=blob, key_id=key_id))
            self._set_meta(conn, "secret-canary", canary)

    def put_variable(self, name: str, value: str) -> None:
        self._put(t.variables, name, {"value": value})

    def variable_values(self) -> dict[str, str]:
        with self.engine.connect() as conn:
            return {r.name: r.value for r in conn.execute(select(t.variables))}

    def listing(self, table: str, name: str | None = None) -> list[dict[str, Any]]:
        """Secrets' names and dates (never their values), or variables' with their values;
        only the one called ``name`` when it is given."""
        tab = t.secrets if table == "secrets" else t.variables
        cols = [tab.c.name, tab.c.created, tab.c.updated]
        if tab is t.variables:
            cols.append(tab.c.value)
        query = select(*cols).order_by(tab.c.name)
        if name is not None:
            query = query.where(tab.c.name == name)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def delete_named(self, table: str, name: str) -> bool:
        tab = t.secrets if table == "secrets" else t.variables
        with self.engine.begin() as conn:
            return bool(conn.execute(delete(tab).where(tab.c.name == name)).rowcount)

    def _put(self, tab: Any, name: str, values: dict[str, Any]) -> None:
        now = time.time()
        with self.engine.begin() as conn:
            done = conn.execute(update(tab).where(tab.c.name == name)
                                .values(updated=now, **values)).rowcount
            if not done:
                try:
                    with conn.begin_nested():
                        conn.execute(insert(tab).values(name=name, created=now, updated=now,
                                                        **values))
                except IntegrityError:  # set at the same moment by another request
                    conn.execute(update(tab).where(tab.c.name == name)
                                 .values(updated=now, **values))

    def get_meta(self, key: str) -> bytes | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.meta.c.value).where(t.meta.c.key == key)).first()
        return bytes(row.value) if row else None

    def set_meta_once(self, key: str, value: bytes) -> bytes:
        """Set ``key`` unless set; the value it has."""
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(t.meta).values(key=key, value=value))
        except IntegrityError:
            pass
        got = self.get_meta(key)
        return got if got is not None else value

    @staticmethod
    def _set_meta(conn: Any, key: str, value: bytes) -> None:
        if not conn.execute(update(t.meta).where(t.meta.c.key == key)
                            .values(value=value)).rowcount:
            conn.execute(insert(t.meta).values(key=key, value=value))


def machine_identity() -> str:
    """This machine and process namespace: a pid means the same process only for processes
    with the same identity (not in another container with the same host name, nor after a
    reboot)."""
    parts = [socket.gethostname()]
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            parts.append(fh.read().strip())
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        pass
    return "/".join(parts)[:255]
