"""Input that runs as code: untrusted template values in ``run`` scripts and ``cmd`` actions,
machine values that a user can influence, and local actions outside the working directory.

Every test asserts what a user sees: the marker file an injected command would create does not
exist, and a refused script gets its exact message, exit code 2 and file:line:col.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import Workspace
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowray import expr
from flowray.execute.shell import ShellTemplateError, render_script
from flowray.spec.shells import (
    ARITHMETIC,
    BACKTICK,
    COMPOUND,
    HEREDOC,
    HERESTRING,
    NAMEREF,
    PARAM,
    STEP_ADVICE,
    TESTED_NAME,
    Trust,
    is_trusted,
    script_problems,
)

X = "${{ inputs.x }}"


def refused(where: str, line: int = 1, source: str = "inputs.x") -> str:
    return (f"'${{{{ {source} }}}}' (line {line} of the script) reads data from outside the "
            f"flow and stands {where}: flowray cannot pass it there safely; {STEP_ADVICE}")


def bash(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", script], cwd=cwd, env={**os.environ, **env},
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=20, check=False)


def indented(script: str, by: int = 18) -> str:
    """A script as a YAML block under ``run: |`` in ws.flow's dedented text."""
    return "\n".join((" " * by + line) if line else "" for line in script.split("\n"))


# ------------------------------------------------------------------- item 5: the tokenizer

PYTHON_HEREDOC = "python3 - <<'PY'\nprint('${{ inputs.x }}')\nPY"
PYTHON_PAYLOAD = "');__import__('os').system('touch MARK');print('"

DESYNC_PREFIXES = {
    "&#": "echo a&#'",
    "|#": "echo a|#'",
    ";#": "echo a;#'",
    "(#": "(#'\n)",
    "comment with quotes": "# it's \"a\" `comment`",
}


@pytest.mark.parametrize("name", list(DESYNC_PREFIXES))
def test_a_comment_after_an_operator_does_not_hide_a_heredoc(ws: Workspace, name: str) -> None:
    script = DESYNC_PREFIXES[name] + "\n" + PYTHON_HEREDOC
    line = script.split("\n").index("print('${{ inputs.x }}')") + 1
    flow = ws.flow(f"""
        name: desync
        jobs:
          j:
            steps:
              - run: |
{indented(script)}
    """)
    expected = f"flow.yaml:5:14: jobs.j.steps[0].run: {refused(HEREDOC, line)}\n"
    checked = ws.cli("validate", flow)
    assert (checked.exit_code, checked.stderr) == (2, expected)
    out = ws.run(flow, "--input", f"x={PYTHON_PAYLOAD}")
    assert (out.exit_code, out.stderr) == (2, expected)
    assert not (ws.root / "MARK").exists()
    # the run-time side refuses the same script on its own
    with pytest.raises(ShellTemplateError) as err:
        render_script(script, {"inputs": {"x": PYTHON_PAYLOAD}}, posix=True)
    assert str(err.value) == refused(HEREDOC, line)


def test_a_code_option_with_its_code_attached_is_refused(ws: Workspace) -> None:
    """python3 -c"CODE": the code is the rest of the option's word (seen run: the payload
    created the marker before)."""
    flow = ws.flow("""
        name: attached
        jobs:
          j:
            steps:
              - run: python3 -u -c"${{ inputs.x }}"
    """)
    reason = refused("in the code that 'python3 -c' runs")
    expected = f"flow.yaml:5:14: jobs.j.steps[0].run: {reason}\n"
    for command in (("validate", flow), ("run", flow, "--input",
                                         "x=__import__('os').system('touch MARK')")):
        out = ws.cli(*command)
        assert (out.exit_code, out.stderr) == (2, expected)
    assert not (ws.root / "MARK").exists()


def test_the_payloads_are_real(tmp_path: Path) -> None:
    """Spliced as text, as the old scanner did in a quoted here-document, the payloads of this
    file do run: so the tests above and below would see an injection."""
    for script, value in [
        (DESYNC_PREFIXES["&#"] + "\n" + PYTHON_HEREDOC, PYTHON_PAYLOAD),
        ("echo $(( ${{ inputs.x }} + 1 ))", "a[$(touch MARK)]"),
        ("bash -c 'echo ${{ inputs.x }}'", "$(touch MARK)"),
        ("python3 -u -c\"${{ inputs.x }}\"", "__import__('os').system('touch MARK')"),
        ("perl -e 'print 1;' -e \"${{ inputs.x }};\"", "system(q(touch MARK))"),
        ("declare -n r=\"${{ inputs.x }}\"; echo \"$r\"", "a[$(touch MARK)]"),
        ("test -v \"${{ inputs.x }}\"", "a[$(touch MARK)]"),
        ("A=([${{ inputs.x }}]=1)", "$(touch MARK)"),
        ("declare -i n; n=\"${{ inputs.x }}\"", "a[$(touch MARK)]"),
        ("PS4=\"${{ inputs.x }}\"; set -x; true", "$(touch MARK)"),
        ("BASH_ENV=\"${{ inputs.x }}\" bash -c true", "MARK.sh"),
    ]:
        (tmp_path / "MARK.sh").write_text("touch MARK\n")
        (tmp_path / "MARK").unlink(missing_ok=True)
        bash(script.replace(X, value), {}, tmp_path)
        assert (tmp_path / "MARK").exists(), script


# Adversarial places. "data": the value reaches the command as it is; anything else: the
# refusal's reason.
PAYLOAD = "$(touch MARK1); touch MARK2 `touch MARK3` 'q' \"d\" \\ ${HOME}"
PLACES: list[tuple[str, str, str]] = [
    # (script, expected, what the script prints when it is data)
    ("echo X # it's", "data", f"{PAYLOAD}\n"),
    ("# it's \"a\" comment\necho X", "data", f"{PAYLOAD}\n"),
    ("echo \"$(echo \"$(echo X)\")\"", "data", f"{PAYLOAD}\n"),
    ("echo $(echo 'X')", "data", f"{PAYLOAD}\n"),
    ("echo $'\\tX'", "data", f"\t{PAYLOAD}\n"),
    ("y=abc; echo ${y#a} X", "data", f"bc {PAYLOAD}\n"),
    ("case a in a) echo X;; esac", "data", f"{PAYLOAD}\n"),
    ("echo \"$(case a in (a) echo X;; b) :;; esac)\"", "data", f"{PAYLOAD}\n"),
    ("cat <<'E'\nbody\nE\necho X", "data", f"body\n{PAYLOAD}\n"),
    ("cat <<A <<B\na\nA\nb\nB\necho X", "data", f"b\n{PAYLOAD}\n"),  # the last '<<' wins
    ("bash -c 'printf %s \"$0\"' X", "data", PAYLOAD),
    ("printf '%s\\n' X > out.txt; cat out.txt", "data", f"{PAYLOAD}\n"),
    ("[[ X == *MARK* ]] && echo yes", "data", "yes\n"),
    # the word of ${v:-word} (-, :=, =, :+, +, :?, ?) is expanded as a word: data there
    ("V=${V:-\"X\"}; echo \"$V\"", "data", f"{PAYLOAD}\n"),
    ("echo ${V:-X}", "data", f"{PAYLOAD}\n"),
    ("echo ${V-'X'}", "data", f"{PAYLOAD}\n"),
    ("echo \"${V:-X}\"", "data", f"{PAYLOAD}\n"),
    ("echo \"${V:-\"X\"}\"", "data", f"{PAYLOAD}\n"),
    (": ${V:=X}; echo \"$V\"", "data", f"{PAYLOAD}\n"),
    ("V=1; echo ${V:+<X>} \"${V+X}\"", "data", f"<{PAYLOAD}> {PAYLOAD}\n"),
    ("echo ${V:-a${W:-X}b}", "data", f"a{PAYLOAD}b\n"),
    ("echo ${V:-{X}}", "data", f"{{{PAYLOAD}}}\n"),
    ("echo `echo X`", "refused", BACKTICK),
    # an offset, a subscript, a pattern: refused
    ("echo ${y:0:X}", "refused", PARAM),
    ("echo ${y#X}", "refused", PARAM),
    ("echo ${y/a/X}", "refused", PARAM),
    ("echo ${a[X]:-b}", "refused", PARAM),
    ("echo ${PS4:=X}", "refused", PARAM),
    ("cat <<-E\n\tX\n\tE", "refused", HEREDOC),
    ("cat << 'E'\nX\nE", "refused", HEREDOC),
    ("cat <<\"E\"\nX\nE", "refused", HEREDOC),
    ("cat <<\\E\nX\nE", "refused", HEREDOC),
    ("cat <<A <<B\na\nA\nX\nB", "refused", HEREDOC),
    ("y=$(cat <<E\nX\nE\n)", "refused", HEREDOC),
    ("cat <<E\nfoo\\\nE\nX\nE", "refused", HEREDOC),  # the backslash joins 'foo' and 'E'
    ("cat <<< X", "refused", HERESTRING),
    ("eval \"echo X\"", "refused", "in an argument of 'eval', which runs it as shell code"),
    ("trap 'echo X' INT", "refused", "in an argument of 'trap', which runs it as shell code"),
    ("bash -c \"echo X\"", "refused", "in the code that 'bash -c' runs"),
    ("sh -ec 'echo X'", "refused", "in the code that 'sh -ec' runs"),
    ("python3 -c \"print('X')\"", "refused", "in the code that 'python3 -c' runs"),
    ("sed 's/a/X/' /dev/null", "refused", "in the program of 'sed', which it runs as code"),
    ("echo \"${y:-'}'}\"; echo X", "refused",  # bash reads these quotes, dash does not
     "after a quote inside ${...} in double quotes, which shells read differently, where "
     "flowray cannot follow how the shell reads the rest of the script"),
    ("echo 'unterminated; echo X", "refused",
     "after an unterminated quote, where flowray cannot follow how the shell reads the rest of "
     "the script"),
    ("read X", "refused",
     "in a variable name (declare, unset, read, printf -v), where bash evaluates a[$(cmd)]"),
    ("f() { read X; }", "refused",
     "in a variable name (declare, unset, read, printf -v), where bash evaluates a[$(cmd)]"),
    # the value of a variable that bash evaluates: a name, a prompt, code, a file it runs
    ("declare -n r=\"X\"", "refused", NAMEREF),
    ("f() { local -n r=\"X\"; }", "refused", NAMEREF),
    ("typeset -n r=X", "refused", NAMEREF),
    ("declare -gn r=X", "refused", NAMEREF),
    ("declare -n r; r=\"X\"", "refused", NAMEREF),
    ("test -v \"X\"", "refused", TESTED_NAME),
    ("[ -v \"X\" ]", "refused", TESTED_NAME),
    ("declare -a a=\"X\"", "refused", COMPOUND),
    ("declare -A m; declare m=\"X\"", "refused", COMPOUND),
    ("declare -a a=(\"X\"); echo \"${a[0]}\"", "data", f"{PAYLOAD}\n"),
    ("export -n V; test -n \"X\" && echo set", "data", "set\n"),
    ("PS4=\"X\"; set -x; true", "refused",
     "in the value of PS4, which bash expands as a prompt, running the $(...) in it (PS4 with "
     "set -x)"),
    ("export PS1=\"X\"", "refused",
     "in the value of PS1, which bash expands as a prompt, running the $(...) in it (PS4 with "
     "set -x)"),
    ("PROMPT_COMMAND=X", "refused", "in the value of PROMPT_COMMAND, which bash runs as shell code"),
    ("BASH_ENV=\"X\" bash -c true", "refused",
     "in the value of BASH_ENV, which names a file that bash runs as shell code when it starts"),
    ("env BASH_ENV=\"X\" bash -c true", "refused",
     "in the value of BASH_ENV, which names a file that bash runs as shell code when it starts"),
    ("ENV=X sh -i -c true", "refused",
     "in the value of ENV, which names a file that sh runs as shell code when it starts"),
]


@pytest.mark.parametrize(("script", "expected", "detail"), PLACES,
                         ids=[p[0] for p in PLACES])
def test_untrusted_values_are_data_or_refused(tmp_path: Path, script: str, expected: str,
                                              detail: str) -> None:
    script = script.replace("X", X).replace("MARK*", "MARK1*")
    problems = script_problems(script)
    ctx = {"inputs": {"x": PAYLOAD}}
    if expected == "refused":
        line = script[:script.index(X)].count("\n") + 1
        assert problems == [refused(detail, line)]
        with pytest.raises(ShellTemplateError) as err:
            render_script(script, ctx, posix=True)
        assert str(err.value) == refused(detail, line)
        return
    assert problems == []
    rendered, env = render_script(script, ctx, posix=True)
    assert PAYLOAD not in rendered
    done = bash(rendered, env, tmp_path)
    assert (done.returncode, done.stdout) == (0, detail), done.stderr
    assert not list(tmp_path.glob("MARK*"))


@pytest.mark.parametrize(("script", "reason"), [
    ("bash -eo pipefail -c 'echo X'", "in the code that 'bash -c' runs"),
    # a code option with its code attached, among other options, or given twice
    ("python3 -c\"X\"", "in the code that 'python3 -c' runs"),
    ("python3 -u -c\"X\"", "in the code that 'python3 -c' runs"),
    ("python3 -Wignore -c\"X\"", "in the code that 'python3 -c' runs"),
    ("python3 -uc\"X\"", "in the code that 'python3 -uc' runs"),
    ("python3 -Sc X", "in the code that 'python3 -Sc' runs"),
    ("perl -e\"X\"", "in the code that 'perl -e' runs"),
    ("perl -e 'print 1;' -e \"X;\"", "in the code that 'perl -e' runs"),
    ("perl -Mstrict -le X", "in the code that 'perl -le' runs"),
    ("ruby -w -e 1 -e X", "in the code that 'ruby -e' runs"),
    ("node --eval=\"X\"", "in the code that 'node --eval' runs"),
    ("node -p 1 --eval X", "in the code that 'node --eval' runs"),
    ("bash -xc \"echo X\"", "in the code that 'bash -xc' runs"),
    ("bash -c -e X", "in the code that 'bash -c' runs"),
    ("sh -c -- X", "in the code that 'sh -c' runs"),
    ("php -B 1 -R X", "in the code that 'php -R' runs"),
    # where an interpreter reads its options, a value could be one (python3 -cCODE)
    ("python3 X", "where 'python3' reads its options, and an option can make it run code "
                  "('python3 -cCODE'); write '--' before an operand that comes from outside"),
    ("perl -w X", "where 'perl' reads its options, and an option can make it run code "
                  "('perl -eCODE'); write '--' before an operand that comes from outside"),
    ("node -r mod X", "where 'node' reads its options, and an option can make it run code "
                      "('node -eCODE'); write '--' before an operand that comes from outside"),
    ("python3 -X", "where 'python3' reads its options, and an option can make it run code "
                   "('python3 -cCODE'); write '--' before an operand that comes from outside"),
    ("node -r X app.js", "in the argument of 'node -r', which names a file or module it runs"),
    ("node --require=X app.js", "where 'node' reads its options, and an option can make it run "
                                "code ('node -eCODE'); write '--' before an operand that comes "
                                "from outside"),
    ("sudo -u u bash --norc -o errexit -c X", "in the code that 'bash -c' runs"),
    ("su user -c X", "in the code that 'su -c' runs"),
    ("env python3 -W ignore -c X", "in the code that 'python3 -c' runs"),
    ("perl -ne X f", "in the code that 'perl -ne' runs"),
    ("sed -e 's/a/b/' -e X f", "in the program of 'sed', which it runs as code"),
    ("awk -F: X f", "in the program of 'awk', which it runs as code"),
    ("x=1 eval X", "in an argument of 'eval', which runs it as shell code"),
    (". X", "in an argument of '.', which runs a file it names as shell code"),
    ("declare X=1", "in a variable name (declare, unset, read, printf -v), where bash "
                    "evaluates a[$(cmd)]"),
    ("printf -v X %s v", "in a variable name (declare, unset, read, printf -v), where bash "
                         "evaluates a[$(cmd)]"),
    # arguments, not code: the script's own options, operands, $0
    ("python3 train.py -c X", None), ("bash run.sh -c X", None), ("sed -n 1p X", None),
    ("awk -v v=X '{print v}' f", None), ("node -r mod app.js X", None), ("echo . X", None),
    ("python3 -- X", None), ("python3 ./X", None), ("python3 -m mod X", None),
    ("python3 -c 'import sys' X", None), ("sh -c 'echo \"$1\"' sh X", None),
    ("bash -c 'exec \"$@\"' bash python3 -c X", "in the code that 'python3 -c' runs"), ("python3 -W X -u t.py", None), ("perl t.pl -e X", None),
    ("declare n=X", None), ("export PATH=X:$PATH", None), ("printf '%s' X", None),
])
def test_which_arguments_a_command_runs_as_code(script: str, reason: str | None) -> None:
    problems = script_problems(script.replace("X", X))
    assert problems == ([refused(reason)] if reason else [])


@pytest.mark.parametrize("script", [
    "echo $(( X + 1 ))", "(( X > 1 )) && echo yes", "echo $[ X + 1 ]",
    "[[ X -eq 41 ]] || echo yes", "let 'n = X + 1'; echo $n", "declare -i n=X; echo $n",
    "a[X]=1; echo ${!a[@]}",
    # a compound array assignment's subscript, a later assignment to a declare -i name
    "declare -a A; A=([X]=1); echo ${!A[@]}", "A=(); A+=([X]=1); echo ${!A[@]}",
    "declare -i n; n=X; echo $n", "typeset -i n=0; n+=X; echo $n",
    "f() { n=\"X\"; }; declare -i n; f; echo $n", "declare -i n; export n=X; echo $n",
])
def test_arithmetic_takes_whole_numbers_only(tmp_path: Path, script: str) -> None:
    script = script.replace("X", X)
    assert script_problems(script) == []  # a number is safe there: it cannot be told before
    rendered, env = render_script(script, {"inputs": {"x": "42"}}, posix=True)
    done = bash(rendered, env, tmp_path)
    assert done.returncode == 0 and done.stdout in ("43\n", "yes\n", "42\n"), done
    line = 1
    with pytest.raises(ShellTemplateError) as err:
        render_script(script, {"inputs": {"x": "a[$(touch MARK)]"}}, posix=True)
    assert str(err.value) == (
        f"'${{{{ inputs.x }}}}' (line {line} of the script) stands {ARITHMETIC}, so only a whole "
        "number may go there, and its value is not one")


def test_arithmetic_refusal_fails_the_step_and_runs_nothing(ws: Workspace) -> None:
    flow = ws.flow("""
        name: arith
        jobs:
          j:
            steps:
              - run: echo "next $(( ${{ inputs.n }} + 1 ))"
    """)
    ws.run(flow, "--input", "n=41").assert_success()
    out = ws.run(flow, "--input", "n=a[$(touch MARK)]")
    assert out.exit_code == 1
    assert not (ws.root / "MARK").exists()
    step = ws.record()["jobs"]["j"]["steps"][0]
    assert step["error"] == (
        f"'${{{{ inputs.n }}}}' (line 1 of the script) stands {ARITHMETIC}, so only a whole "
        "number may go there, and its value is not one")


def test_a_trusted_value_that_opens_a_heredoc_is_caught_at_run_time(ws: Workspace) -> None:
    """Validation cannot know what a trusted template holds; the runner scans the script with
    it spliced in, and refuses before anything runs."""
    flow = ws.flow("""
        name: late
        jobs:
          j:
            strategy:
              matrix:
                open: ["python3 - <<'PY'"]
            steps:
              - run: |
                  ${{ matrix.open }}
                  print('${{ inputs.x }}')
                  PY
    """)
    assert ws.cli("validate", flow).exit_code == 0
    out = ws.run(flow, "--input", f"x={PYTHON_PAYLOAD}")
    assert out.exit_code == 1
    assert not (ws.root / "MARK").exists()
    step = ws.record()["jobs"]["j.1"]["steps"][0]
    assert step["error"] == refused(HEREDOC, 2)


def test_secrets_never_reach_the_command_line() -> None:
    rendered, env = render_script("curl -H 'Authorization: ${{ secrets.T }}' x",
                                  {"secrets": {"T": "hunter2-token"}}, posix=True)
    assert "hunter2" not in rendered
    assert env == {"FLOWRAY_EXPR_0": "hunter2-token"}
    assert not is_trusted(expr.parse("secrets.T"))


def test_cmd_action_command_is_checked_in_its_action_file(ws: Workspace) -> None:
    ws.action("act", """
        name: Greet
        inputs:
          who: {type: string, default: world}
        runs:
          using: cmd
          command: |
            python3 - <<'PY'
            print('${{ inputs.who }}')
            PY
    """)
    flow = ws.flow("""
        name: a
        jobs:
          j:
            steps:
              - action: ./act
                with: {who: x}
    """)
    out = ws.run(flow)
    assert out.exit_code == 2
    assert out.stderr == (
        "flow.yaml:5:9: jobs.j.steps[0].action: local action './act' is invalid "
        "(see the errors in 'act')\n"
        "act/action-datatorch.yaml:6:12: runs.command: '${{ inputs.who }}' (line 2 of the "
        f"script) reads data from outside the flow and stands {HEREDOC}: flowray cannot pass it "
        "there safely; have the command read the input from its environment variable instead "
        "(\"$INPUT_<NAME>\" in a shell, os.environ[\"INPUT_<NAME>\"] in Python)\n")


def test_cmd_action_command_gets_untrusted_inputs_as_data(ws: Workspace) -> None:
    ws.action("act", """
        name: Greet
        inputs:
          who: {type: string}
        runs:
          using: cmd
          command: echo "hello ${{ inputs.who }}"
    """)
    flow = ws.flow("""
        name: a
        jobs:
          j:
            steps:
              - action: ./act
                with: {who: "${{ inputs.x }}"}
    """)
    out = ws.run(flow, "--input", "x=$(touch MARK)")
    out.assert_success()
    assert "j/1 | hello $(touch MARK)\n" in out.stdout
    assert not (ws.root / "MARK").exists()


# ------------------------------------------------------------------- item 6: what is trusted


def test_machine_values_are_data_not_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder name is chosen by whoever made the folder: run.workspace is data."""
    root = tmp_path / "w$(touch MARK)'x"
    root.mkdir()
    monkeypatch.chdir(root)
    ws = Workspace(root)
    flow = ws.flow("""
        name: paths
        jobs:
          j:
            steps:
              - run: |
                  echo "in ${{ run.workspace }}"
                  echo ${{ flow.file }}
    """)
    out = ws.run(flow)
    out.assert_success()
    assert f"j/1 | in {root}\n" in out.stdout
    assert not list(tmp_path.rglob("MARK"))


@pytest.mark.parametrize("source", [
    "run.workspace", "run.id", "runner.os", "machine.name", "flow.file", "directory.runner",
    "agent.directory", "pipeline.name", "python.version", "action.directory", "step.name",
    "job", "inputs.x", "env.X", "secrets.T", "steps.a.outputs.v",
    "format('{0}', matrix.a, inputs.x)", "matrix[inputs.k]",
])
def test_only_author_written_literals_are_trusted(source: str) -> None:
    assert not is_trusted(expr.parse(source))


@pytest.mark.parametrize("source", [
    "matrix.cmd", "variables.n", "flow.name", "job.id", "job.name", "format('{0}', matrix.a)",
])
def test_author_written_literals_are_trusted(source: str) -> None:
    assert is_trusted(expr.parse(source))


def test_a_matrix_with_templates_is_not_author_written(ws: Workspace) -> None:
    assert not is_trusted(expr.parse("matrix.cmd"), Trust(matrix=False))
    flow = ws.flow("""
        name: m
        jobs:
          j:
            strategy:
              matrix:
                cmd: ["${{ inputs.x }}"]
            steps:
              - run: |
                  cat <<EOF
                  ${{ matrix.cmd }}
                  EOF
    """)
    out = ws.cli("validate", flow)
    assert out.exit_code == 2
    assert out.stderr == (
        f"flow.yaml:8:14: jobs.j.steps[0].run: {refused(HEREDOC, 2, 'matrix.cmd')}\n")


def test_a_literal_matrix_command_still_runs(ws: Workspace) -> None:
    flow = ws.flow("""
        name: m
        variables: {greeting: hello}
        jobs:
          j:
            strategy:
              matrix:
                cmd: ["echo one | tr a-z A-Z"]
            steps:
              - run: ${{ matrix.cmd }} && echo ${{ variables.greeting }}
    """)
    out = ws.run(flow)
    out.assert_success()
    assert "j.1/1 | ONE\n" in out.stdout and "j.1/1 | hello\n" in out.stdout


# ------------------------------------------------------------------- item 7: local actions


OUTSIDE = """
name: Outside
runs:
  using: cmd
  command: touch MARK
"""


def test_a_local_action_outside_the_working_directory_is_refused(ws: Workspace) -> None:
    outside = ws.root.parent / "outside"
    outside.mkdir()
    (outside / "action-datatorch.yaml").write_text(OUTSIDE)
    (ws.root / "link").symlink_to(outside)
    flow = ws.flow("""
        name: out
        jobs:
          j:
            steps:
              - action: ./../outside
              - action: ./link
              - action: ./sub/../../outside
    """)
    expected = (
        "flow.yaml:5:9: jobs.j.steps[0].action: local action './../outside' is outside the "
        "working directory: a local action must be a folder inside it (an action from "
        "elsewhere is a git action: owner/repo@tag)\n"
        "flow.yaml:6:9: jobs.j.steps[1].action: local action './link' leads (through a "
        "symbolic link) outside the working directory: a local action must be a folder inside "
        "it (an action from elsewhere is a git action: owner/repo@tag)\n"
        "flow.yaml:7:9: jobs.j.steps[2].action: local action './sub/../../outside' is outside "
        "the working directory: a local action must be a folder inside it (an action from "
        "elsewhere is a git action: owner/repo@tag)\n")
    for command in ("validate", "run"):
        out = ws.cli(command, flow)
        assert (out.exit_code, out.stderr) == (2, expected)
    assert not list(ws.root.parent.rglob("MARK"))


def test_a_local_action_that_leaves_the_working_directory_at_run_time_is_refused(
        ws: Workspace) -> None:
    """Checked again where the step runs (on a Ray node too): here the folder becomes a link
    to the outside after validation."""
    outside = ws.root.parent / "outside"
    outside.mkdir()
    (outside / "action-datatorch.yaml").write_text(OUTSIDE)
    ws.action("act", "name: Inside\nruns:\n  using: cmd\n  command: echo inside\n")
    flow = ws.flow("""
        name: swap
        jobs:
          j:
            steps:
              - run: rm -r act && ln -s ../outside act
              - action: ./act
    """)
    out = ws.run(flow)
    assert out.exit_code == 1
    assert not list(ws.root.parent.rglob("MARK"))
    step = ws.record()["jobs"]["j"]["steps"][1]
    assert step["error"] == (
        "local action './act' leads (through a symbolic link) outside the working directory: "
        "a local action must be a folder inside it (an action from elsewhere is a git action: "
        "owner/repo@tag)")


# ------------------------------------------------------------------- property


# Shell fragments, many of them feeding a here-document to an interpreter, where a value that
# became text would run.
FRAGMENTS = [
    "echo a", "echo 'q'", 'echo "d"', "# it's a \"comment\"", "echo a&#'", "echo a|#'",
    "true;#'", "(#'\n)", "x=$(echo b)", "echo `echo c`", "y=abc; echo ${y#a}",
    "case a in a) echo c;; esac", "echo \"$(case a in (a) echo c;; esac)\"",
    "bash <<'E'\necho body\nE", "bash <<-E\n\techo body\n\tE", "bash <<\"E\"\necho body\nE",
    "bash <<\\E\necho body\nE", "cat <<A | bash <<B\necho a\nA\necho b\nB",
    "z=$(bash <<E\necho in\nE\n)", "bash <<< 'echo here'", "echo $(( 1 + 2 ))",
    "python3 - <<'PY'\nprint('p')\nPY", "python3 - <<PY\nprint('p')\nPY", "bash -c 'echo c'",
    "eval 'echo e'", "[[ 1 -eq 1 ]]", "echo \"$(echo \"$(echo n)\")\"", "echo $'a\\'b'",
    "bash <<E\necho foo\\\nE\necho bar\nE", "printf '%s\\n' w | sed 's/w/v/'", "(( 1 < 2 ))",
]
VALUES = [
    "$(touch MARK)", "'; touch MARK; '", "\"; touch MARK; \"", "`touch MARK`",
    "\nE\ntouch MARK\nE\n", "\nPY\ntouch MARK\nPY\n", "\nA\ntouch MARK\n", "\ntouch MARK\n#",
    "\n__import__('os').system('touch MARK')\n#", "');__import__('os').system('touch MARK');('",
    "a[$(touch MARK)]", "$'\\x27; touch MARK'", "s/x/y/;e touch MARK", "; touch MARK #",
    "system(q(touch MARK))", "__import__('os').system('touch MARK')",
]
# Runs in each quoting of a shell that reads it as code: unquoted, '...' and "...".
POLYGLOT = "$(touch MARK)'$(touch MARK)'\"$(touch MARK)\""
# Fragments that threw the old scanner off, or hold quotes that a lost tokenizer would pair
# wrongly.
TRICKY = ["echo a&#'", "echo a|#'", "true;#'", "(#'\n)", "# it's", "echo 'q'",
          "echo $'a\\'b'", "echo \"'\"", "case a in a) echo \"'\";; esac"]


# Places for the template (at '@'): in here-documents fed to interpreters, quotes, arithmetic...
CORES = [
    "bash <<E\necho @\nE", "bash <<'E'\necho @\nE", "bash <<-E\n\techo @\n\tE",
    "bash <<\"E\"\necho @\nE", "bash <<\\E\necho @\nE", "python3 - <<PY\nprint('@')\nPY",
    "python3 - <<'PY'\n@\nPY", "z=$(bash <<E\necho @\nE\n)", "bash <<< 'echo @'", "echo @",
    "echo '@'", "echo \"@\"", "echo $'@'", "eval 'echo @'", "bash -c 'echo @'",
    "python3 -c \"print('@')\"", "echo $(( @ + 1 ))", "[[ @ -eq 1 ]]", "echo `echo @`",
    "echo ${y:-@}", "echo \"$(echo '@')\"", "cat <<A | bash <<B\necho a\nA\necho @\nB",
    "python3 -u -c\"@\"", "perl -e 'print 1;' -e \"@;\"", "declare -n r=\"@\"; echo \"$r\"",
    "test -v \"@\"", "A=([@]=1)", "declare -i n; n=\"@\"", "PS4=\"@\"; set -x; true",
    "Y=${Y:-\"@\"}; echo \"$Y\"", "echo \"${Y:-@}\"",
]
SEPARATORS = ["\n", "\n", "\n", "; ", " && ", " | "]


@st.composite
def scripts(draw: st.DrawFn) -> str:
    """A script of shell fragments with the template somewhere: in a core place between
    fragments, or anywhere at all (a line start, or any character)."""
    def joined(parts: list[str]) -> str:
        return "".join(p + draw(st.sampled_from(SEPARATORS)) for p in parts)

    fragment = st.one_of(st.sampled_from(TRICKY), st.sampled_from(FRAGMENTS))
    before = joined(draw(st.lists(fragment, max_size=3)))
    after = joined(draw(st.lists(fragment, max_size=2)))
    if draw(st.booleans()):
        return before + draw(st.sampled_from(CORES)).replace("@", X) + "\n" + after
    text = before + after or "echo a"
    line_starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
    at = draw(st.one_of(st.integers(0, len(text)), st.sampled_from(line_starts)))
    return text[:at] + X + text[at:]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=scripts(), value=st.one_of(st.just(POLYGLOT), st.sampled_from(VALUES)))
def test_property_untrusted_values_never_run(tmp_path: Path, script: str, value: str) -> None:
    (tmp_path / "MARK").unlink(missing_ok=True)
    problems = script_problems(script)
    try:
        rendered, env = render_script(script, {"inputs": {"x": value}}, posix=True)
    except ShellTemplateError as exc:
        # validation and the runner agree; only the number check needs the value
        assert problems or "so only a whole number may go there" in str(exc)
        return
    assert not problems
    bash(rendered, env, tmp_path)
    assert not (tmp_path / "MARK").exists(), (script, value, rendered)
