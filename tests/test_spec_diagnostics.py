"""Diagnostic formatting, FlowError, and the light import of flowray.spec."""

from __future__ import annotations

import pickle
import subprocess
import sys

from flowray.spec import Diagnostic, FlowError
from flowray.spec.diagnostics import did_you_mean, format_path


def test_format_error_with_position_and_path() -> None:
    d = Diagnostic("flow.yaml", 14, 7, "jobs.train.steps[2].action", "bad action")
    assert d.format() == "flow.yaml:14:7: jobs.train.steps[2].action: bad action"
    assert str(d) == d.format()


def test_format_leaves_out_unknown_position_and_empty_path() -> None:
    d = Diagnostic("flow.txt", 0, 0, "", "flow files must end in .yml, .yaml or .json")
    assert d.format() == "flow.txt: flow files must end in .yml, .yaml or .json"


def test_format_warning() -> None:
    d = Diagnostic("f.yaml", 3, 9, "jobs.a.steps[0].with.x", "not declared", "warning")
    assert d.format() == "f.yaml:3:9: warning: jobs.a.steps[0].with.x: not declared"


def test_format_color() -> None:
    err = Diagnostic("f.yaml", 3, 9, "name", "oops")
    warn = Diagnostic("f.yaml", 3, 9, "name", "hmm", "warning")
    assert err.format(color=True) == "\x1b[1mf.yaml:3:9:\x1b[0m \x1b[31merror:\x1b[0m name: oops"
    assert warn.format(color=True) == (
        "\x1b[1mf.yaml:3:9:\x1b[0m \x1b[33mwarning:\x1b[0m name: hmm"
    )


def test_flow_error_sorts_groups_by_file_and_dedupes() -> None:
    a = Diagnostic("flow.yaml", 9, 1, "b", "second")
    b = Diagnostic("flow.yaml", 2, 5, "a", "first")
    c = Diagnostic("act/action-datatorch.yaml", 1, 1, "name", "in the action")
    err = FlowError([a, c, b, b])
    assert err.diagnostics == [b, a, c]
    assert str(err) == (
        "flow.yaml:2:5: a: first\n"
        "flow.yaml:9:1: b: second\n"
        "act/action-datatorch.yaml:1:1: name: in the action"
    )
    assert err.errors == [b, a, c] and err.warnings == []


def test_flow_error_pickles() -> None:
    err = FlowError([Diagnostic("f.yaml", 1, 1, "", "x")])
    again = pickle.loads(pickle.dumps(err))
    assert again.diagnostics == err.diagnostics and str(again) == str(err)


def test_format_path() -> None:
    assert format_path(("jobs", "train", "steps", 2, "action")) == "jobs.train.steps[2].action"
    assert format_path(()) == ""
    assert format_path(("env", "A.B")) == 'env["A.B"]'
    assert format_path(("jobs", "b c")) == 'jobs["b c"]'
    assert format_path((0, "a")) == "[0].a"


def test_did_you_mean() -> None:
    assert did_you_mean("neds", ["needs", "name"]) == " (did you mean 'needs'?)"
    assert did_you_mean("STEPS", ["steps"]) == " (did you mean 'steps'?)"
    assert did_you_mean("zzzz", ["needs"]) == ""


def test_package_import_is_light() -> None:
    code = (
        "import sys\n"
        "import flowray.spec, flowray.spec.types\n"
        "from flowray.spec import Diagnostic, FlowError, LoadedFlow, coerce_input\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('pydantic', 'yaml')]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
