"""A flow's ``triggers`` and ``concurrency``: reading them, and checking what validation can.

``triggers.manual``: the typed inputs a person gives when starting a flow by hand. flowray's own
spelling is ``triggers.manual.inputs`` (typed like action inputs); DataTorch's is
``triggers.manual.form``, a JSON Schema of the start form. Both are read here into one map of
input specs, so that ``flowray run --input`` and validation treat them alike.

``schedule``, ``webhook``, ``flow`` and the top-level ``concurrency`` are read by the service
(``flowray serve``) as plain frozen dataclasses, from a flow that validated; ``flowray run``
ignores them. Free of pydantic; croniter is imported only to check a flow that has schedules.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flowray.spec.diagnostics import KeyPath, Severity, describe, did_you_mean, format_path
from flowray.spec.graph import find_cycle
from flowray.spec.limits import MAX_PARALLEL
from flowray.status import Status

# JSON Schema type -> flowray input type
FORM_TYPES = {
    "string": "string",
    "integer": "integer",
    "number": "float",
    "boolean": "boolean",
    "array": "array",
    "object": "object",
}


def manual_trigger(flow: Mapping[str, Any]) -> Mapping[str, Any]:
    triggers = flow.get("triggers")
    manual = triggers.get("manual") if isinstance(triggers, Mapping) else None
    return manual if isinstance(manual, Mapping) else {}


def form_inputs(form: Any) -> Iterator[tuple[str, dict[str, Any], KeyPath, str | None]]:
    """Each property of a JSON Schema form as (name, input spec, its key path under the form,
    a problem with it or None)."""
    if not isinstance(form, Mapping):
        return
    props = form.get("properties")
    if not isinstance(props, Mapping):
        return
    required = form.get("required")
    required = set(required) if isinstance(required, list) else set()
    for name, prop in props.items():
        path: KeyPath = ("properties", str(name))
        if not isinstance(prop, Mapping):
            yield str(name), {}, path, f"expected a JSON Schema map, got {describe(prop)}"
            continue
        kind: Any = prop.get("type", "string")
        if isinstance(kind, list):  # ["string", "null"]: the first that is not null
            kind = next((k for k in kind if k != "null"), "string")
        if kind not in FORM_TYPES:
            yield str(name), {}, (*path, "type"), (
                f"unsupported form type {describe(kind)} "
                f"(types: {', '.join(FORM_TYPES)})"
            )
            continue
        description = prop.get("description", prop.get("title"))
        yield str(name), {
            "type": FORM_TYPES[kind],
            "required": name in required,
            "default": prop.get("default"),
            "description": description if isinstance(description, str) else None,
        }, path, None


def manual_inputs(flow: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The typed inputs of ``triggers.manual``: its ``form`` properties, then its ``inputs``
    (which win for a name in both). Specs that are not maps are left out (validation reports
    them)."""
    manual = manual_trigger(flow)
    out: dict[str, dict[str, Any]] = {}
    for name, spec, _, problem in form_inputs(manual.get("form")):
        if problem is None:
            out[name] = spec
    declared = manual.get("inputs")
    if isinstance(declared, Mapping):
        for name, raw in declared.items():
            if isinstance(raw, Mapping):
                out[str(name)] = {
                    "type": raw.get("type", "string"),
                    "required": bool(raw.get("required")),
                    "default": raw.get("default"),
                    "description": raw.get("description"),
                }
    return out


# ----------------------------------------------------------------------------- service triggers


TRIGGER_KINDS = ("manual", "schedule", "webhook", "flow", "annotatorButton")
SCHEDULE_KEYS = ("cron", "timezone", "catchup")
WEBHOOK_KEYS = ("secret", "if")
FLOW_TRIGGER_KEYS = ("name", "status")
CONCURRENCY_KEYS = ("group", "max", "cancel-in-progress")
DEFAULT_TIMEZONE = "UTC"
DEFAULT_CATCHUP_SECONDS = 3600.0
DEFAULT_FLOW_STATUSES = ("success",)
# How a run can end: what a flow trigger may wait for.
FLOW_STATUSES = tuple(s.value for s in Status if s.is_terminal())
# What the templates of each trigger value may read.
WEBHOOK_CONTEXTS = ("event",)
GROUP_CONTEXTS = ("inputs", "flow", "event", "variables")
# Runs at once in one concurrency group: as many as a matrix may run at once.
MAX_CONCURRENCY = MAX_PARALLEL
# A catch-up window past a year is a mistake; it also keeps the service's arithmetic small.
MAX_DURATION_SECONDS = 366 * 86400.0
# A cron expression longer than this is a mistake (60 minutes listed one by one is ~170).
MAX_CRON_CHARS = 1000

SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_HELP = ("a number and a unit (s, m, h or d), e.g. '90s', '30m', '1h' or '1h30m'; "
                  "0 disables")

_CRON_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day of month", "1-31"),
    ("month", "1-12 or jan-dec"),
    ("day of week", "0-7 or sun-sat; 0 and 7 are Sunday"),
)
_CRON_HELP = "minute hour day-of-month month day-of-week, e.g. '30 2 * * *'"
_CRON_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# Names that load as zones but name this machine's settings (or leap-second clocks), not a zone
# that is the same everywhere.
_MACHINE_ZONES = ("localtime", "posixrules")
_MACHINE_ZONE_PREFIXES = ("posix/", "right/")
# Keys people write for ours, too far apart for "did you mean".
_KEY_ALIASES = {"tz": "timezone", "time-zone": "timezone", "max-parallel": "max",
                "limit": "max", "flow": "name", "statuses": "status"}
# GitHub Actions' triggers -> (flowray's, or None, what to do instead)
_GHA_TRIGGERS: dict[str, tuple[str | None, str]] = {
    "workflow_dispatch": ("manual", ""),
    "workflow_run": ("flow", ""),
    "repository_dispatch": ("webhook", ""),
    "push": (None, "a 'webhook' trigger receives your git host's push events; test them "
                   "with 'if', e.g. event.ref == 'refs/heads/main'"),
    "pull_request": (None, "a 'webhook' trigger receives your git host's events; test them "
                           "with 'if'"),
}


@dataclass(frozen=True)
class ScheduleTrigger:
    """One ``triggers.schedule`` entry: ``cron`` fields are wall-clock times in ``timezone``;
    a fire missed while the service was down runs once if at most ``catchup_seconds`` old
    (0: never)."""

    cron: str
    timezone: str
    catchup_seconds: float


@dataclass(frozen=True)
class WebhookTrigger:
    """``triggers.webhook``: the stored secret that signs deliveries (its name), and the
    ``if`` text (an expression reading ``event``, the delivery's JSON body), None when absent."""

    secret: str | None
    condition: str | None


@dataclass(frozen=True)
class FlowTrigger:
    """One ``triggers.flow`` entry: a run of flow ``name`` that ends with one of ``statuses``
    starts this flow."""

    name: str
    statuses: tuple[str, ...]


@dataclass(frozen=True)
class Concurrency:
    """The flow's ``concurrency``: at most ``max`` runs of one ``group`` (a text that may hold
    templates reading inputs, flow, event and variables) run at once; the rest queue, or with
    ``cancel_in_progress`` a new run cancels the running ones."""

    group: str
    max: int
    cancel_in_progress: bool


@dataclass(frozen=True)
class TriggerProblem:
    """A problem in ``triggers`` or ``concurrency``: where (a key path from the flow's top),
    what, and whether it is a warning."""

    path: KeyPath
    message: str
    severity: Severity = "error"


# ----------------------------------------------------------------------------- accessors


def _triggers(flow: Mapping[str, Any]) -> Mapping[str, Any]:
    """``triggers`` as a map: the list form (``[manual, webhook]``) names kinds without
    settings."""
    triggers = flow.get("triggers")
    if isinstance(triggers, Mapping):
        return triggers
    if isinstance(triggers, list):
        return {kind: None for kind in triggers if isinstance(kind, str)}
    return {}


def _entries(value: Any) -> list[Any]:
    """A list of entries, or one map written without the list."""
    if isinstance(value, Mapping):
        return [value]
    return list(value) if isinstance(value, list) else []


def schedules(flow: Mapping[str, Any]) -> list[ScheduleTrigger]:
    """The ``triggers.schedule`` entries of a flow that validated, with defaults filled in."""
    out = []
    for entry in _entries(_triggers(flow).get("schedule")):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("cron"), str):
            continue
        zone = entry.get("timezone")
        catchup = entry.get("catchup")
        out.append(ScheduleTrigger(
            cron=" ".join(entry["cron"].split()),
            timezone=zone if isinstance(zone, str) else DEFAULT_TIMEZONE,
            catchup_seconds=DEFAULT_CATCHUP_SECONDS if catchup is None
            else parse_duration(catchup),
        ))
    return out


def webhook(flow: Mapping[str, Any]) -> WebhookTrigger | None:
    """``triggers.webhook`` of a flow that validated, or None when it has none."""
    triggers = _triggers(flow)
    if "webhook" not in triggers:
        return None
    hook = triggers["webhook"]
    hook = hook if isinstance(hook, Mapping) else {}
    secret = hook.get("secret")
    condition = hook.get("if")
    if isinstance(condition, bool):
        condition = "true" if condition else "false"
    return WebhookTrigger(
        secret=secret if isinstance(secret, str) else None,
        condition=condition if isinstance(condition, str) and condition.strip() else None,
    )


def _statuses(value: Any) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_FLOW_STATUSES
    listed = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return tuple(dict.fromkeys(s for s in listed if isinstance(s, str)))


def flow_triggers(flow: Mapping[str, Any]) -> list[FlowTrigger]:
    """The ``triggers.flow`` entries of a flow that validated (statuses default to
    ``success``)."""
    out = []
    for entry in _entries(_triggers(flow).get("flow")):
        if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
            out.append(FlowTrigger(name=entry["name"], statuses=_statuses(entry.get("status"))))
    return out


def concurrency(flow: Mapping[str, Any]) -> Concurrency | None:
    """The ``concurrency`` of a flow that validated (a text is its group), or None."""
    value = flow.get("concurrency")
    if isinstance(value, str):
        return Concurrency(group=value, max=1, cancel_in_progress=False)
    if not isinstance(value, Mapping) or not isinstance(value.get("group"), str):
        return None
    limit = value.get("max", 1)
    cancel = value.get("cancel-in-progress", False)
    return Concurrency(
        group=value["group"],
        max=limit if isinstance(limit, int) and not isinstance(limit, bool) else 1,
        cancel_in_progress=cancel is True,
    )


def trigger_cycle(edges: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle among flow triggers as ``[a, b, ..., a]``, each flow started by the end of the
    next one (``a <- b <- a``), or None.

    ``edges`` maps a flow's name to the names of the flows whose end starts it (its
    ``triggers.flow`` names); names that are not keys (flows not stored) are ignored. The
    search follows key order, so the cycle reported is stable."""
    return find_cycle(edges)


# ----------------------------------------------------------------------------- values


def parse_duration(text: str | int | float) -> float:
    """Seconds in a duration: ``'90s'``, ``'30m'``, ``'1h'``, ``'1.5h'``, ``'1h30m'``, ``'2d'``
    or 0. A bare number other than 0 is refused: without a unit, 60 could mean anything.
    Raises ValueError with a message that says how to write it."""
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ValueError(f"expected a duration, {_DURATION_HELP}; got {describe(text)}")
    if not isinstance(text, str):
        if text == 0:
            return 0.0
        shown = describe(text)
        raise ValueError(f"a duration needs a unit (s, m, h or d), e.g. '{shown}m'; "
                         f"only 0 may be written without one, got {shown}")
    written = "".join(text.split())
    if written.startswith("-"):
        raise ValueError(f"a duration cannot be negative, got {describe(text)}")
    if re.fullmatch(r"0+(?:\.0*)?", written):
        return 0.0
    parts = _DURATION_PART.findall(written)
    if not parts or "".join(n + u for n, u in parts) != written:
        raise ValueError(f"invalid duration {describe(text)}: write {_DURATION_HELP}")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"duration {describe(text)} is too long: at most 366d")
    return seconds


def cron_problem(cron: object) -> str | None:
    """Why ``cron`` is not a 5-field cron expression that fires, or None. Imports croniter
    (only flows with schedules pay for it)."""
    if not isinstance(cron, str):
        return f"expected a cron expression (text: {_CRON_HELP}), got {describe(cron)}"
    if len(cron) > MAX_CRON_CHARS:
        return f"a cron expression has at most {MAX_CRON_CHARS} characters, got {len(cron)}"
    fields = cron.split()
    macro = _CRON_MACROS.get(cron.strip().lower())
    if macro is not None:
        return f"'{cron.strip()}' is not supported: write its 5 fields, '{macro}'"
    if len(fields) != 5:
        extra = " (flowray's schedules have no seconds or years field)" if len(fields) > 5 \
            else ""
        return (f"a cron expression has 5 fields ({_CRON_HELP}), got {len(fields)} in "
                f"{describe(cron)}{extra}")
    from croniter import CroniterBadDateError, croniter

    def fails(expression: str) -> str | None:
        try:
            croniter(expression, _CRON_PROBE).get_next(datetime)
        except CroniterBadDateError:
            return "never"
        # croniter raises assorted exception types for malformed fields: any means invalid.
        except Exception as exc:
            return str(exc) or type(exc).__name__
        return None

    shown = describe(" ".join(fields), limit=60)
    problem = fails(" ".join(fields))
    if problem is None:
        return None
    for i, (name, allowed) in enumerate(_CRON_FIELDS):
        alone = ["*"] * 5
        alone[i] = fields[i]
        if fails(" ".join(alone)) is not None:
            return (f"invalid cron expression {shown}: bad {name} field "
                    f"{describe(fields[i])} ({name}: {allowed}; '*', lists '1,5', ranges "
                    f"'1-5' and steps '*/15' too)")
    if problem == "never":
        return f"the cron expression {shown} never fires: no date matches it"
    return f"invalid cron expression {shown}: {problem}"


# Where the first fire of an expression is looked for (validation only: does it fire at all).
_CRON_PROBE = datetime(2000, 1, 1)


def timezone_problem(name: object) -> str | None:
    """Why ``name`` is not an IANA time zone this machine knows, or None."""
    example = "an IANA time zone name such as 'Europe/Berlin' or 'UTC'"
    if not isinstance(name, str):
        return f"expected {example}, got {describe(name)}"
    if name in _MACHINE_ZONES or name.startswith(_MACHINE_ZONE_PREFIXES):
        return f"'{name}' names a setting of this machine, not a time zone: use {example}"
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return f"unknown time zone {describe(name)}{_zone_hint(name)}: use {example}"
    return None


def _zone_hint(name: str) -> str:
    """`` (did you mean 'Europe/Berlin'?)`` for a misspelled, miscased or bare city name."""
    if len(name) > 100:  # no zone name is this long; comparing it with each costs
        return ""
    zones = sorted(z for z in zoneinfo.available_timezones()
                   if z not in _MACHINE_ZONES and not z.startswith(_MACHINE_ZONE_PREFIXES))
    wanted = name.strip().replace(" ", "_").lower()
    for zone in zones:  # 'berlin', 'new_york', 'europe/berlin'
        if wanted in (zone.lower(), zone.rsplit("/", 1)[-1].lower()):
            return f" (did you mean '{zone}'?)"
    return did_you_mean(name, zones)


# ----------------------------------------------------------------------------- validation


def trigger_problems(flow: Mapping[str, Any]) -> list[TriggerProblem]:
    """Problems of ``triggers`` (but ``manual``, checked with the inputs) and ``concurrency``
    that need no expression parsing: kinds, keys, cron, time zones, durations, names,
    statuses. The ``if`` of a webhook and the concurrency group's templates are checked by the
    caller (they need the expression checker)."""
    out: list[TriggerProblem] = []
    triggers = flow.get("triggers")
    if isinstance(triggers, Mapping):
        for kind, value in triggers.items():
            path: KeyPath = ("triggers", kind)
            if kind == "schedule":
                out += _schedule_problems(value)
            elif kind == "webhook":
                out += _webhook_problems(value)
            elif kind == "flow":
                out += _flow_problems(value, flow.get("name"))
            elif kind not in TRIGGER_KINDS:
                out.append(TriggerProblem(path, _unknown_kind(str(kind))))
    elif isinstance(triggers, list):
        for i, kind in enumerate(triggers):
            path = ("triggers", i)
            if not isinstance(kind, str):
                out.append(TriggerProblem(path, f"expected a trigger's name, got "
                                                f"{describe(kind)}"))
            elif kind in ("schedule", "flow"):
                out.append(TriggerProblem(path, f"the '{kind}' trigger needs settings: write "
                                                f"'triggers' as a map ({_EXAMPLES[kind]})"))
            elif kind == "webhook":
                out.append(TriggerProblem(path, _NO_SECRET, "warning"))
            elif kind not in TRIGGER_KINDS:
                out.append(TriggerProblem(path, _unknown_kind(kind)))
    out += _concurrency_problems(flow.get("concurrency"))
    return out


_EXAMPLES = {
    "schedule": "schedule: [{cron: '30 2 * * *', timezone: UTC}]",
    "flow": "flow: [{name: prepare, status: [success]}]",
}


def _unknown_kind(kind: str) -> str:
    if kind == "concurrency":
        return ("'concurrency' belongs at the top level of the flow, beside 'triggers', "
                "not under it")
    gha = _GHA_TRIGGERS.get(kind)
    if gha is not None:
        ours, instead = gha
        if ours is not None:
            return (f"unknown trigger '{kind}' (did you mean '{ours}'? '{kind}' is a trigger "
                    f"of GitHub Actions; flowray's is '{ours}')")
        return f"unknown trigger '{kind}' (a trigger of GitHub Actions): {instead}"
    known = ", ".join(TRIGGER_KINDS)
    return f"unknown trigger '{kind}'{did_you_mean(kind, TRIGGER_KINDS)} (triggers: {known})"


def _unknown_keys(
    entry: Mapping[str, Any], base: KeyPath, keys: tuple[str, ...], what: str
) -> list[TriggerProblem]:
    out = []
    for key in entry:
        if key in keys:
            continue
        alias = _KEY_ALIASES.get(str(key))
        hint = f" (did you mean '{alias}'?)" if alias in keys else did_you_mean(str(key), keys)
        listed = ", ".join(keys[:-1]) + f" and {keys[-1]}"
        out.append(TriggerProblem((*base, key), f"unknown key '{key}'{hint} ({what} has "
                                                f"{listed})"))
    return out


def _list_of_maps(value: Any, keys: str, example: str) -> list[Any] | str:
    """The entries of a list-of-maps trigger (one map alone counts as a list), or why not."""
    if isinstance(value, Mapping | list):
        return _entries(value)
    hint = f" (write '- {example}')" if isinstance(value, str) else ""
    return f"expected a list of maps with {keys}, got {describe(value)}{hint}"


def _schedule_problems(value: Any) -> list[TriggerProblem]:
    base: KeyPath = ("triggers", "schedule")
    listed = isinstance(value, list)
    entries = _list_of_maps(value, "cron, timezone and catchup",
                            f'cron: "{value}"' if isinstance(value, str) else "")
    if isinstance(entries, str):
        return [TriggerProblem(base, entries)]
    out: list[TriggerProblem] = []
    seen: dict[tuple[str, str], KeyPath] = {}
    for i, entry in enumerate(entries):
        at: KeyPath = (*base, i) if listed else base
        if not isinstance(entry, Mapping):
            hint = f" (write '- cron: \"{entry}\"')" if isinstance(entry, str) else ""
            out.append(TriggerProblem(at, "expected a map with cron, timezone and catchup, "
                                          f"got {describe(entry)}{hint}"))
            continue
        out += _unknown_keys(entry, at, SCHEDULE_KEYS, "a schedule")
        cron = entry.get("cron")
        if "cron" not in entry:
            out.append(TriggerProblem(at, f"missing required key 'cron' ({_CRON_HELP})"))
        else:
            problem = cron_problem(cron)
            if problem is not None:
                out.append(TriggerProblem((*at, "cron"), problem))
        zone = entry.get("timezone", DEFAULT_TIMEZONE)
        zone_problem = timezone_problem(zone)
        if zone_problem is not None:
            out.append(TriggerProblem((*at, "timezone"), zone_problem))
        if "catchup" in entry:
            try:
                parse_duration(entry["catchup"])
            except ValueError as exc:
                out.append(TriggerProblem((*at, "catchup"), str(exc)))
        if isinstance(cron, str) and isinstance(zone, str):
            same = (" ".join(cron.split()), zone)
            if same in seen:
                out.append(TriggerProblem(at, f"the same schedule as {format_path(seen[same])} "
                                              "(both would start a run at the same time)"))
            seen.setdefault(same, at)
    return out


_NO_SECRET = ("a webhook without 'secret' can never start this flow: the service refuses "
              "every unsigned delivery (401); name the stored secret that signs deliveries "
              "(secret: HOOK_KEY)")


def trigger_kinds(flow: Mapping[str, Any]) -> list[str]:
    """The kinds of trigger a flow has (``manual``, ``schedule``...), in either form."""
    return sorted(str(kind) for kind in _triggers(flow))


def _webhook_problems(value: Any) -> list[TriggerProblem]:
    base: KeyPath = ("triggers", "webhook")
    if value is None:
        return [TriggerProblem(base, _NO_SECRET, "warning")]
    if not isinstance(value, Mapping):
        return [TriggerProblem(base, f"expected a map with secret and if, got {describe(value)}")]
    out = _unknown_keys(value, base, WEBHOOK_KEYS, "a webhook")
    if "secret" not in value:
        out.append(TriggerProblem(base, _NO_SECRET, "warning"))
    problem = _secret_problem(value["secret"]) if "secret" in value else None
    if problem is not None:
        out.append(TriggerProblem((*base, "secret"), problem))
    condition = value.get("if")
    if condition is not None and not isinstance(condition, str | bool):
        out.append(TriggerProblem((*base, "if"), "expected an expression reading event (the "
                                                 f"delivery's JSON body), got "
                                                 f"{describe(condition)}"))
    return out


def _secret_problem(secret: Any) -> str | None:
    if not isinstance(secret, str):
        return f"expected a secret's name, got {describe(secret)}"
    if SECRET_NAME.match(secret):
        return None
    inner = re.fullmatch(r"\$\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", secret.strip())
    if inner:
        return (f"write the secret's name, not a template: secret: {inner.group(1)} "
                f"(the service reads it to check each delivery's signature)")
    return (f"invalid secret name {describe(secret)}: a name starts with a letter or '_' and "
            "holds only letters, digits and '_'")


def _flow_problems(value: Any, own_name: Any) -> list[TriggerProblem]:
    base: KeyPath = ("triggers", "flow")
    listed = isinstance(value, list)
    entries = _list_of_maps(value, "name and status",
                            f"name: {value}" if isinstance(value, str) else "")
    if isinstance(entries, str):
        return [TriggerProblem(base, entries)]
    out: list[TriggerProblem] = []
    seen: dict[str, KeyPath] = {}
    for i, entry in enumerate(entries):
        at: KeyPath = (*base, i) if listed else base
        if not isinstance(entry, Mapping):
            hint = f" (write '- name: {entry}')" if isinstance(entry, str) else ""
            out.append(TriggerProblem(at, "expected a map with name and status, got "
                                          f"{describe(entry)}{hint}"))
            continue
        out += _unknown_keys(entry, at, FLOW_TRIGGER_KEYS, "a flow trigger")
        name = entry.get("name")
        if "name" not in entry:
            out.append(TriggerProblem(at, "missing required key 'name' (the flow whose runs, "
                                          "when they end, start this one)"))
        elif not isinstance(name, str) or not name:
            out.append(TriggerProblem((*at, "name"), "expected a flow's name, got "
                                                     f"{describe(name)}"))
        elif name == own_name:
            out.append(TriggerProblem((*at, "name"), f"flow '{name}' would start itself: each "
                                      "run's end would start another, forever (flow triggers "
                                      "must not form a cycle)"))
        elif name in seen:
            out.append(TriggerProblem((*at, "name"), f"flow '{name}' is already a trigger "
                                      f"({format_path(seen[name])}): list all its statuses "
                                      "there"))
        else:
            seen[name] = at
        if "status" in entry:
            out += _status_problems(entry["status"], (*at, "status"))
    return out


def _status_problems(value: Any, path: KeyPath) -> list[TriggerProblem]:
    if isinstance(value, list) and not value:
        return [TriggerProblem(path, "an empty list of statuses never starts this flow: list "
                                     f"some of {', '.join(FLOW_STATUSES)}, or leave 'status' "
                                     "out for [success]")]
    items = [(path, value)] if not isinstance(value, list) else [
        ((*path, i), v) for i, v in enumerate(value)]
    out = []
    for at, status in items:
        if status not in FLOW_STATUSES:
            hint = did_you_mean(status, FLOW_STATUSES) if isinstance(status, str) else ""
            out.append(TriggerProblem(at, f"expected one of {', '.join(FLOW_STATUSES)}, got "
                                          f"{describe(status)}{hint}"))
    return out


def _concurrency_problems(value: Any) -> list[TriggerProblem]:
    """``concurrency`` as a map (a text is its group; other types the model reports)."""
    base: KeyPath = ("concurrency",)
    if isinstance(value, str):
        return [] if value.strip() else [TriggerProblem(base, "the group must not be empty")]
    if not isinstance(value, Mapping):
        return []
    out = _unknown_keys(value, base, CONCURRENCY_KEYS, "concurrency")
    group = value.get("group")
    if "group" not in value:
        out.append(TriggerProblem(base, "missing required key 'group' (runs of one group "
                                        "share the limit, e.g. group: train-${{ inputs.model }})"))
    elif not isinstance(group, str):
        out.append(TriggerProblem((*base, "group"), f"expected a group name (text), got "
                                                    f"{describe(group)}"))
    elif not group.strip():
        out.append(TriggerProblem((*base, "group"), "the group must not be empty"))
    if "max" in value:
        limit = value["max"]
        if isinstance(limit, bool) or not isinstance(limit, int):
            out.append(TriggerProblem((*base, "max"), f"expected an integer (runs at once in "
                                                      f"the group), got {describe(limit)}"))
        elif not 1 <= limit <= MAX_CONCURRENCY:
            out.append(TriggerProblem((*base, "max"), f"must be from 1 to {MAX_CONCURRENCY}, "
                                                      f"got {describe(limit)}"))
    cancel = value.get("cancel-in-progress", False)
    if not isinstance(cancel, bool):
        out.append(TriggerProblem((*base, "cancel-in-progress"),
                                  f"expected true or false, got {describe(cancel)}"))
    return out
