"""Flow -> plan: matrix cells, job keys, ``needs`` order and the jobs a run selects."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flowray.plan.graph import topological_order
from flowray.spec.matrix import MatrixTooLarge, expand_matrix
from flowray.spec.types import FlowData, JobData


class PlanError(ValueError):
    """A run cannot be planned (bad ``--matrix``/``--job`` choice, resources this machine lacks)."""


@dataclass(frozen=True)
class JobPlan:
    key: str  # unique in the run: the job id, or "<id>.<n>" for the n-th matrix cell
    job_id: str
    name: str  # display name; matrix values in parentheses
    data: JobData
    matrix: dict[str, Any] | None = None
    needs: tuple[str, ...] = ()  # job ids


@dataclass(frozen=True)
class Plan:
    flow: FlowData
    jobs: list[JobPlan]  # every job needed before the jobs after it
    groups: dict[str, list[JobPlan]] = field(default_factory=dict)  # job id -> its cells

    def describe(self) -> list[str]:
        """Human-readable lines: one per job in order, with needs and resources."""
        lines = []
        for job in self.jobs:
            res = job.data["resources"]
            bits = [f"cpus={res['cpus']:g}"]
            if res["gpus"] is not None:
                bits.append(f"gpus={res['gpus']}")
            if job.needs:
                bits.append("needs=" + ",".join(job.needs))
            lines.append(f"{job.key}: {job.name} [{' '.join(bits)}]")
            for i, step in enumerate(job.data["steps"]):
                what = step["run"] if step["run"] is not None else f"action {step['action']}"
                first = str(what).strip().splitlines()[0] if str(what).strip() else ""
                label = step["name"] or step["id"] or f"step {i + 1}"
                lines.append(f"  {i + 1}. {label}: {first}")
        return lines


def _cell_label(cell: Mapping[str, Any]) -> str:
    parts = []
    for v in cell.values():
        parts.append(v if isinstance(v, str) else json.dumps(v, separators=(",", ":")))
    return ", ".join(parts)


def _matrix_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _render_name(name: str, cell: Mapping[str, Any], flow: FlowData) -> str:
    """A job name with its ``${{ matrix.* }}`` / ``${{ variables.* }}`` templates filled in."""
    if "${{" not in name:
        return name
    from flowray import expr

    try:
        return expr.to_text(expr.render(name, {"matrix": dict(cell),
                                               "variables": flow["variables"]}))
    except expr.ExprError:
        return name


def is_git_action(value: object) -> bool:
    if isinstance(value, dict):
        return True
    return isinstance(value, str) and not value.startswith(("./", "docker://"))


def git_refs_of(flow: FlowData) -> list[Any]:
    """The git action references a (validated) flow uses, each once, in order of use."""
    seen: list[Any] = []
    for job in flow["jobs"].values():
        for step in job["steps"]:
            ref = step["action"]
            if ref is not None and is_git_action(ref) and ref not in seen:
                seen.append(ref)
    return seen


def build_plan(
    flow: FlowData,
    *,
    matrix_filter: Mapping[str, str] | None = None,
    only_jobs: Sequence[str] = (),
) -> Plan:
    """Expand matrices and order jobs. ``only_jobs`` keeps those jobs and the jobs they need."""
    jobs = flow["jobs"]
    for job_id in only_jobs:
        if job_id not in jobs:
            raise PlanError(
                f"no job '{job_id}' in flow '{flow['name']}' (jobs: {', '.join(jobs)})"
            )
    order = topological_order({k: v["needs"] for k, v in jobs.items()})
    selected = set(order)
    if only_jobs:
        selected = set()
        todo = list(only_jobs)
        while todo:
            j = todo.pop()
            if j not in selected:
                selected.add(j)
                todo.extend(jobs[j]["needs"])
    matrix_filter = dict(matrix_filter or {})
    used_filter: set[str] = set()
    plans: list[JobPlan] = []
    groups: dict[str, list[JobPlan]] = {}
    for job_id in order:
        if job_id not in selected:
            continue
        data = jobs[job_id]
        display = data["name"] or job_id
        strategy = data["strategy"]
        has_matrix = bool(strategy and strategy["matrix"])
        try:
            cells = expand_matrix(strategy["matrix"]) if strategy and has_matrix else []
        except MatrixTooLarge as exc:  # validation reports it first; a plan never expands it
            raise PlanError(f"job '{job_id}': {exc}") from None
        if has_matrix and not cells:
            raise PlanError(f"job '{job_id}': its matrix has no cells left after 'exclude'")
        if not has_matrix:
            name = _render_name(display, {}, flow)
            groups[job_id] = [JobPlan(job_id, job_id, name, data, None, tuple(data["needs"]))]
        else:
            if matrix_filter:
                kept = []
                for cell in cells:
                    hit = True
                    for k, want in matrix_filter.items():
                        if k in cell:
                            used_filter.add(k)
                            if _matrix_text(cell[k]) != want:
                                hit = False
                    if hit:
                        kept.append(cell)
                cells = kept
            groups[job_id] = [
                JobPlan(
                    f"{job_id}.{i + 1}",
                    job_id,
                    _render_name(display, cell, flow)
                    if "${{" in display
                    else f"{display} ({_cell_label(cell)})",
                    data,
                    cell,
                    tuple(data["needs"]),
                )
                for i, cell in enumerate(cells)
            ]
        plans.extend(groups[job_id])
    unused = set(matrix_filter) - used_filter
    if unused:
        raise PlanError(
            "--matrix " + ", ".join(sorted(unused)) + ": no matrix job of this flow has that key"
        )
    return Plan(flow=flow, jobs=plans, groups=groups)
