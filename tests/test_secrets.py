"""Secrets never leak: not in the console, step logs, events, the record, error messages,
kept files or command lines; short masks do not damage the record. Real `flowray run` runs
through the CLI, with real subprocesses.
"""

from __future__ import annotations

import base64
import json
import os
import string
from pathlib import Path

import pytest
from conftest import Workspace
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowray.execute.secrets import Masker

PEM = """-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7
ab
q2Zr4nT8pW0xYc1LmVbG5uHj9kE3oS6dF7gR8aT2wQ1eX4zN5bY
-----END PRIVATE KEY-----"""
PEM_LINES = [line for line in PEM.splitlines() if len(line) >= 4]


def everything(ws: Workspace, *outs: object) -> str:
    """The console output given, and every file flowray kept (record, events, logs, scripts)."""
    text = "".join(f"{o.stdout}{o.stderr}" for o in outs)  # type: ignore[attr-defined]
    for root, _, files in os.walk(ws.root / ".flowray"):
        for f in files:
            text += Path(root, f).read_text(errors="replace")
    return text


def secret_file(ws: Workspace, values: dict[str, str]) -> str:
    """A --secret-file holding ``values`` (double-quoted, escaped: any text fits)."""
    def quoted(value: str) -> str:
        for c, e in (("\\", "\\\\"), ('"', '\\"'), ("$", "\\$"), ("\n", "\\n")):
            value = value.replace(c, e)
        return f'"{value}"'

    (ws.root / "secrets.env").write_text("".join(f"{k}={quoted(v)}\n" for k, v in values.items()))
    return "secrets.env"


def test_a_multi_line_secret_is_masked_whole_line_by_line_and_in_base64(ws: Workspace) -> None:
    flow = ws.flow("""
        name: pem
        jobs:
          j:
            steps:
              - id: s
                env: {KEY: "${{ secrets.KEY }}"}
                run: |
                  echo "$KEY"
                  printf %s "$KEY" | base64 -w0; echo
                  echo "$KEY" | base64 -w0; echo
                  echo "wrapped: x$KEY" | base64 -w0; echo
                  python3 -c 'import json, os; print(json.dumps(os.environ["KEY"]))'
                  python3 -c 'import os; print(repr(os.environ["KEY"]))'
                  echo "::first::$KEY"
                  { echo "key<<EOF"; echo "$KEY"; echo EOF; } >> "$FLOWRAY_OUTPUT"
            outputs:
              key: ${{ steps.s.outputs.key }}
    """)
    out = ws.run(flow, "--secret-file", secret_file(ws, {"KEY": PEM}))
    out.assert_success()
    text = everything(ws, out)
    for line in PEM_LINES:
        assert line not in text
    assert base64.b64encode(PEM.encode()).decode()[:-4] not in text
    assert "j/s | ***\nj/s | ***\nj/s | ab\nj/s | ***\nj/s | ***\n" in out.stdout
    assert ws.record()["jobs"]["j"]["outputs"] == {"key": "***"}


def test_secrets_in_error_messages_are_masked(ws: Workspace) -> None:
    long_secret = "tok_" + "Zq8" * 30  # longer than messages show whole (they cut it short)
    ws.action("actions/count", """
        name: Count
        inputs:
          n: {type: integer}
        runs:
          using: python
          main: main.py
    """, main__py="print('never runs')\n")
    flow = ws.flow("""
        name: errors
        jobs:
          j:
            steps:
              - name: parse
                continue-on-error: true
                run: echo '${{ fromJSON(secrets.TOKEN) }}'
              - name: typed
                continue-on-error: true
                action: ./actions/count
                with: {n: "${{ secrets.TOKEN }}"}
              - name: output file
                continue-on-error: true
                env: {T: "${{ secrets.TOKEN }}"}
                run: echo "not an output $T" >> "$FLOWRAY_OUTPUT"
              - name: env
                env: {BAD: "${{ fromJSON(secrets.SHORTER) }}"}
                run: "true"
    """)
    out = ws.run(flow, "--secret-file", secret_file(ws, {"TOKEN": long_secret,
                                                          "SHORTER": "not json at all"}))
    assert out.exit_code == 1, out
    text = everything(ws, out)
    assert "Zq8Zq8" not in text and "not json at all" not in text
    steps = ws.record()["jobs"]["j"]["steps"]
    assert steps[0]["error"].startswith("fromJSON() got invalid JSON '***...': ")
    assert steps[1]["error"] == "action 'Count': input 'n' expects an integer, got '***...'"
    assert steps[2]["error"] == (
        "line 1 of $FLOWRAY_OUTPUT is not 'name=value' or 'name<<DELIMITER': "
        "'not an output ***'")
    assert steps[3]["error"].startswith("fromJSON() got invalid JSON '***'")
    assert "j/1 ✓ failed (continue-on-error): fromJSON() got invalid JSON '***...'" \
        in out.stdout


def test_short_masks_are_refused_and_the_record_keeps_its_own_fields(ws: Workspace) -> None:
    flow = ws.flow("""
        name: short
        jobs:
          job:
            steps:
              - id: step
                run: |
                  echo "::add-mask::o"
                  echo "::add-mask::cess"
                  echo "hello world"
                  echo "success"
    """)
    out = ws.run(flow, "--secret-file", secret_file(ws, {"ONE": "s", "LOG": "log"}))
    out.assert_success()
    assert "! secret 'ONE' is shorter than 3 characters, so it is not masked" in out.stdout
    assert ("job/step | flowray: warning: ::add-mask:: value of 1 characters is not masked "
            "(values shorter than 3 characters never are)") in out.stdout
    assert "job/step | hello world\n" in out.stdout  # `o` is not masked
    assert "job/step | suc***\n" in out.stdout  # `cess` is: step output is masked
    rec = ws.record()
    job = rec["jobs"]["job"]
    # The record's own fields are flowray's: a secret `log` or `cess` does not touch them.
    assert rec["status"] == "success" and job["status"] == "success"
    assert job["steps"][0]["status"] == "success"
    assert job["steps"][0]["log"] == "logs/job/01-step.log"
    status = ws.cli("status", "last")
    assert "success" in status.stdout and "***" not in status.stdout, status
    assert ws.cli("logs", "last", "job/step").stdout.splitlines()[-1] == "suc***"


def test_no_secret_on_a_command_line_or_in_a_kept_script(ws: Workspace) -> None:
    """Every kind of step, scanning every process's command line while it runs."""
    secret = "cmdline-secret-7Qx9"
    scan = ("import os\n"
            "hits = 0\n"
            "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
            "    try:\n"
            "        with open(f'/proc/{pid}/cmdline', 'rb') as fh:\n"
            "            hits += b'7Qx9' in fh.read()\n"
            "    except OSError:\n"
            "        pass\n"
            "print('command lines holding it:', hits)\n")
    ws.write("scan.py", scan)
    ws.action("actions/py", """
        name: Py
        inputs: {token: {type: string}}
        runs: {using: python, main: main.py}
    """, main__py="import runpy\nrunpy.run_path('../../scan.py')\n".replace(
        "../../scan.py", str(ws.root / "scan.py")))
    ws.action("actions/cmd", """
        name: Cmd
        inputs: {token: {type: string}}
        runs:
          using: cmd
          command: echo "${{ inputs.token }}" > /dev/null && python3 ../../scan.py
    """.replace("../../scan.py", str(ws.root / "scan.py")))
    ws.action("actions/script", """
        name: Script
        inputs: {token: {type: string}}
        runs: {using: script, script: run.sh}
    """, run__sh=f"python3 {ws.root / 'scan.py'}\n")
    flow = ws.flow("""
        name: cmdline
        jobs:
          j:
            steps:
              - name: run
                run: |
                  echo "${{ secrets.TOKEN }}" > /dev/null
                  python3 scan.py
              - name: custom shell
                shell: bash -x {0}
                run: |
                  T="${{ secrets.TOKEN }}"
                  python3 scan.py
              - {name: python, action: ./actions/py, with: {token: "${{ secrets.TOKEN }}"}}
              - {name: cmd, action: ./actions/cmd, with: {token: "${{ secrets.TOKEN }}"}}
              - {name: script, action: ./actions/script, with: {token: "${{ secrets.TOKEN }}"}}
    """)
    out = ws.run(flow, "--secret-file", secret_file(ws, {"TOKEN": secret}))
    out.assert_success()
    for step in range(1, 6):
        assert f"j/{step} | command lines holding it: 0\n" in out.stdout, out
    assert "j/2 | + T=***\n" in out.stdout  # set -x traces, masked
    scripts = list((ws.root / ".flowray").rglob("scripts/*"))
    assert scripts, "the custom shell's script is kept"
    for script in scripts:
        text = script.read_text()
        assert secret not in text and "FLOWRAY_EXPR_" in text
    assert secret not in everything(ws, out)


def test_a_secret_is_never_put_on_a_container_command_line(ws: Workspace) -> None:
    # Refused before any container is made: no Docker needed.
    flow = ws.flow("""
        name: docker-args
        jobs:
          j:
            steps:
              - action: docker://alpine:3
                with: {args: "echo ${{ secrets.TOKEN }}"}
    """)
    out = ws.run(flow, "--secret-file", secret_file(ws, {"TOKEN": "container-secret"}))
    assert out.exit_code == 1, out
    error = ws.record()["jobs"]["j"]["steps"][0]["error"]
    assert error == (
        "the step's 'args'/'entrypoint' would put a secret on the container's command line, "
        "where every user of the machine can read it; read it from the environment instead "
        "(each input is also INPUT_<NAME>)")
    assert "container-secret" not in everything(ws, out)


def test_masker_forms() -> None:
    m = Masker(["line-one-value\nxy\nline-two-value", "it's \"quoted\" \\ é"])
    assert m.text("+ T='it'\\''s \"quoted\" \\ é'") == "+ T='***'"  # bash -x
    assert m.text("line-two-value") == "***"
    assert m.text("xy") == "xy"  # too short a line to mask alone
    assert m.text(json.dumps("it's \"quoted\" \\ é")) == '"***"'
    assert m.text(repr("it's \"quoted\" \\ é")) == "'***'"
    encoded = base64.b64encode(b"prefix:" + b"line-one-value").decode()
    assert "bGluZS1vbmUtdmFsdWU" not in m.text(encoded)  # at any alignment
    assert m.message("got 'line-one-va...'") == "got '***...'"
    assert not Masker(["ab"]) and Masker(["ab"]).refused == 1
    assert Masker(["abc"]).text("xabcx") == "x***x"


# ----------------------------------------------------------------------------- property

# Characters no line of flowray's own output is made of alone, so a secret built from them
# can only appear where a step put it.
_RARE = "ÆØÅßµ¶§¿×ðþ"
_LINE_CHARS = st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"))


def _line(min_size: int) -> st.SearchStrategy[str]:
    return st.text(_LINE_CHARS, min_size=min_size, max_size=30).filter(
        lambda s: len(s.strip()) >= min_size and not s.strip().isdigit())


SECRETS = st.one_of(
    _line(8),  # one line, any unicode
    st.lists(st.one_of(_line(8), st.text(string.ascii_letters, max_size=2)),
             min_size=2, max_size=5).map("\n".join).filter(
        # one line at least long enough to be masked on its own: a value made of short lines
        # only is printed a line at a time with no line to mask (by design: see secrets.py)
        lambda s: s.strip() == s and any(len(x.strip()) >= 8 for x in s.split("\n"))),
    st.binary(min_size=6, max_size=40).map(lambda b: base64.b64encode(b).decode()),
    st.text(_RARE, min_size=3, max_size=7),  # short, yet long enough to mask
)


def _pieces(secret: str) -> list[str]:
    """What must never be seen: the value, each line of it long enough to mask on its own."""
    lines = [line.strip() for line in secret.split("\n")]
    return [secret, *(line for line in lines if len(line) >= 8)]


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(secret=SECRETS)
def test_no_secret_value_ever_appears(ws: Workspace, secret: str) -> None:
    ws.action("actions/echo", """
        name: Echo
        inputs:
          value: {type: string}
          count: {type: integer, default: 1}
        outputs:
          value: {type: string}
        runs: {using: python, main: main.py}
    """, main__py=(
        "import json, os, sys\n"
        "import datatorch\n"
        "v = datatorch.get_input('value')\n"
        "print(v)\n"
        "print(repr(v))\n"
        "print(json.dumps(v))\n"
        "print(json.dumps({'v': v}, ensure_ascii=False))\n"
        "datatorch.set_output('value', v)\n"
        "with open(os.environ['FLOWRAY_OUTPUT'], 'a') as fh:\n"
        "    fh.write('again<<EOF_X\\n' + v + '\\nEOF_X\\n')\n"
        "print('error:', v, file=sys.stderr)\n"))
    flow = ws.flow("""
        name: prop
        jobs:
          j:
            steps:
              - id: shell
                env: {S: "${{ secrets.S }}"}
                run: |
                  echo "$S"
                  printf %s "$S" | base64 -w0; echo
                  echo "::plain::$S"
              - name: kept script
                shell: bash {0}
                env: {S: "${{ secrets.S }}"}
                run: printf '%s\\n' "${{ secrets.S }}" "$S"
              - id: py
                action: ./actions/echo
                with: {value: "${{ secrets.S }}"}
              - name: typed
                continue-on-error: true
                action: ./actions/echo
                with: {value: x, count: "${{ secrets.S }}"}
            outputs:
              out: ${{ steps.py.outputs.value }}
    """)
    out = ws.run(flow, "--secret-file", secret_file(ws, {"S": secret}), "--json")
    assert out.exit_code == 0, out
    text = everything(ws, out)
    for piece in _pieces(secret):
        assert piece not in text, (piece, out)
    assert base64.b64encode(secret.encode()).decode() not in text
    for run in (ws.root / ".flowray" / "runs").iterdir():
        import shutil

        shutil.rmtree(run)


@pytest.mark.parametrize("value", ["s", "ab"])
def test_short_secrets_are_not_masked_and_say_so(ws: Workspace, value: str) -> None:
    flow = ws.flow("name: x\njobs: {a: {steps: [{run: 'echo success'}]}}\n")
    out = ws.run(flow, "--secret-file", secret_file(ws, {"TINY": value}))
    out.assert_success()
    assert "a/1 | success\n" in out.stdout
    assert "! secret 'TINY' is shorter than 3 characters, so it is not masked in logs and " \
        "outputs\n" in out.stdout


def test_secrets_on_ray_nodes_are_masked_and_off_command_lines(ws: Workspace) -> None:
    """The same promises where jobs run as Ray tasks (an embedded Ray: the node's job runner,
    its masker and the masks it sends back to the coordinator)."""
    pytest.importorskip("ray", reason="ray is not installed: the Ray path cannot be tested")
    import subprocess
    import sys

    from conftest import env_without_color

    ws.write("scan.py", """
        import os
        hits = sum(b"R4yS3c" in open(f"/proc/{p}/cmdline", "rb").read()
                   for p in os.listdir("/proc") if p.isdigit() and os.path.exists(f"/proc/{p}/cmdline"))
        print("command lines holding it:", hits)
    """)
    ws.action("actions/py", """
        name: Py
        inputs: {token: {type: string}}
        runs: {using: python, main: main.py}
    """, main__py=("import datatorch, runpy\n"
                   "print(datatorch.get_input('token'))\n"
                   f"runpy.run_path({str(ws.root / 'scan.py')!r})\n"))
    flow = ws.flow("""
        name: ray-secrets
        jobs:
          j:
            steps:
              - env: {KEY: "${{ secrets.KEY }}"}
                run: |
                  echo "$KEY"
                  V=$(echo eulav-c3Sy4R-emitnur | rev)  # made at run time
                  echo "::add-mask::$V"
                  echo "later $V"
              - action: ./actions/py
                with: {token: "${{ secrets.TOKEN }}"}
    """)
    secrets = secret_file(ws, {"KEY": PEM, "TOKEN": "token-R4yS3c"})
    proc = subprocess.run(
        [sys.executable, "-m", "flowray", "run", flow, "--ray", "--cpus", "1",
         "--secret-file", secrets],
        cwd=ws.root, capture_output=True, text=True, env=env_without_color(), timeout=300)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "j/1 | ***\nj/1 | ***\nj/1 | ab\nj/1 | ***\nj/1 | ***\nj/1 | later ***\n" \
        in proc.stdout
    assert "j/2 | ***\nj/2 | command lines holding it: 0\n" in proc.stdout
    text = proc.stdout + proc.stderr
    for root, _, files in os.walk(ws.root / ".flowray"):
        for f in files:
            text += Path(root, f).read_text(errors="replace")
    assert "R4yS3c" not in text
    for line in PEM_LINES:
        assert line not in text


# ----------------------------------------------------------------------------- output names

SECRET_NAME = "hunter2secretvalue"


def test_an_output_whose_name_holds_a_secret_fails_the_step_and_never_shows_it(
    ws: Workspace,
) -> None:
    flow = ws.flow("""
        name: names
        jobs:
          j:
            steps:
              - id: file
                continue-on-error: true
                env: {TOKEN: "${{ secrets.token }}"}
                run: |
                  echo "$TOKEN=2" >> "$FLOWRAY_OUTPUT"
                  echo "fine=1" >> "$FLOWRAY_OUTPUT"
              - id: line
                env: {TOKEN: "${{ secrets.token }}"}
                run: |
                  echo "::$TOKEN::3"
                  echo "::x_${TOKEN}::4"
            outputs:
              got: ${{ toJSON(steps.file.outputs) }}
    """)
    out = ws.run(flow, "--secret", f"token={SECRET_NAME}")
    assert out.exit_code == 1, out
    steps = ws.record()["jobs"]["j"]["steps"]
    assert steps[0]["error"] == (
        "output '***': its name holds a secret or a masked value (an output's name is an "
        "identifier; its value goes after '=' or '::name::'); the output is dropped")
    assert steps[0]["outputs"] == {"fine": "1"}  # the others are kept
    assert steps[0]["status"] == "success" and steps[0]["outcome"] == "failure"
    assert steps[1]["status"] == "failure" and steps[1]["outputs"] == {}
    assert steps[1]["error"].startswith("output '***': its name holds a secret")
    assert "j/line | ::***::3\n" in out.stdout
    status = ws.cli("status", "last")
    assert SECRET_NAME not in status.stdout + status.stderr
    assert SECRET_NAME not in everything(ws, out)


def test_masker_data_masks_keys() -> None:
    m = Masker([SECRET_NAME])
    assert m.data({SECRET_NAME: "2", "a": {f"k-{SECRET_NAME}": [SECRET_NAME]}, 3: "x"}) == {
        "***": "2", "a": {"k-***": ["***"]}, 3: "x"}


def test_a_cached_action_never_stores_an_output_name_holding_a_secret(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gitfixtures import Forge

    root = tmp_path / "forge" / "repos"
    root.mkdir(parents=True)
    monkeypatch.setenv("FLOWRAY_ACTIONS_BASE", f"file://{root}")
    monkeypatch.setenv("FLOWRAY_CACHE_DIR", str(tmp_path / "action-cache"))
    monkeypatch.delenv("FLOWRAY_OFFLINE", raising=False)
    Forge(root).publish("acme/named", {
        "action-datatorch.yaml": ("name: Named\ncache: true\n"
                                  "inputs: {token: {type: string}}\n"
                                  "runs: {using: python, main: main.py}\n"),
        "main.py": "import os\nprint('::' + os.environ['INPUT_TOKEN'] + '::1')\n",
    }, "v1")
    flow = ws.flow("""
        name: cached-names
        jobs:
          j:
            steps:
              - action: acme/named@v1
                with: {token: "${{ secrets.token }}"}
    """)
    out = ws.run(flow, "--secret", f"token={SECRET_NAME}")
    assert out.exit_code == 1, out
    assert ws.record()["jobs"]["j"]["steps"][0]["error"].startswith(
        "output '***': its name holds a secret")
    cache = tmp_path / "action-cache"
    kept = [p.read_bytes() for p in cache.rglob("*") if p.is_file()]
    assert not any(SECRET_NAME.encode() in data for data in kept)
    assert not list(cache.rglob("entries/*.json"))
    assert SECRET_NAME not in everything(ws, out)


# ----------------------------------------------------------------------------- matching

_PIECES = st.text("abAB.*\\(|é\n", min_size=3, max_size=9)


@settings(max_examples=150, deadline=None)
@given(values=st.lists(_PIECES, min_size=1, max_size=8),
       text=st.lists(st.one_of(_PIECES, st.text("abAB.*é \n", max_size=6)), max_size=10))
def test_the_masker_masks_as_a_longest_first_alternation_of_every_form(
        values: list[str], text: list[str]) -> None:
    """Values that overlap, contain each other and hold regex characters: each place masks
    the longest form that starts there, as a plain alternation of every form, longest first,
    would (the masker matches through a prefix tree and a sieve of anchors instead)."""
    import re

    from flowray.execute.secrets import MIN_LENGTH, _variants

    masker = Masker(values)
    forms = set().union(*(_variants(v.strip("\r\n")) for v in values
                          if len(v.strip("\r\n").strip()) >= MIN_LENGTH))
    joined = "".join(text + values[:1] + text)
    if not forms:
        assert not masker and masker.text(joined) == joined
        return
    plain = re.compile("|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)))
    assert masker.text(joined) == plain.sub("***", joined)
    cut = max(0, len(joined) - (max(map(len, forms)) - 1))
    for m in plain.finditer(joined):
        if m.start() < cut < m.end():
            cut = m.end()
    assert masker.text_part(joined) == (plain.sub("***", joined[:cut]), joined[cut:])


def test_values_nested_in_values_a_hundred_deep_are_masked_whole() -> None:
    # Each value is the start of the next: below a depth the prefix tree goes on as a plain
    # alternation (the regex parser recurses for each level); the longest still wins.
    values = ["Zq" * i for i in range(2, 122)]
    masker = Masker(values)
    assert masker.text("x" + "Zq" * 121 + "Z y ZqZq ZqZ") == "x***Z y *** ZqZ"
