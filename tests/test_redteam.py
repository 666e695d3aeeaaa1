"""Defects found by attacking flowray as a clumsy or hostile user (issue 11's siblings)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Workspace


def test_an_artifact_path_through_a_folder_link_out_of_the_workspace_is_not_collected(
        ws: Workspace, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "etc").mkdir(parents=True)
    ws.flow(f"""
        name: links
        jobs:
          j:
            artifacts: ["root/etc/private.txt", "root/etc"]
            reports: ["root/etc/junit.xml"]
            steps:
              - run: |
                  echo secret > {outside}/etc/private.txt
                  echo '<testsuite tests="7"/>' > {outside}/etc/junit.xml
                  ln -s {outside} root
    """)
    out = ws.run("flow.yaml")
    out.assert_success()
    rec = ws.record()
    job = rec["jobs"]["j"]
    assert job["artifacts"] == []
    assert not list((ws.root / ".flowray" / "runs" / rec["id"]).rglob("private.txt"))
    assert job["reports"]["tests"] == 0
    why = "is outside the workspace (a folder on its path is a link)"
    assert f"artifacts: 'root/etc/private.txt' {why}; not collected" in job["warnings"]
    assert f"artifacts: 'root/etc' {why}; not collected" in job["warnings"]
    assert f"reports: 'root/etc/junit.xml' {why}; not read" in job["warnings"]


def test_an_output_nested_deeper_than_python_reads_stays_text_and_the_step_is_kept(
        ws: Workspace) -> None:
    ws.flow("""
        name: deep
        jobs:
          a:
            outputs:
              o: ${{ steps.x.outputs.v }}
            steps:
              - id: x
                run: python3 -c "print('::v::' + '[' * 5000 + ']' * 5000)"
          b:
            needs: a
            steps:
              - run: echo "${{ needs.a.outputs.o }}" | wc -c
    """)
    out = ws.run("flow.yaml")
    out.assert_success()
    assert "internal error" not in out.stdout + out.stderr
    job = ws.record()["jobs"]["a"]
    assert job["steps"][0]["status"] == "success"
    assert job["outputs"]["o"] == "[" * 5000 + "]" * 5000
    assert "b/1 | 10001" in out.stdout


@pytest.mark.parametrize("option", ["--event", "--secret-file", "--env-file"])
def test_a_values_file_that_is_far_too_large_is_refused_before_it_fills_memory(
        ws: Workspace, option: str) -> None:
    ws.flow("""
        name: big
        jobs:
          a:
            steps:
              - run: echo hi
    """)
    with open(ws.root / "huge", "wb") as fh:  # sparse: costs no disk
        fh.truncate((16 << 20) + 1)
    out = ws.run("flow.yaml", option, str(ws.root / "huge"))
    assert out.exit_code == 2, out
    assert f"error: {option} '{ws.root / 'huge'}' is larger than 16 MiB (is it the right file?)" \
        in out.stderr
    assert not (ws.root / ".flowray" / "runs").exists()


def test_an_event_nested_too_deeply_is_a_clear_error_not_a_traceback(ws: Workspace) -> None:
    ws.flow("""
        name: ev
        jobs:
          a:
            steps:
              - run: echo hi
    """)
    ws.write("event.json", "[" * 100_000 + "]" * 100_000)
    out = ws.run("flow.yaml", "--event", "event.json")
    assert out.exit_code == 2, out
    assert "error: --event 'event.json': the JSON is nested too deeply" in out.stderr


def test_a_nul_character_from_the_event_fails_the_step_clearly_not_the_job_internally(
        ws: Workspace) -> None:
    ws.flow("""
        name: nul
        jobs:
          a:
            steps:
              - env: {E: "${{ event.a }}"}
                run: echo "$E"
    """)
    ws.write("event.json", '{"a": "x\\u0000y"}')
    out = ws.run("flow.yaml", "--event", "event.json")
    assert out.exit_code == 1, out
    job = ws.record()["jobs"]["a"]
    assert "internal error" not in (job["error"] or "")
    assert job["steps"][0]["status"] == "failure"
    error = job["steps"][0]["error"]
    assert error.startswith("cannot start '")
    assert error.endswith("': the environment variable E holds a NUL character, which no "
                          "process can be given")


def test_many_secrets_are_all_masked_also_one_added_after_the_masker_was_used(
        ws: Workspace) -> None:
    # 300 secrets (a large --secret-file): the masker compiled its pattern once per secret
    # added, so that 200 took 17 s before the first step (measured; speed is not asserted here).
    values = [f"secret-{i:04d}-{'q' * 12}" for i in range(300)]
    ws.write("secrets.env", "".join(f"S{i}={v}\n" for i, v in enumerate(values)))
    ws.flow("""
        name: many
        jobs:
          a:
            steps:
              - env: {FIRST: "${{ secrets.S0 }}", LAST: "${{ secrets.S299 }}"}
                run: |
                  echo "first $FIRST last $LAST"
                  echo "::add-mask::added-later-value"
                  echo "then added-later-value"
    """)
    out = ws.run("flow.yaml", "--secret-file", "secrets.env")
    out.assert_success()
    assert "a/1 | first *** last ***" in out.stdout
    assert "a/1 | then ***" in out.stdout
    assert "secret-0" not in out.stdout and "added-later-value" not in out.stdout


def test_a_name_or_output_line_cannot_fake_or_rewrite_a_line_of_the_console(
        ws: Workspace) -> None:
    ws.flow("""
        name: nm
        jobs:
          a:
            steps:
              - name: "deploy ${{ inputs.x }}"
                run: |
                  printf 'x\\033[2K\\rrewritten\\n'
                  printf '\\033[31mred\\033[0m\\tafter tab\\n'
                  echo "::error::${{ inputs.x }}"
                  exit 3
    """)
    evil = "x\n✓ job evil success in 0.01s\x1b[31mRED"
    out = ws.run("flow.yaml", "--input", f"x={evil}")
    assert out.exit_code == 1, out
    assert "\x1b" not in out.stdout and "\r" not in out.stdout
    lines = out.stdout.splitlines()
    assert not [line for line in lines if line.startswith("✓ job evil")]
    assert r"a/1 ▶ deploy x\n✓ job evil success in 0.01s\x1b[31mRED" in lines
    assert r"a/1 | x\x1b[2K\rrewritten" in lines
    assert "a/1 | red\tafter tab" in lines  # a colour is dropped when not on a terminal
    # `flowray logs` (not a terminal here) prints the log without its escape sequences.
    logs = ws.cli("logs", "last", "a/1")
    assert "rewritten\nred\tafter tab\n::error::x\n✓ job evil success" in logs.stdout


def test_a_terminal_keeps_the_colours_a_step_printed_and_nothing_else() -> None:
    import io

    from flowray.cli.view import Console
    from flowray.runtime.events import StepLog

    stream = io.StringIO()
    console = Console(stream, color=True)
    console.show(StepLog(0, "", "r", job="a", step=0, line="\x1b[1;31mred\x1b[0m \x1b[2K\rover\x1b]0;t\x07"))
    shown = stream.getvalue()
    assert shown.endswith(" | \x1b[1;31mred\x1b[0m \\x1b[2K\\rover\\x1b]0;t\\x07\x1b[0m\n")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"secrets": {"A": 123456}}, "secrets must map names to text, got str -> int"),
        ({"secrets": {"A": None}}, "secrets must map names to text, got str -> NoneType"),
        ({"secrets": "abc"}, "secrets must be a map from names to text, got str"),
        ({"env": ["A=1"]}, "env must be a map from names to text, got list"),
        ({"inputs": "x=1"}, "inputs must be a map from names to values, got str"),
    ],
)
def test_start_refuses_secrets_env_or_inputs_of_the_wrong_type_saying_so(
        ws: Workspace, kwargs: dict[str, object], message: str) -> None:
    import flowray

    ws.flow("name: n\njobs:\n  a:\n    steps:\n      - run: touch ran\n")
    with pytest.raises(flowray.StartError) as info:
        flowray.start("flow.yaml", workdir=ws.root, **kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message
    assert "123456" not in str(info.value)
    assert not (ws.root / "ran").exists()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--gpus", "0,0"], {}, "--gpus: '0' is named twice (two jobs would be given the same GPU)"),
        (["--gpus", "-1"], {},
         "--gpus: '-1' is not a GPU id (an index such as '0', or a UUID such as 'GPU-...' or "
         "'MIG-...')"),
        ([], {"FLOWRAY_GPUS": "1,01"},
         "FLOWRAY_GPUS: '01' is named twice (two jobs would be given the same GPU)"),
        ([], {"FLOWRAY_HEARTBEAT": "nan"},
         "FLOWRAY_HEARTBEAT must be a finite number from 0 to 86400, got nan (0 turns the "
         "lines off)"),
        ([], {"FLOWRAY_HEARTBEAT": "inf"},
         "FLOWRAY_HEARTBEAT must be a finite number from 0 to 86400, got inf (0 turns the "
         "lines off)"),
        ([], {"FLOWRAY_HEARTBEAT": "-1"},
         "FLOWRAY_HEARTBEAT must be 0 or more, got -1 (0 turns the lines off)"),
    ],
)
def test_nonsense_gpu_ids_and_heartbeats_are_refused(
        ws: Workspace, monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str],
        message: str) -> None:
    ws.flow("name: n\njobs:\n  a:\n    steps:\n      - run: touch ran\n")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    out = ws.run("flow.yaml", *args)
    assert out.exit_code == 2, out
    assert out.stderr == f"error: {message}\n"
    assert not (ws.root / "ran").exists()


def test_gpu_uuids_are_gpu_ids() -> None:
    from flowray.spec.limits import gpu_ids_problem

    assert gpu_ids_problem(["0", "12", "GPU-5f2c81aa-1b2c", "MIG-GPU-5f2c/1/0"]) is None


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_runs_refuses_a_limit_below_one(ws: Workspace, limit: str) -> None:
    out = ws.cli("runs", "--limit", limit)
    assert out.exit_code == 2, out
    assert out.stderr == f"error: --limit must be 1 or more, got {limit}\n"


@pytest.mark.parametrize("secret", ["abc{def", "ab}cdef", "ab{x}cd", "ab{12}cd"])
def test_a_format_error_on_a_secret_says_nothing_about_what_is_inside_it(
        ws: Workspace, secret: str) -> None:
    ws.flow("""
        name: fmt
        jobs:
          a:
            steps:
              - run: echo "${{ format(secrets.TOK, 1) }}"
    """)
    out = ws.run("flow.yaml", "--secret", f"TOK={secret}")
    assert out.exit_code == 1, out
    error = ws.record()["jobs"]["a"]["steps"][0]["error"]
    assert error.startswith("format string '***' ")
    assert "index" not in out.stdout + out.stderr
    for leak in ("index", "{x}", "{12}", "def", "cd"):  # pieces of the secret
        assert leak not in error


def test_a_job_whose_step_fails_before_it_spawns_never_took_negative_time(
        ws: Workspace) -> None:
    # The job's start was stamped after the job had been handed over, and a job that fails at
    # once could end before it (about 2 runs in 5 for one job): 24 such jobs in one run.
    ws.flow("""
        name: neg
        jobs:
          b:
            strategy:
              fail-fast: false
              matrix:
                i: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
                    21, 22, 23, 24]
            steps:
              - run: echo hi
                working-directory: ${{ secrets.TOK }}
    """)
    out = ws.run("flow.yaml", "--secret", "TOK=x123")
    assert out.exit_code == 1, out
    assert out.stdout.count("✗ job b.") == 24
    assert "in -" not in out.stdout
    for job in ws.record()["jobs"].values():
        assert job["ended"] >= job["started"]


def test_a_run_whose_record_is_missing_is_still_listed(ws: Workspace) -> None:
    ws.flow("name: n\njobs:\n  a:\n    steps:\n      - run: echo hi\n")
    ws.run("flow.yaml").assert_success()
    run_id = ws.record()["id"]
    run_dir = ws.root / ".flowray" / "runs" / run_id
    (run_dir / "record.json").unlink()
    out = ws.cli("runs")
    assert out.exit_code == 0, out
    assert "no runs yet" not in out.stdout
    assert out.stdout.splitlines()[1].split()[:2] == [run_id, "unreadable"]
    assert out.stderr == (f"warning: the record of run at {run_dir} is missing, but its "
                          f"events.jsonl is there (the record was removed, or the run is only "
                          f"starting)\n")
    listed = ws.cli("runs", "--json")
    assert [(r["id"], r["status"]) for r in listed.json()] == [(run_id, "unreadable")]


def test_a_templated_shell_is_refused_at_validation(ws: Workspace) -> None:
    ws.flow("""
        name: sh
        jobs:
          a:
            steps:
              - run: echo hi
                shell: ${{ secrets.TOK }} {0}
    """)
    out = ws.run("flow.yaml", "--secret", "TOK=bash")
    assert out.exit_code == 2, out
    assert out.stderr == (
        "flow.yaml:6:16: jobs.a.steps[0].shell: shell '${{ secrets.TOK }} {0}' holds a "
        "template, but shell is not rendered: name the shell itself (bash, sh, python, or a "
        "command with {0})\n")


def test_a_templated_script_name_that_names_no_file_says_what_it_rendered_to(
        ws: Workspace) -> None:
    ws.action("actions/pick", """
        name: Pick
        inputs: {x: {type: string}}
        runs: {using: script, script: "${{ input.x }}.sh"}
    """, real__sh="echo real ran\n")
    ws.flow("""
        name: pick
        jobs:
          j:
            steps:
              - action: ./actions/pick
                with: {x: real}
              - action: ./actions/pick
                with: {x: nope}
    """)
    out = ws.run("flow.yaml")
    assert out.exit_code == 1, out
    assert "j/1 | real ran\n" in out.stdout
    assert "j/2 ✗ failure: action 'Pick': script 'nope.sh' not found\n" in out.stdout
