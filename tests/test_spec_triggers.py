"""The service's triggers in flow files (schedule, webhook, flow) and the flow's concurrency:
validation messages at file:line:col, the plain-data accessors, durations, trigger cycles."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import Workspace

from flowray.spec import FlowError, load_flow
from flowray.spec.triggers import (
    Concurrency,
    FlowTrigger,
    ScheduleTrigger,
    WebhookTrigger,
    concurrency,
    flow_triggers,
    parse_duration,
    schedules,
    trigger_cycle,
    webhook,
)

FULL = """
    name: train
    triggers:
      manual:
        inputs: {model: {type: string, default: resnet}}
      schedule:
        - cron: "30 2 * * *"
          timezone: Europe/Berlin
          catchup: 1h30m
        - cron: "*/15  *  * * *"
        - cron: "0 6 * * 1-5"
          catchup: 0
      webhook:
        secret: HOOK_KEY
        if: ${{ event.ref == 'refs/heads/main' && contains(event.head_commit.message, 'go') }}
      flow:
        - name: prepare
        - name: clean
          status: [failure, cancelled]
        - name: report
          status: success
    concurrency:
      group: train-${{ inputs.model }}-${{ variables.site }}-${{ flow.name }}
      max: 2
      cancel-in-progress: true
    variables: {site: lab}
    jobs:
      a:
        steps: [{run: echo trained}]
"""


@pytest.fixture(autouse=True)
def _here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def errors(text: str) -> str:
    Path("flow.yaml").write_text(textwrap.dedent(text).lstrip("\n"))
    with pytest.raises(FlowError) as info:
        load_flow("flow.yaml")
    return str(info.value)


def loaded(text: str) -> dict[str, object]:
    Path("flow.yaml").write_text(textwrap.dedent(text).lstrip("\n"))
    return dict(load_flow("flow.yaml").data)


# ----------------------------------------------------------------------------- accepted


def test_a_flow_with_every_trigger_validates_and_reads_as_plain_data() -> None:
    data = loaded(FULL)
    assert schedules(data) == [
        ScheduleTrigger(cron="30 2 * * *", timezone="Europe/Berlin", catchup_seconds=5400.0),
        ScheduleTrigger(cron="*/15 * * * *", timezone="UTC", catchup_seconds=3600.0),
        ScheduleTrigger(cron="0 6 * * 1-5", timezone="UTC", catchup_seconds=0.0),
    ]
    assert webhook(data) == WebhookTrigger(
        secret="HOOK_KEY",
        condition="${{ event.ref == 'refs/heads/main' && "
                  "contains(event.head_commit.message, 'go') }}",
    )
    assert flow_triggers(data) == [
        FlowTrigger(name="prepare", statuses=("success",)),
        FlowTrigger(name="clean", statuses=("failure", "cancelled")),
        FlowTrigger(name="report", statuses=("success",)),
    ]
    assert concurrency(data) == Concurrency(
        group="train-${{ inputs.model }}-${{ variables.site }}-${{ flow.name }}", max=2,
        cancel_in_progress=True,
    )


def test_defaults_short_forms_and_flows_without_triggers() -> None:
    data = loaded("""
        name: x
        triggers:
          webhook:
          schedule: {cron: "0 * * * *"}
          flow: {name: up}
        concurrency: nightly
        jobs: {a: {steps: [{run: echo}]}}
    """)
    assert schedules(data) == [ScheduleTrigger("0 * * * *", "UTC", 3600.0)]
    assert webhook(data) == WebhookTrigger(secret=None, condition=None)
    assert flow_triggers(data) == [FlowTrigger("up", ("success",))]
    assert concurrency(data) == Concurrency(group="nightly", max=1, cancel_in_progress=False)
    bare = loaded("name: y\njobs: {a: {steps: [{run: echo}]}}\n")
    assert (schedules(bare), webhook(bare), flow_triggers(bare), concurrency(bare)) == (
        [], None, [], None)
    listed = loaded("name: z\ntriggers: [manual, webhook]\njobs: {a: {steps: [{run: echo}]}}\n")
    assert webhook(listed) == WebhookTrigger(None, None)
    assert concurrency(loaded(
        "name: w\nconcurrency: {group: g}\njobs: {a: {steps: [{run: echo}]}}\n"
    )) == Concurrency(group="g", max=1, cancel_in_progress=False)


def test_validate_and_run_accept_triggers_and_run_ignores_them(ws: Workspace) -> None:
    flow = ws.flow(FULL)
    assert ws.cli("validate", flow).assert_success().stdout == "flow.yaml: ok (1 job)\n"
    out = ws.run(flow).assert_success()
    assert "a/1 | trained" in out.stdout


# ----------------------------------------------------------------------------- schedule


def test_schedule_problems_name_the_field_and_the_fix() -> None:
    text = """
        name: x
        triggers:
          schedule:
            - cron: "30 2 * * *"
              timezone: Europe/Berln
              catchup: 2 hours
            - cron: "61 * * * *"
              tz: UTC
            - cron: "0 0 31 4 *"
            - cron: "* * * *"
            - cron: "@daily"
            - "0 * * * *"
            - cron: "0 0 * * * *"
              timezone: berlin
              catchup: 90
            - timezone: localtime
              catchup: "-1h"
            - cron: "0 0 * 13 *"
              catchup: 400d
            - cron: "30 2 * * *"
              timezone: Europe/Berln
        jobs: {a: {steps: [{run: echo}]}}
    """
    zone_fix = "use an IANA time zone name such as 'Europe/Berlin' or 'UTC'"
    assert errors(text) == (
        "flow.yaml:5:7: triggers.schedule[0].timezone: unknown time zone 'Europe/Berln' "
        f"(did you mean 'Europe/Berlin'?): {zone_fix}\n"
        "flow.yaml:6:7: triggers.schedule[0].catchup: invalid duration '2 hours': write a "
        "number and a unit (s, m, h or d), e.g. '90s', '30m', '1h' or '1h30m'; 0 disables\n"
        "flow.yaml:7:7: triggers.schedule[1].cron: invalid cron expression '61 * * * *': bad "
        "minute field '61' (minute: 0-59; '*', lists '1,5', ranges '1-5' and steps '*/15' too)\n"
        "flow.yaml:8:7: triggers.schedule[1].tz: unknown key 'tz' (did you mean 'timezone'?) "
        "(a schedule has cron, timezone and catchup)\n"
        "flow.yaml:9:7: triggers.schedule[2].cron: the cron expression '0 0 31 4 *' never "
        "fires: no date matches it\n"
        "flow.yaml:10:7: triggers.schedule[3].cron: a cron expression has 5 fields (minute "
        "hour day-of-month month day-of-week, e.g. '30 2 * * *'), got 4 in '* * * *'\n"
        "flow.yaml:11:7: triggers.schedule[4].cron: '@daily' is not supported: write its 5 "
        "fields, '0 0 * * *'\n"
        "flow.yaml:12:7: triggers.schedule[5]: expected a map with cron, timezone and catchup, "
        "got '0 * * * *' (write '- cron: \"0 * * * *\"')\n"
        "flow.yaml:13:7: triggers.schedule[6].cron: a cron expression has 5 fields (minute "
        "hour day-of-month month day-of-week, e.g. '30 2 * * *'), got 6 in '0 0 * * * *' "
        "(flowray's schedules have no seconds or years field)\n"
        f"flow.yaml:14:7: triggers.schedule[6].timezone: unknown time zone 'berlin' (did you "
        f"mean 'Europe/Berlin'?): {zone_fix}\n"
        "flow.yaml:15:7: triggers.schedule[6].catchup: a duration needs a unit (s, m, h or d), "
        "e.g. '90m'; only 0 may be written without one, got 90\n"
        "flow.yaml:16:7: triggers.schedule[7]: missing required key 'cron' (minute hour "
        "day-of-month month day-of-week, e.g. '30 2 * * *')\n"
        "flow.yaml:16:7: triggers.schedule[7].timezone: 'localtime' names a setting of this "
        f"machine, not a time zone: {zone_fix}\n"
        "flow.yaml:17:7: triggers.schedule[7].catchup: a duration cannot be negative, got "
        "'-1h'\n"
        "flow.yaml:18:7: triggers.schedule[8].cron: invalid cron expression '0 0 * 13 *': bad "
        "month field '13' (month: 1-12 or jan-dec; '*', lists '1,5', ranges '1-5' and steps "
        "'*/15' too)\n"
        "flow.yaml:19:7: triggers.schedule[8].catchup: duration '400d' is too long: at most "
        "366d\n"
        "flow.yaml:20:7: triggers.schedule[9]: the same schedule as triggers.schedule[0] (both "
        "would start a run at the same time)\n"
        "flow.yaml:21:7: triggers.schedule[9].timezone: unknown time zone 'Europe/Berln' (did "
        f"you mean 'Europe/Berlin'?): {zone_fix}"
    )


def test_schedule_that_is_not_a_list() -> None:
    assert errors("""
        name: x
        triggers:
          schedule: "0 * * * *"
        jobs: {a: {steps: [{run: echo}]}}
    """) == (
        "flow.yaml:3:3: triggers.schedule: expected a list of maps with cron, timezone and "
        "catchup, got '0 * * * *' (write '- cron: \"0 * * * *\"')"
    )


def test_croniter_is_imported_only_for_flows_with_schedules(tmp_path: Path) -> None:
    def croniter_loaded(flow: str) -> bool:
        (tmp_path / "flow.yaml").write_text(flow)
        code = ("import sys\nfrom flowray.cli import main\ntry:\n"
                "    main(['validate', 'flow.yaml'])\nexcept SystemExit as e:\n"
                "    assert e.code == 0, e.code\nprint('croniter' in sys.modules)\n")
        out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                             text=True, check=True).stdout
        return out.splitlines()[-1] == "True"

    assert not croniter_loaded("name: x\ntriggers: {webhook: {secret: K}}\n"
                               "jobs: {a: {steps: [{run: echo}]}}\n")
    assert croniter_loaded("name: x\ntriggers: {schedule: [{cron: '0 * * * *'}]}\n"
                           "jobs: {a: {steps: [{run: echo}]}}\n")


# ----------------------------------------------------------------------------- webhook, flow


def test_webhook_problems() -> None:
    text = """
        name: x
        triggers:
          webhook:
            secret: ${{ secrets.HOOK }}
            if: ${{ secrets.x == 'a' && evnt.ref && success() }}
            iff: 1
        jobs: {a: {steps: [{run: echo}]}}
    """
    source = "'secrets.x == 'a' && evnt.ref && success()'"
    assert errors(text) == (
        "flow.yaml:4:5: triggers.webhook.secret: write the secret's name, not a template: "
        "secret: HOOK (the service reads it to check each delivery's signature)\n"
        "flow.yaml:5:9: triggers.webhook.if: a webhook's condition cannot read 'secrets' "
        f"(only event) in {source}\n"
        "flow.yaml:5:9: triggers.webhook.if: a webhook's condition cannot read 'evnt' (only "
        f"event) (did you mean 'event'?) in {source}\n"
        "flow.yaml:5:9: triggers.webhook.if: a webhook's condition cannot call success() (it "
        f"is read before the run starts, there is no status to test) in {source}\n"
        "flow.yaml:6:5: triggers.webhook.iff: unknown key 'iff' (did you mean 'if'?) (a "
        "webhook has secret and if)"
    )


def test_webhook_condition_syntax_and_types() -> None:
    assert errors("""
        name: x
        triggers:
          webhook: {secret: "my-key", if: "event.ref =="}
        jobs: {a: {steps: [{run: echo}]}}
    """) == (
        "flow.yaml:3:13: triggers.webhook.secret: invalid secret name 'my-key': a name starts "
        "with a letter or '_' and holds only letters, digits and '_'\n"
        "flow.yaml:3:35: triggers.webhook.if: invalid expression: expected a value after '==' at "
        "position 12 in 'event.ref =='"
    )
    assert errors("""
        name: x
        triggers:
          webhook: {secret: 7, if: [1]}
        jobs: {a: {steps: [{run: echo}]}}
    """) == (
        "flow.yaml:3:13: triggers.webhook.secret: expected a secret's name, got 7\n"
        "flow.yaml:3:24: triggers.webhook.if: expected an expression reading event (the "
        "delivery's JSON body), got a list"
    )


def test_flow_trigger_problems() -> None:
    text = """
        name: train
        triggers:
          flow:
            - name: prepare
              status: [succes, failure]
            - name: train
            - name: prepare
              status: []
            - flow: x
            - clean
            - name: 3
              status: running
        jobs: {a: {steps: [{run: echo}]}}
    """
    statuses = "success, failure, cancelled, skipped"
    assert errors(text) == (
        f"flow.yaml:5:16: triggers.flow[0].status[0]: expected one of {statuses}, got 'succes' "
        "(did you mean 'success'?)\n"
        "flow.yaml:6:7: triggers.flow[1].name: flow 'train' would start itself: each run's end "
        "would start another, forever (flow triggers must not form a cycle)\n"
        "flow.yaml:7:7: triggers.flow[2].name: flow 'prepare' is already a trigger "
        "(triggers.flow[0]): list all its statuses there\n"
        "flow.yaml:8:7: triggers.flow[2].status: an empty list of statuses never starts this "
        f"flow: list some of {statuses}, or leave 'status' out for [success]\n"
        "flow.yaml:9:7: triggers.flow[3].flow: unknown key 'flow' (did you mean 'name'?) (a "
        "flow trigger has name and status)\n"
        "flow.yaml:9:7: triggers.flow[3]: missing required key 'name' (the flow whose runs, "
        "when they end, start this one)\n"
        "flow.yaml:10:7: triggers.flow[4]: expected a map with name and status, got 'clean' "
        "(write '- name: clean')\n"
        "flow.yaml:11:7: triggers.flow[5].name: expected a flow's name, got 3\n"
        f"flow.yaml:12:7: triggers.flow[5].status: expected one of {statuses}, got 'running'"
    )


def test_unknown_trigger_kinds() -> None:
    text = """
        name: x
        triggers:
          schedul: []
          workflow_dispatch: {}
          push: {}
          concurrency: {group: g}
          annotatorButton: {name: B}
        jobs: {a: {steps: [{run: echo}]}}
    """
    assert errors(text) == (
        "flow.yaml:3:3: triggers.schedul: unknown trigger 'schedul' (did you mean "
        "'schedule'?) (triggers: manual, schedule, webhook, flow, annotatorButton)\n"
        "flow.yaml:4:3: triggers.workflow_dispatch: unknown trigger 'workflow_dispatch' (did "
        "you mean 'manual'? 'workflow_dispatch' is a trigger of GitHub Actions; flowray's is "
        "'manual')\n"
        "flow.yaml:5:3: triggers.push: unknown trigger 'push' (a trigger of GitHub Actions): a "
        "'webhook' trigger receives your git host's push events; test them with 'if', e.g. "
        "event.ref == 'refs/heads/main'\n"
        "flow.yaml:6:3: triggers.concurrency: 'concurrency' belongs at the top level of the "
        "flow, beside 'triggers', not under it\n"
        "flow.yaml:7:3: warning: triggers.annotatorButton: 'annotatorButton' is a DataTorch "
        "platform trigger (a button in its annotator); flowray accepts it but it never starts "
        "this flow"
    )


def test_triggers_as_a_list_of_names() -> None:
    assert errors("""
        name: x
        triggers: [manual, schedule, hook, 3]
        jobs: {a: {steps: [{run: echo}]}}
    """) == (
        "flow.yaml:2:20: triggers[1]: the 'schedule' trigger needs settings: write 'triggers' "
        "as a map (schedule: [{cron: '30 2 * * *', timezone: UTC}])\n"
        "flow.yaml:2:30: triggers[2]: unknown trigger 'hook' (did you mean 'webhook'?) "
        "(triggers: manual, schedule, webhook, flow, annotatorButton)\n"
        "flow.yaml:2:36: triggers[3]: expected a trigger's name, got 3"
    )


# ----------------------------------------------------------------------------- concurrency


def test_concurrency_problems() -> None:
    text = """
        name: x
        concurrency:
          group: train-${{ inputs.model }}-${{ secrets.x }}-${{ variables.nope }}
          max: 0
          cancel_in_progress: yes
          cancel-in-progress: "no"
        jobs:
          a:
            concurrency: x
            steps: [{run: echo}]
    """
    assert errors(text) == (
        "flow.yaml:3:10: concurrency.group: a concurrency group cannot read 'secrets' (only "
        "inputs, flow, event and variables) in 'secrets.x'\n"
        "flow.yaml:3:10: concurrency.group: unknown variable 'nope' (the flow defines no "
        "variables) in 'variables.nope'\n"
        "flow.yaml:4:3: concurrency.max: must be from 1 to 10000, got 0\n"
        "flow.yaml:5:3: concurrency.cancel_in_progress: unknown key 'cancel_in_progress' (did "
        "you mean 'cancel-in-progress'?) (concurrency has group, max and cancel-in-progress)\n"
        "flow.yaml:6:3: concurrency.cancel-in-progress: expected true or false, got 'no'\n"
        "flow.yaml:9:5: jobs.a.concurrency: unknown key 'concurrency' (a key of GitHub "
        "Actions): it belongs at the top level of the flow, beside 'triggers'"
    )


def test_concurrency_shape_problems() -> None:
    assert errors("""
        name: x
        concurrency: {max: many, limit: 2}
        jobs: {a: {steps: [{run: echo}]}}
    """) == (
        "flow.yaml:2:1: concurrency: missing required key 'group' (runs of one group share the "
        "limit, e.g. group: train-${{ inputs.model }})\n"
        "flow.yaml:2:15: concurrency.max: expected an integer (runs at once in the group), got "
        "'many'\n"
        "flow.yaml:2:26: concurrency.limit: unknown key 'limit' (did you mean 'max'?) "
        "(concurrency has group, max and cancel-in-progress)"
    )
    assert errors("name: x\nconcurrency: 3\njobs: {a: {steps: [{run: echo}]}}\n") == (
        "flow.yaml:2:1: concurrency: expected a string or a map, got 3"
    )
    assert errors("name: x\nconcurrency: ${{ steps.a }}\njobs: {a: {steps: [{run: echo}]}}\n") \
        == ("flow.yaml:2:14: concurrency: a concurrency group cannot read 'steps' (only inputs, "
            "flow, event and variables) in 'steps.a'")


# ----------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(("written", "seconds"), [
    ("1h", 3600.0), ("30m", 1800.0), ("90s", 90.0), ("0", 0.0), (0, 0.0), (0.0, 0.0),
    ("1h30m", 5400.0), ("1h 30m", 5400.0), ("1.5h", 5400.0), ("2d", 172800.0), ("0s", 0.0),
    ("366d", 366 * 86400.0),
])
def test_parse_duration(written: str | int | float, seconds: float) -> None:
    assert parse_duration(written) == seconds


@pytest.mark.parametrize(("written", "message"), [
    ("2 hours", "invalid duration '2 hours': write a number and a unit (s, m, h or d), e.g. "
                "'90s', '30m', '1h' or '1h30m'; 0 disables"),
    ("h", "invalid duration 'h': write a number and a unit (s, m, h or d), e.g. '90s', '30m', "
          "'1h' or '1h30m'; 0 disables"),
    (60, "a duration needs a unit (s, m, h or d), e.g. '60m'; only 0 may be written without "
         "one, got 60"),
    ("-5m", "a duration cannot be negative, got '-5m'"),
    ("367d", "duration '367d' is too long: at most 366d"),
    (True, "expected a duration, a number and a unit (s, m, h or d), e.g. '90s', '30m', '1h' "
           "or '1h30m'; 0 disables; got true"),
])
def test_parse_duration_errors(written: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(written)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_trigger_cycle() -> None:
    # train starts when prepare ends, prepare when report ends, report when train ends.
    edges = {"train": ["prepare"], "prepare": ["report"], "report": ["train"], "x": []}
    assert trigger_cycle(edges) == ["train", "prepare", "report", "train"]
    assert trigger_cycle({"a": ["a"]}) == ["a", "a"]
    assert trigger_cycle({"a": ["b"], "b": ["c"], "c": ["gone"]}) is None
    assert trigger_cycle({}) is None


def test_a_webhook_without_a_secret_is_a_warning(tmp_path: Path) -> None:
    import flowray

    for triggers in ("  webhook: {if: \"${{ event.ok }}\"}\n", "  webhook:\n"):
        flow = tmp_path / "hook.yaml"
        flow.write_text("name: hook\ntriggers:\n" + triggers
                        + "jobs:\n  a:\n    steps:\n      - run: 'true'\n")
        [diag] = flowray.validate(str(flow), workdir=str(tmp_path))
        assert (diag.line, diag.col, diag.path, diag.severity, diag.message) == (
            3, 3, "triggers.webhook", "warning",
            "a webhook without 'secret' can never start this flow: the service refuses every "
            "unsigned delivery (401); name the stored secret that signs deliveries "
            "(secret: HOOK_KEY)")
    flow.write_text("name: hook\ntriggers: [manual, webhook]\njobs:\n  a:\n    steps:\n"
                    "      - run: 'true'\n")
    [diag] = flowray.validate(str(flow), workdir=str(tmp_path))
    assert (diag.path, diag.severity) == ("triggers[1]", "warning")
