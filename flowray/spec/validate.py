"""Checks that need the whole flow: ``needs``, step ids, ``${{ }}`` references, actions.

They read the raw document (as written, with its own key names, so positions match), not the
validated model, and they run even when the model found errors, so that a flow's problems are
all reported at once. Every read is defensive: a value of the wrong type was already reported by
the model and is skipped here.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from flowray.expr import (
    STATUS_FUNCTIONS,
    ExprError,
    ExprSyntaxError,
    Node,
    find_templates,
    functions_called,
    is_template,
    parse,
    references,
)
from flowray.spec.diagnostics import (
    Diagnostic,
    KeyPath,
    Severity,
    closest,
    describe,
    did_you_mean,
    format_path,
)
from flowray.spec.envnames import env_problem
from flowray.spec.files import (
    ACTION_FILES,
    find_action_file,
    local_action_folder,
    outside_problem,
)
from flowray.spec.graph import find_cycle
from flowray.spec.inputs import INPUT_TYPES, InputError, coerce_input
from flowray.spec.matrix import MatrixTooLarge, expand_matrix
from flowray.spec.shells import (
    LITERAL,
    Trust,
    has_template,
    is_posix_shell,
    script_problems,
    untrusted_templates,
)
from flowray.spec.triggers import (
    GROUP_CONTEXTS,
    WEBHOOK_CONTEXTS,
    form_inputs,
    trigger_problems,
)
from flowray.spec.types import ActionData, InputSpecData
from flowray.spec.yamlpos import Positions

CONTEXTS = (
    "steps",
    "variable",
    "variables",
    "inputs",
    "input",
    "event",
    "matrix",
    "needs",
    "env",
    "secrets",
    "job",
    "run",
    "flow",
    "runner",
    "agent",
    "machine",
    "python",
    "pipeline",
    "step",
    "action",
    "directory",
)
# Inside an action file: what a step sees, and the step's own inputs as ``input``/``inputs`` (and
# ``variable``, DataTorch's older name for them).
ACTION_CONTEXTS = tuple(c for c in CONTEXTS if c not in ("steps", "needs", "matrix"))
# Contexts whose keys are fixed: a key not listed is a mistake (``directory.tmp``).
_RUNNER_KEYS = ("id", "directory", "name", "os", "arch", "version", "temp", "cpus", "gpus")
CONTEXT_KEYS: dict[str, tuple[str, ...]] = {
    "runner": _RUNNER_KEYS,
    "agent": _RUNNER_KEYS,
    "machine": _RUNNER_KEYS,
    "python": ("version", "implementation", "executable"),
    "pipeline": ("id", "name", "projectId", "creatorId", "lastRunNumber"),
    "run": ("id", "name", "config", "runNumber", "workspace", "trigger"),
    "step": ("id", "name"),
    "action": ("name", "version", "tag", "directory", "description"),
    "directory": ("runner", "agent", "actions", "logs", "temp"),
}
# Contexts that belong to one step: read in a step's values (or an action file), not before.
STEP_CONTEXTS = ("step", "action")


def context_key_problem(context: str, first: str) -> str | None:
    """Why ``<context>.<first>`` names nothing, for the contexts whose keys are fixed."""
    keys = CONTEXT_KEYS.get(context)
    if keys is None or first.lower() in {k.lower() for k in keys}:
        return None
    hint = did_you_mean(first, keys) or f" (keys: {', '.join(keys)})"
    return f"unknown key '{first}' of context '{context}'{hint}"


# What ``steps.<id>`` and ``needs.<job>`` hold.
STEP_PROPERTIES = ("outputs", "outcome", "conclusion")
NEEDS_PROPERTIES = ("outputs", "result")

# owner/repo, an optional sub-folder, an optional @ref
_GIT_ACTION = re.compile(
    r"^(?P<repo>[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)(?P<sub>/[^@\s]+)?(?:@(?P<ref>.*))?$"
)
_SHOWN = 60
# Names listed in one message at most; then "... (N in all)".
_LISTED = 20
# "Did you mean" hints among the flow's own names (jobs, step ids, ...) compare a name with
# every candidate; past this many comparisons in one flow, hints are left out (lists of at most
# _FREE_HINT_CHOICES names are always searched), so thousands of unknown names among thousands
# of jobs cost seconds, not minutes.
_HINT_BUDGET = 30_000
_FREE_HINT_CHOICES = 50

# (action data or None when invalid, the action's own diagnostics)
ActionLoader = Callable[[str, str], tuple[ActionData | None, list[Diagnostic]]]
class GitActionLoader(Protocol):
    """Fetches git actions for validation. ``None`` instead of one: git actions are checked for
    syntax only (nothing is fetched)."""

    def __call__(self, written: Any) -> tuple[ActionData | None, str | None, list[Diagnostic]]:
        """A git action as written (string or map) -> its action data, or None and why not,
        plus the diagnostics of its action file."""

    def prefetch(self, written: list[Any]) -> None:
        """Resolve all the flow's git actions at once, before they are checked one by one."""


def git_refs_in(data: Any, workspace: str | None = None) -> list[Any]:
    """The git action references in a raw flow document (before validation), each once;
    with ``workspace``, not an untagged ``a/b`` that is an action folder there (reported as
    a local action written without './')."""
    found: list[Any] = []
    jobs = data.get("jobs") if isinstance(data, dict) else None
    for job in jobs.values() if isinstance(jobs, dict) else ():
        steps = job.get("steps") if isinstance(job, dict) else None
        for step in steps if isinstance(steps, list) else ():
            ref = step.get("action") if isinstance(step, dict) else None
            git = isinstance(ref, dict) or (
                isinstance(ref, str) and not ref.startswith(("./", "docker://"))
            )
            if git and ref not in found and not (
                workspace and isinstance(ref, str) and _local_action_folder(workspace, ref)
            ):
                found.append(ref)
    return found


def _shown(source: str) -> str:
    text = source if len(source) <= _SHOWN else source[: _SHOWN - 3] + "..."
    return f"'{text}'"


def git_ref_problem(ref: str) -> str | None:
    """Why ``ref`` (a tag, branch or commit) cannot be handed to git, or None."""
    if not ref:
        return "the tag after '@' is empty"
    if ref.startswith("-"):
        return "a tag must not start with '-'"
    if ".." in ref:
        return "a tag must not contain '..'"
    if any(c.isspace() or c in "~^:?*[\\" for c in ref) or ref.endswith((".lock", "/", ".")):
        return f"'{ref}' is not a valid git tag or branch name"
    return None


@dataclass
class Scope:
    """What the templates of one value may refer to."""

    where: str  # "flow", "job" (values read before any step), "step", "outputs"
    job_id: str | None = None
    step_index: int | None = None
    step_ids: dict[str, int] = field(default_factory=dict)  # lower-case id -> index, whole job
    needs: list[str] | None = None  # None at flow level
    matrix: list[str] | None = None  # None: the job has no matrix
    variables: list[str] = field(default_factory=list)
    trust: Trust = LITERAL  # which author-written contexts hold only literals


class FlowChecker:
    """Runs every semantic check over a raw flow document; see :meth:`check`."""

    def __init__(
        self,
        data: dict[str, Any],
        positions: Positions,
        file: str,
        *,
        workspace: str,
        display_root: str | None,
        load_action: ActionLoader,
        git_action: GitActionLoader | None = None,
        variables: Collection[str] = (),
    ) -> None:
        self.git_action = git_action
        self.data = data
        self.positions = positions
        self.file = file
        self.workspace = workspace
        self.display_root = display_root
        self.load_action = load_action
        self.out: list[Diagnostic] = []
        self.actions: dict[str, tuple[ActionData | None, str | None]] = {}
        jobs = data.get("jobs")
        self.jobs: dict[str, Any] = jobs if isinstance(jobs, dict) else {}
        flow_variables = data.get("variables")
        self.variables = list(flow_variables) if isinstance(flow_variables, dict) else []
        # The service's variables (given from outside the flow) are known too; the flow's win.
        self.variables += [v for v in variables if v not in self.variables]
        self.hint_budget = _HINT_BUDGET
        self._step_ids: dict[str, list[str]] = {}  # job id -> its steps' ids, as written

    # -- reporting

    def report(
        self, path: KeyPath, message: str, *, at_value: bool = False, severity: Severity = "error"
    ) -> None:
        line, col = self.positions.value(path) if at_value else self.positions.key(path)
        self.out.append(Diagnostic(self.file, line, col, format_path(path), message, severity))

    # -- the checks

    def check(self) -> list[Diagnostic]:
        """All problems found; errors and warnings."""
        self.check_needs()
        env = self.data.get("env")
        if isinstance(env, dict):
            scope = Scope("flow", variables=self.variables)
            self.check_env_names(env, ("env",))
            for key, value in env.items():
                self.check_value(value, ("env", key), scope)
        for job_id, job in self.jobs.items():
            if isinstance(job, dict):
                self.check_job(job_id, job)
        self.check_manual_inputs()
        self.check_triggers()
        return self.out

    def check_triggers(self) -> None:
        """``triggers.schedule``, ``webhook`` and ``flow``, and the flow's ``concurrency`` (see
        :func:`trigger_problems`); then the expressions they hold: a webhook's ``if`` reads
        only ``event``, a concurrency group's templates only inputs, flow, event and
        variables (what the service has when it starts a run)."""
        for problem in trigger_problems(self.data):
            self.report(problem.path, problem.message, severity=problem.severity)
        self.check_webhook_condition()
        self.check_group()

    def check_webhook_condition(self) -> None:
        """``triggers.webhook.if``: one expression, bare or in a single ``${{ }}``."""
        triggers = self.data.get("triggers")
        hook = triggers.get("webhook") if isinstance(triggers, dict) else None
        condition = hook.get("if") if isinstance(hook, dict) else None
        if not isinstance(condition, str) or not condition.strip():
            return
        path: KeyPath = ("triggers", "webhook", "if")
        source = self.condition_source(condition, path)
        if source is not None:
            self.check_trigger_expression(source, path, only=WEBHOOK_CONTEXTS,
                                          what="a webhook's condition")

    def check_group(self) -> None:
        """The templates of ``concurrency.group`` (or of ``concurrency`` written as text)."""
        value = self.data.get("concurrency")
        path: KeyPath = ("concurrency",)
        if isinstance(value, dict):
            value, path = value.get("group"), ("concurrency", "group")
        if not isinstance(value, str) or "${{" not in value:
            return
        try:
            parts = find_templates(value)
        except ExprSyntaxError as exc:
            self.report(path, f"invalid template: {exc.message}", at_value=True)
            return
        for part in parts:
            self.check_trigger_expression(part.source, path, only=GROUP_CONTEXTS,
                                          what="a concurrency group")

    def check_trigger_expression(
        self, source: str, path: KeyPath, *, only: tuple[str, ...], what: str
    ) -> None:
        """An expression the service evaluates before a run exists: it may read only the
        contexts ``only`` and call no status function (there is no run status yet)."""
        node = self.parsed(source, path)
        if node is None:
            return
        listed = ", ".join(only[:-1]) + f" and {only[-1]}" if len(only) > 1 else only[0]
        for ref in references(node):
            name = ref.context.lower()
            if name in only:
                scope = Scope("flow", variables=self.variables)
                problem = self.reference_problem(ref.context, ref.path, scope)
            else:
                hint = "" if name in CONTEXTS else did_you_mean(name, only)
                problem = f"{what} cannot read '{ref.context}' (only {listed}){hint}"
            if problem:
                self.report(path, f"{problem} in {_shown(source)}", at_value=True)
        for function in sorted(functions_called(node) & set(STATUS_FUNCTIONS)):
            self.report(path, f"{what} cannot call {function}() (it is read before the run "
                        f"starts, there is no status to test) in {_shown(source)}",
                        at_value=True)

    def check_manual_inputs(self) -> None:
        """``triggers.manual``: ``inputs`` typed like action inputs (``flowray run --input``),
        DataTorch's ``role`` and ``form`` (a JSON Schema read as typed inputs); DataTorch's
        ``annotatorButton`` trigger never fires here (a warning)."""
        triggers = self.data.get("triggers")
        if isinstance(triggers, dict) and "annotatorButton" in triggers:
            self.report(
                ("triggers", "annotatorButton"),
                "'annotatorButton' is a DataTorch platform trigger (a button in its annotator); "
                "flowray accepts it but it never starts this flow",
                severity="warning",
            )
        manual = triggers.get("manual") if isinstance(triggers, dict) else None
        if not isinstance(manual, dict):
            return
        for key in manual:
            if key not in ("inputs", "form", "role"):
                self.report(("triggers", "manual", str(key)),
                            f"unknown key '{key}' of the manual trigger"
                            f"{did_you_mean(str(key), ('inputs', 'form', 'role'))} (it has "
                            "inputs, DataTorch's form, and role); it is ignored",
                            severity="warning")
        role = manual.get("role")
        if "role" in manual and not isinstance(role, str):
            self.report(("triggers", "manual", "role"),
                        f"expected a role name (text), got {describe(role)}")
        form = manual.get("form")
        if "form" in manual:
            fbase = ("triggers", "manual", "form")
            if not isinstance(form, dict):
                self.report(fbase, f"expected a JSON Schema map, got {describe(form)}")
            else:
                props = form.get("properties")
                if "properties" in form and not isinstance(props, dict):
                    self.report((*fbase, "properties"), f"expected a map, got {describe(props)}")
                for name, spec, rel, problem in form_inputs(form):
                    if problem is not None:
                        self.report((*fbase, *rel), problem)
                    else:
                        self.check_input_default(name, spec, (*fbase, *rel, "default"))
        inputs = manual.get("inputs")
        if not isinstance(inputs, dict):
            return
        base = ("triggers", "manual", "inputs")
        for name, spec in inputs.items():
            if not isinstance(spec, dict):
                self.report((*base, name), f"expected a map with type/default/required/"
                            f"description, got {describe(spec)}")
                continue
            kind = spec.get("type", "string")
            if kind not in INPUT_TYPES:
                hint = did_you_mean(kind, INPUT_TYPES) if isinstance(kind, str) else ""
                self.report(
                    (*base, name, "type"),
                    f"expected one of {', '.join(INPUT_TYPES)}, got {describe(kind)}{hint}",
                )
                continue
            self.check_input_default(str(name), spec, (*base, name, "default"))

    def check_input_default(self, name: str, spec: Mapping[str, Any], path: KeyPath) -> None:
        default = spec.get("default")
        if default is None or _has_template(default):
            return
        as_input: InputSpecData = {
            "type": spec.get("type", "string"), "required": False, "default": None,
            "description": None,
        }
        try:
            coerce_input(name, as_input, default)
        except InputError as exc:
            self.report(path, f"bad default: {exc}")

    def job_needs(self, job: Mapping[str, Any]) -> Iterator[tuple[str, KeyPath]]:
        needs = job.get("needs")
        if isinstance(needs, str):
            yield needs, ("needs",)
        elif isinstance(needs, list):
            for i, need in enumerate(needs):
                if isinstance(need, str):
                    yield need, ("needs", i)

    def check_needs(self) -> None:
        edges: dict[str, list[str]] = {}
        for job_id, job in self.jobs.items():
            edges[job_id] = []
            if not isinstance(job, dict):
                continue
            for need, rel in self.job_needs(job):
                path = ("jobs", job_id, *rel)
                if need == job_id:
                    self.report(path, f"job '{job_id}' needs itself")
                elif need not in self.jobs:
                    others = ([j for j in self.jobs if j != job_id]
                              if len(self.jobs) <= self.hint_budget else [])
                    hint = self.hint(need, others)
                    self.report(path, f"unknown job '{need}'{hint}")
                else:
                    edges[job_id].append(need)
        cycle = find_cycle(edges)
        if cycle is not None:
            self.report(
                ("jobs", cycle[0], "needs"),
                "jobs form a cycle through 'needs': " + " -> ".join(cycle),
            )

    def check_job(self, job_id: str, job: dict[str, Any]) -> None:
        base: KeyPath = ("jobs", job_id)
        steps = job.get("steps")
        steps = steps if isinstance(steps, list) else []
        step_ids: dict[str, int] = {}
        for i, step in enumerate(steps):
            sid = step.get("id") if isinstance(step, dict) else None
            if not isinstance(sid, str):
                continue
            if sid.lower() in step_ids:
                first = format_path((*base, "steps", step_ids[sid.lower()]))
                self.report((*base, "steps", i, "id"), f"duplicate step id '{sid}' (also {first})")
            else:
                step_ids[sid.lower()] = i
        scope = Scope(
            "job",
            job_id=job_id,
            step_ids=step_ids,
            needs=[n for n, _ in self.job_needs(job)],
            matrix=self.matrix_keys(job),
            variables=self.variables,
            trust=self.trust(job),
        )
        for key in ("name", "working-directory"):
            self.check_value(job.get(key), (*base, key), scope)
        self.check_condition(job.get("if"), (*base, "if"), scope)
        env = job.get("env")
        if isinstance(env, dict):
            self.check_env_names(env, (*base, "env"))
            for key, value in env.items():
                self.check_value(value, (*base, "env", key), scope)
        container = job.get("container")
        if isinstance(container, dict) and isinstance(container.get("env"), dict):
            self.check_env_names(container["env"], (*base, "container", "env"))
        outputs = job.get("outputs")
        if isinstance(outputs, dict):
            out_scope = replace(scope, where="outputs")
            for key, value in outputs.items():
                self.check_value(value, (*base, "outputs", key), out_scope)
        for i, step in enumerate(steps):
            if isinstance(step, dict):
                step_scope = replace(scope, where="step", step_index=i)
                self.check_step(step, (*base, "steps", i), step_scope)
        self.check_matrix_cells(job, base)

    def trust(self, job: Mapping[str, Any]) -> Trust:
        """A matrix or ``variables`` with templates in it is not author-written."""
        strategy = job.get("strategy")
        matrix = strategy.get("matrix") if isinstance(strategy, dict) else None
        return Trust(matrix=not has_template(matrix),
                     variables=not has_template(self.data.get("variables")))

    def matrix_keys(self, job: Mapping[str, Any]) -> list[str] | None:
        strategy = job.get("strategy")
        matrix = strategy.get("matrix") if isinstance(strategy, dict) else None
        if not isinstance(matrix, dict) or not matrix:
            return None
        keys = [k for k in matrix if k not in ("include", "exclude")]
        include = matrix.get("include")
        if isinstance(include, list):
            for extra in include:
                if isinstance(extra, dict):
                    keys.extend(k for k in extra if k not in keys)
        return keys

    def check_step(self, step: dict[str, Any], base: KeyPath, scope: Scope) -> None:
        for key in ("name", "run", "working-directory"):
            self.check_value(step.get(key), (*base, key), scope)
        self.check_run_safety(step, base, scope.trust)
        # Both are evaluated as conditions: a bare expression or one whole template.
        self.check_condition(step.get("if"), (*base, "if"), scope)
        self.check_condition(step.get("continue-on-error"), (*base, "continue-on-error"), scope)
        self.check_shell(step.get("shell"), (*base, "shell"))
        env = step.get("env")
        if isinstance(env, dict):
            self.check_env_names(env, (*base, "env"))
            for key, value in env.items():
                self.check_value(value, (*base, "env", key), scope)
        with_key = "with" if "with" in step else "inputs"
        given = step.get(with_key)
        if isinstance(given, dict):
            for key, value in given.items():
                self.check_value(value, (*base, with_key, key), scope)
        action = self.check_action_ref(step.get("action"), (*base, "action"))
        if action is not None:
            self.check_inputs(action, given if isinstance(given, dict) else {}, base, with_key)
            self.check_action_env(action, step, base, scope)
        ref = step.get("action")
        if step.get("cache") is True and isinstance(ref, str) and ref.startswith(
                ("./", "docker://")):
            what = "local actions have" if ref.startswith("./") else "docker:// steps have"
            self.report((*base, "cache"),
                        f"'cache: true' has no effect here: {what} no commit to key their "
                        "results by, so the step always runs (git actions are cached)",
                        severity="warning")

    def check_action_env(
        self, action: ActionData, step: dict[str, Any], base: KeyPath, scope: Scope
    ) -> None:
        """The environment variables an action declares (``env:`` of its file): a warning for
        each required one that is set nowhere (flow, job or step ``env``, the action's own
        ``runs.env``, or flowray's environment now)."""
        declared = action.get("env") or {}
        if not declared:
            return
        job = self.jobs.get(scope.job_id or "")
        have: set[str] = set(os.environ) | set(action["runs"]["env"])
        for env in (self.data.get("env"), job.get("env") if isinstance(job, dict) else None,
                    step.get("env")):
            if isinstance(env, dict):
                have.update(str(k) for k in env)
        for name, spec in declared.items():
            if name in have or not spec["required"]:
                continue
            what = f" ({spec['description'].strip()})" if spec["description"] else ""
            self.report(
                (*base, "action"),
                f"action '{action['name']}' reads environment variable '{name}'{what}, which "
                "is not set: give it in the step's, job's or flow's 'env:' (or flowray's "
                "environment)",
                severity="warning",
            )

    def check_env_names(self, env: dict[str, Any], base: KeyPath) -> None:
        for key, value in env.items():
            problem = env_problem(key, value)
            if problem:
                self.report((*base, key), problem)

    def check_run_safety(self, step: dict[str, Any], base: KeyPath, trust: Trust) -> None:
        """Untrusted data cannot be passed safely into the script of a non-POSIX shell, nor
        into the places of a POSIX shell script that hand it on as code."""
        run, shell = step.get("run"), step.get("shell")
        if not isinstance(run, str) or "${{" not in run:
            return
        if shell is None or (isinstance(shell, str) and is_posix_shell(shell)):
            try:
                problems = script_problems(run, trust)
            except ExprError:
                return  # reported by check_value
            for problem in problems:
                self.report((*base, "run"), problem, at_value=True)
            return
        if not isinstance(shell, str):
            return
        try:
            sources = untrusted_templates(run, trust)
        except ExprError:
            return  # reported by check_value
        for source in sources:
            self.report(
                (*base, "run"),
                f"'${{{{ {source} }}}}' reads data from outside the flow and shell "
                f"'{shell}' is not a POSIX shell, so it cannot be passed safely inside the "
                "script; set it in the step's 'env:' and read the environment variable instead",
                at_value=True,
            )

    def check_matrix_cells(self, job: Mapping[str, Any], base: KeyPath) -> None:
        strategy = job.get("strategy")
        matrix = strategy.get("matrix") if isinstance(strategy, dict) else None
        if not isinstance(matrix, dict) or not matrix:
            return
        for key, values in matrix.items():
            ok = isinstance(values, list) and (
                all(isinstance(v, dict) for v in values)
                if key in ("include", "exclude")
                else bool(values)
            )
            if not ok:
                return  # a malformed matrix is reported by the model
        try:
            cells = expand_matrix(matrix)
        except MatrixTooLarge as exc:
            self.report((*base, "strategy", "matrix"), f"job '{base[-1]}': {exc}")
            return
        if not cells:
            self.report((*base, "strategy", "matrix"),
                        "the matrix has no cells left after 'exclude'")

    def check_shell(self, shell: Any, path: KeyPath) -> None:
        """``shell``: bash, sh, python, or a command line (with ``{0}`` for the script file)."""
        if not isinstance(shell, str):
            return
        if "${{" in shell:
            self.report(
                path, f"shell {describe(shell)} holds a template, but shell is not rendered: "
                "name the shell itself (bash, sh, python, or a command with {0})",
                at_value=True,
            )
            return
        try:
            words = shlex.split(shell)
        except ValueError as exc:
            self.report(path, f"invalid shell command {describe(shell)}: {exc}", at_value=True)
            return
        if not words:
            self.report(
                path, "shell must not be empty (bash, sh, python, or a command with {0})",
                at_value=True,
            )

    # -- actions

    def check_action_ref(self, ref: Any, path: KeyPath) -> ActionData | None:
        if isinstance(ref, dict):
            tag = ref.get("tag")
            problem = git_ref_problem(tag) if isinstance(tag, str) else None
            if problem:
                self.report((*path, "tag"), problem)
            if not isinstance(ref.get("name"), str) or problem:
                return None  # the model reports the missing name
            return self.remote_action(ref, path)
        if not isinstance(ref, str):
            return None
        if ref.startswith("./"):
            return self.local_action(ref, path)
        if ref.startswith("docker://"):
            if not ref[len("docker://"):].strip():
                self.report(path, "'docker://' names no image: write docker://IMAGE[:TAG]")
            return None
        m = _GIT_ACTION.match(ref)
        if m is None or any(p in (".", "..") for p in m.group("repo").split("/")):
            hint = self.local_folder_hint(ref)
            self.report(
                path,
                f"invalid action {describe(ref)}: expected './path' (a local action), "
                f"'owner/repo@tag' or 'docker://image'{hint}",
            )
            return None
        local = _local_action_folder(self.workspace, ref)
        if local is not None:
            # 'folder/action' (no tag) that is a folder here: almost surely a local action
            # written without './', which would otherwise be fetched from GitHub.
            self.report(path, f"'{ref}' is a folder of the workspace with an action file, but "
                        f"without './' it names a git repository (did you mean './{local}'? "
                        f"a local action starts with './'; write '{ref}@TAG' for the "
                        "repository)")
            return None
        git_ref = m.group("ref")
        problem = git_ref_problem(git_ref) if git_ref is not None else None
        if problem:
            self.report(path, f"invalid action '{ref}': {problem}")
            return None
        return self.remote_action(ref, path)

    def remote_action(self, ref: str | dict[str, Any], path: KeyPath) -> ActionData | None:
        """A git action, fetched (or taken from the cache) by the caller's loader."""
        if self.git_action is None:
            return None
        action, problem, diagnostics = self.git_action(ref)
        self.out.extend(d for d in diagnostics if d not in self.out)
        if problem is not None:
            self.report(path, problem)
        return action

    def display(self, folder: str) -> str:
        if self.display_root is None:
            return folder
        try:
            rel = os.path.relpath(folder, self.display_root)
        except ValueError:
            return folder
        return folder if rel.startswith("..") else rel

    def local_action(self, ref: str, path: KeyPath) -> ActionData | None:
        """The action a ``./path`` names, loaded once per folder; every step that uses a
        broken one gets the same error."""
        folder = local_action_folder(self.workspace, ref)
        if folder not in self.actions:
            outside = outside_problem(self.workspace, folder)
            self.actions[folder] = (None, outside) if outside else self.load_local(folder)
        action, problem = self.actions[folder]
        if problem is not None:
            self.report(path, f"local action '{ref}' {problem}")
        return action

    def load_local(self, folder: str) -> tuple[ActionData | None, str | None]:
        shown = self.display(folder)
        if not os.path.isdir(folder):
            return None, f"not found: there is no folder '{shown}'{self.near_folder(folder)}"
        if find_action_file(folder) is None:
            expected = os.path.join(shown, ACTION_FILES[0])
            return None, f"has no action file: expected '{expected}' (or .yml)"
        action, problems = self.load_action(folder, shown)
        self.out.extend(problems)
        if action is None:
            return None, f"is invalid (see the errors in '{shown}')"
        return action, None

    def near_folder(self, folder: str) -> str:
        """`` (did you mean './x'?)`` for a folder next to the missing ``folder`` whose name
        is close to its own, or ``""``."""
        parent = os.path.dirname(folder)
        try:
            siblings = [e.name for e in os.scandir(parent)
                        if e.is_dir() and not e.name.startswith(".")]
        except OSError:
            return ""
        near = closest(os.path.basename(folder), siblings)
        if near is None:
            return ""
        rel = os.path.relpath(os.path.join(parent, near), self.workspace)
        return "" if rel.startswith("..") else f" (did you mean './{rel}'?)"

    def local_folder_hint(self, ref: str) -> str:
        """For a bare ``x`` or ``owner/repo`` that names a workspace folder with an action
        file: `` (did you mean './x'?)``, since local actions are written with './'."""
        rel = _local_action_folder(self.workspace, ref)
        return f" (did you mean './{rel}'? a local action starts with './')" if rel else ""

    def check_inputs(
        self, action: ActionData, given: dict[str, Any], base: KeyPath, with_key: str
    ) -> None:
        name = action["name"]
        declared = action["inputs"]
        for key in given:
            if key not in declared:
                listed = _listed(declared)
                hint = self.hint(key, list(declared))
                self.report(
                    (*base, with_key, key),
                    f"input '{key}' is not declared by action '{name}'{hint} "
                    f"(declared: {listed})",
                    severity="warning",
                )
        for key, spec in declared.items():
            if key in given:
                value = given[key]
                if _has_template(value):
                    continue
                try:
                    coerce_input(key, spec, value)
                except InputError as exc:
                    self.report((*base, with_key, key), f"{exc} (action '{name}')")
            elif spec["required"] and spec["default"] is None:
                where = (*base, with_key) if with_key in self.raw_step(base) else base
                self.report(where, f"missing required input '{key}' of action '{name}'")

    def raw_step(self, base: KeyPath) -> dict[str, Any]:
        cur: Any = self.data
        for part in base:
            cur = cur[part]
        return cur if isinstance(cur, dict) else {}

    # -- expressions

    def check_value(self, value: Any, path: KeyPath, scope: Scope) -> None:
        """Check every template in a string, or in the strings inside a list or map."""
        if isinstance(value, str):
            if "${{" in value:
                self.check_text(value, path, scope)
        elif isinstance(value, dict):
            for key, item in value.items():
                self.check_value(item, (*path, key), scope)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                self.check_value(item, (*path, i), scope)

    def check_text(self, text: str, path: KeyPath, scope: Scope) -> None:
        try:
            parts = find_templates(text)
        except ExprSyntaxError as exc:
            self.report(path, f"invalid template: {exc.message}", at_value=True)
            return
        for part in parts:
            self.check_expression(part.source, path, scope)

    def check_condition(self, value: Any, path: KeyPath, scope: Scope) -> None:
        """``if``: one bare expression, or one ``${{ }}`` with nothing around it."""
        if not isinstance(value, str) or not value.strip():
            return
        source = self.condition_source(value, path)
        if source is not None:
            self.check_expression(source, path, scope)

    def condition_source(self, value: str, path: KeyPath) -> str | None:
        """The expression of a condition (an ``if``): ``value`` when it is bare, the inside
        of its one ``${{ }}`` otherwise; None once a problem is reported."""
        text = value.strip()
        if not text.startswith("${{"):
            return value
        try:
            parts = find_templates(text)
        except ExprSyntaxError as exc:
            self.report(path, f"invalid template: {exc.message}", at_value=True)
            return None
        if len(parts) != 1 or parts[0].end != len(text):
            self.report(
                path,
                "a condition must be one expression, bare or inside a single '${{ }}', "
                f"got {describe(value, limit=_SHOWN)}",
                at_value=True,
            )
            return None
        return parts[0].source

    def parsed(self, source: str, path: KeyPath) -> Node | None:
        """The expression ``source`` parsed, or None once its problem is reported."""
        try:
            return parse(source)
        except ExprError as exc:
            self.report(path, f"invalid expression: {exc.message}", at_value=True)
        except RecursionError:
            self.report(path, f"expression nested too deeply: {_shown(source)}", at_value=True)
        return None

    def check_expression(self, source: str, path: KeyPath, scope: Scope) -> None:
        node = self.parsed(source, path)
        if node is None:
            return
        for ref in references(node):
            problem = self.reference_problem(ref.context, ref.path, scope)
            if problem:
                self.report(path, f"{problem} in {_shown(source)}", at_value=True)

    def reference_problem(
        self, context: str, rest: tuple[str | int | None, ...], scope: Scope
    ) -> str | None:
        name = context.lower()
        if name not in CONTEXTS:
            return f"unknown context '{context}'{did_you_mean(name, CONTEXTS)}"
        if name in STEP_CONTEXTS and scope.where != "step":
            return f"'{context}' belongs to a step and cannot be read here"
        first = rest[0] if rest else None
        if not isinstance(first, str):
            return None  # the whole context, an index, or a computed key
        problem = context_key_problem(name, first)
        if problem:
            return problem
        second = rest[1] if len(rest) > 1 else None
        if name == "steps":
            return self.step_problem(first, scope) or _property_problem(
                "step", first, second, STEP_PROPERTIES)
        if name == "needs":
            if scope.needs is None:
                return "'needs' cannot be read at flow level (it belongs to a job)"
            wanted = {n.lower() for n in scope.needs}
            if first.lower() in wanted:
                return _property_problem("job", first, second, NEEDS_PROPERTIES)
            listed = _listed(scope.needs)
            if first in self.jobs:
                return f"job '{first}' is not in this job's needs (needs: {listed})"
            hint = self.hint(first, scope.needs) or f" (needs: {listed})"
            return f"unknown job '{first}'{hint}"
        if name == "matrix":
            if scope.where == "flow":
                return "'matrix' cannot be read at flow level (it belongs to a job)"
            if scope.matrix is None:
                return f"unknown matrix key '{first}' (job '{scope.job_id}' has no matrix)"
            if first.lower() in {k.lower() for k in scope.matrix}:
                return None
            hint = self.hint(first, scope.matrix) or f" (matrix keys: {_listed(scope.matrix)})"
            return f"unknown matrix key '{first}'{hint}"
        if name == "variables":
            if first.lower() in {v.lower() for v in scope.variables}:
                return None
            if not scope.variables:
                return f"unknown variable '{first}' (the flow defines no variables)"
            listed = _listed(scope.variables)
            hint = self.hint(first, scope.variables) or f" (variables: {listed})"
            return f"unknown variable '{first}'{hint}"
        return None

    def step_problem(self, step_id: str, scope: Scope) -> str | None:
        if scope.where == "flow":
            return "'steps' cannot be read at flow level (it belongs to a job)"
        index = scope.step_ids.get(step_id.lower())
        if index is None:
            hint = self.hint(step_id, self.original_ids(scope))
            return f"unknown step '{step_id}'{hint}"
        if scope.where == "outputs":
            return None
        if scope.where == "job":
            return f"step '{step_id}' has not run yet (job-level values are read before any step)"
        assert scope.step_index is not None
        if index == scope.step_index:
            return f"step '{step_id}' cannot read its own outputs"
        if index > scope.step_index:
            later = format_path(("jobs", scope.job_id or "", "steps", index))
            return f"step '{step_id}' has not run yet (it is {later})"
        return None

    def original_ids(self, scope: Scope) -> list[str]:
        key = scope.job_id or ""
        if key not in self._step_ids:
            job = self.jobs.get(key)
            steps = job.get("steps") if isinstance(job, dict) else None
            self._step_ids[key] = [
                s["id"] for s in steps if isinstance(s, dict) and isinstance(s.get("id"), str)
            ] if isinstance(steps, list) else []
        return self._step_ids[key]

    def hint(self, word: str, choices: Sequence[str]) -> str:
        """:func:`did_you_mean` among names of the flow (jobs, step ids, variables...), within
        a budget of comparisons per flow: a flow with thousands of unknown names among
        thousands of names (each comparison costs) gets hints for the first ones only."""
        if len(choices) > _FREE_HINT_CHOICES:
            if len(choices) > self.hint_budget:
                return ""
            self.hint_budget -= len(choices)
        return did_you_mean(word, choices)


def _listed(names: Iterable[str]) -> str:
    """Names for a message: the first few, and how many there are when there are more."""
    shown = list(names)
    if not shown:
        return "none"
    if len(shown) <= _LISTED:
        return ", ".join(shown)
    return ", ".join(shown[:_LISTED]) + f", ... ({len(shown)} in all)"


def _local_action_folder(workspace: str, ref: str) -> str | None:
    """``ref`` (without a tag) as a folder of ``workspace`` that holds an action file, or
    None."""
    if "@" in ref or ref.startswith(("./", "/")):
        return None
    folder = os.path.normpath(os.path.join(workspace, ref))
    rel = os.path.relpath(folder, workspace)
    if rel.startswith("..") or not os.path.isdir(folder) or find_action_file(folder) is None:
        return None
    return rel


def _property_problem(kind: str, name: str, prop: str | int | None,
                      known: tuple[str, ...]) -> str | None:
    """``steps.<id>.<prop>`` / ``needs.<job>.<prop>``: one of ``known``, or a problem."""
    if not isinstance(prop, str) or prop.lower() in known:
        return None
    hint = did_you_mean(prop, known) or f" (a {kind} has {', '.join(known)})"
    return f"unknown property '{prop}' of {kind} '{name}'{hint}"


def _has_template(value: Any) -> bool:
    if isinstance(value, str):
        return is_template(value)
    if isinstance(value, dict):
        return any(_has_template(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_template(v) for v in value)
    return False


def action_template_problems(data: Mapping[str, Any]) -> list[tuple[KeyPath, str]]:
    """Templates of an action file that cannot render: bad syntax, unknown contexts or keys.

    An action file's templates (input defaults, ``runs`` values) see what the step sees, plus
    the step's own inputs as ``input.<k>`` (also ``inputs.<k>`` and ``variable.<k>``)."""
    found: list[tuple[KeyPath, Any]] = []
    inputs = data.get("inputs")
    if isinstance(inputs, dict):
        for name, spec in inputs.items():
            if isinstance(spec, dict) and "default" in spec:
                found.append((("inputs", name, "default"), spec["default"]))
    runs = data.get("runs")
    if isinstance(runs, dict):
        for key, value in runs.items():
            if key != "using":
                found.append((("runs", key), value))
    out: list[tuple[KeyPath, str]] = []

    def walk(value: Any, path: KeyPath) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, (*path, k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, (*path, i))
        elif isinstance(value, str) and "${{" in value:
            try:
                parts = find_templates(value)
            except ExprSyntaxError as exc:
                out.append((path, f"invalid template: {exc.message}"))
                return
            for part in parts:
                try:
                    node = parse(part.source)
                except ExprError as exc:
                    out.append((path, f"invalid expression: {exc.message}"))
                    continue
                except RecursionError:
                    out.append((path, f"expression nested too deeply: {_shown(part.source)}"))
                    continue
                for ref in references(node):
                    name = ref.context.lower()
                    first = ref.path[0] if ref.path else None
                    if name not in ACTION_CONTEXTS:
                        hint = did_you_mean(name, ACTION_CONTEXTS)
                        problem: str | None = f"unknown context '{ref.context}'{hint}"
                    elif isinstance(first, str):
                        problem = context_key_problem(name, first)
                    else:
                        problem = None
                    if problem:
                        out.append((path, f"{problem} in {_shown(part.source)}"))

    for path, value in found:
        walk(value, path)
    return out
