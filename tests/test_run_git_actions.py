"""`owner/repo@tag` actions through the real CLI, against real git repositories made here.

The "GitHub" of these tests is a folder of bare repositories reached over file://
(FLOWRAY_ACTIONS_BASE points at it); the action cache is a temporary folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Workspace
from gitfixtures import ADD_ACTION, ADD_PY, Forge

FLOW = """
    name: git-actions
    jobs:
      add:
        steps:
          - id: first
            action: acme/add@v1
            with: {a: 10, b: 20}
          - action: acme/add@v1
            with:
              a: ${{ steps.first.outputs.sum }}
              b: 5
          - run: echo "sum is ${{ variable.sum }}"
"""


def test_git_action_runs_and_second_run_fetches_nothing(ws: Workspace, forge: Forge) -> None:
    sha = forge.publish("acme/add", {"action-datatorch.yaml": ADD_ACTION, "add.py": ADD_PY}, "v1")
    flow = ws.flow(FLOW)
    first = ws.run(flow)
    first.assert_success()
    assert "add/3 | sum is 35" in first.stdout
    assert f"fetched acme/add@v1 ({sha[:7]})" in first.stderr
    second = ws.run(flow)
    second.assert_success()
    assert "fetched" not in second.stderr
    assert "add/3 | sum is 35" in second.stdout
    assert ws.record()["actions"] == {"acme/add@v1": sha}


def test_moved_tag_uses_the_new_commit_and_says_so(ws: Workspace, forge: Forge) -> None:
    old = forge.publish("acme/add", {"action-datatorch.yaml": ADD_ACTION, "add.py": ADD_PY}, "v1")
    flow = ws.flow(FLOW)
    ws.run(flow).assert_success()
    new = forge.publish("acme/add", {"add.py": ADD_PY.replace("'::sum::'", "'::sum::1'")}, "v1")
    out = ws.run(flow)
    out.assert_success()
    assert f"tag v1 of acme/add moved: {old[:7]} -> {new[:7]}" in out.stderr
    assert "add/3 | sum is 1135" in out.stdout  # "1" + "130", then "1" + "135"


def test_inputs_are_checked_against_the_git_action_before_running(
    ws: Workspace, forge: Forge
) -> None:
    forge.publish("acme/add", {"action-datatorch.yaml": ADD_ACTION, "add.py": ADD_PY}, "v1")
    flow = ws.flow("""
        name: bad-inputs
        jobs:
          j:
            steps:
              - run: touch ran
              - action: acme/add@v1
                with: {b: nope}
    """)
    out = ws.run(flow)
    assert out.exit_code == 2, out
    assert out.stderr.splitlines()[-2:] == [
        "flow.yaml:7:9: jobs.j.steps[1].with: missing required input 'a' of action 'Add'",
        "flow.yaml:7:16: jobs.j.steps[1].with.b: input 'b' expects an integer, got 'nope' "
        "(action 'Add')",
    ]
    assert not (ws.root / "ran").exists()


def test_repository_without_an_action_file_is_refused(ws: Workspace, forge: Forge) -> None:
    sha = forge.publish("acme/empty", {"README.md": "nothing here\n"}, "v2")
    flow = ws.flow("name: x\njobs: {j: {steps: [{action: acme/empty@v2}]}}\n")
    out = ws.run(flow)
    assert out.exit_code == 2
    assert out.stderr.splitlines()[-1] == (
        f"flow.yaml:2:21: jobs.j.steps[0].action: acme/empty@v2 ({sha[:7]}): the repository "
        "has no action-datatorch.yaml")


def test_offline_without_a_cached_action_is_a_clear_error(ws: Workspace, forge: Forge) -> None:
    forge.publish("acme/add", {"action-datatorch.yaml": ADD_ACTION, "add.py": ADD_PY}, "v1")
    flow = ws.flow(FLOW)
    out = ws.run(flow, "--offline")
    assert out.exit_code == 2
    assert "acme/add@v1" in out.stderr and "flowray actions fetch" in out.stderr
    ws.cli("actions", "fetch", flow).assert_success()
    ws.run(flow, "--offline").assert_success()


def test_actions_list_and_prune(ws: Workspace, forge: Forge) -> None:
    sha = forge.publish("acme/add", {"action-datatorch.yaml": ADD_ACTION, "add.py": ADD_PY}, "v1")
    flow = ws.flow(FLOW)
    fetched = ws.cli("actions", "fetch", flow)
    fetched.assert_success()
    assert fetched.stdout.startswith(f"acme/add@v1  {sha}  ")
    listing = ws.cli("actions", "list")
    listing.assert_success()
    assert sha[:12] in listing.stdout and "acme/add" in listing.stdout
    pruned = ws.cli("actions", "prune")
    pruned.assert_success()
    assert pruned.stdout.startswith("removed 1 cached action(s)")
    assert "no actions cached" in ws.cli("actions", "list").stdout


def test_sub_folder_actions_of_one_commit_keep_their_own_action_files(
    ws: Workspace, forge: Forge
) -> None:
    greet = "name: Greet\nruns: {using: cmd, command: echo greet-ran}\n"
    forge.publish("acme/add", {"action-datatorch.yaml": ADD_ACTION, "add.py": ADD_PY,
                               "tools/greet/action-datatorch.yaml": greet}, "v1")
    flow = ws.flow("""
        name: two-folders
        jobs:
          j:
            steps:
              - action: acme/add/tools/greet@v1
              - action: acme/add@v1
                with: {a: 1, b: 2}
              - run: echo "sum ${{ variable.sum }}"
    """)
    for _ in range(2):  # the second run reads both action files from the cache
        out = ws.run(flow)
        out.assert_success()
        assert "j/1 | greet-ran" in out.stdout and "j/3 | sum 3" in out.stdout


def test_fetch_works_even_when_offline_is_configured(
    ws: Workspace, forge: Forge, monkeypatch: pytest.MonkeyPatch
) -> None:
    forge.publish("acme/add", {"action-datatorch.yaml": ADD_ACTION, "add.py": ADD_PY}, "v1")
    flow = ws.flow(FLOW)
    monkeypatch.setenv("FLOWRAY_OFFLINE", "1")
    missing = ws.run(flow)
    assert missing.exit_code == 2
    hint = ("acme/add@v1 is not in the action cache and flowray is offline; fetch it with "
            "`flowray actions fetch flow.yaml` (or run without --offline)")
    # every step that uses it says so (the reference is tried once)
    assert missing.stderr.splitlines()[-2:] == [
        f"flow.yaml:6:9: jobs.add.steps[0].action: {hint}",
        f"flow.yaml:8:9: jobs.add.steps[1].action: {hint}",
    ]
    ws.cli("actions", "fetch", flow).assert_success()
    ws.run(flow).assert_success()


def test_bad_config_file_is_a_clear_error_for_every_command(ws: Workspace, forge: Forge) -> None:
    ws.write("flowray.toml", "[actions]\nofline = true\n")
    for args in (["actions", "list"], ["actions", "prune"], ["run", ws.flow(FLOW)]):
        out = ws.cli(*args)
        assert out.exit_code == 2, (args, out)
        assert out.stderr == (
            f"error: {ws.root / 'flowray.toml'}: unknown key 'actions.ofline'; "
            "did you mean 'offline'?\n")


def test_object_form_without_file_or_git_runs(ws: Workspace, forge: Forge) -> None:
    # DataTorch flows write {name, tag} (and often git:) without file:
    forge.publish("acme/add", {"action-datatorch.yaml": ADD_ACTION, "add.py": ADD_PY}, "v1")
    flow = ws.flow(f"""
        name: object-form
        jobs:
          j:
            steps:
              - action: {{name: acme/add, tag: v1}}
                with: {{a: 1, b: 2}}
              - action:
                  name: acme/add
                  tag: v1
                  git: {forge.root.as_uri()}/acme/add
                with: {{a: 3}}
              - run: echo "sum ${{{{ variable.sum }}}}"
    """)
    for _ in range(2):  # validated, then from the flow cache
        out = ws.run(flow)
        out.assert_success()
        assert "j/3 | sum 3" in out.stdout


def test_an_action_file_validated_by_another_flowray_is_validated_again(
    ws: Workspace, forge: Forge, tmp_path: Path
) -> None:
    """The validated action file kept in the cache entry is per validation code: one written
    by an older flowray (without keys this one reads, such as `env`) is not read."""
    import json

    forge.publish("acme/add", {"action-datatorch.yaml": ADD_ACTION, "add.py": ADD_PY}, "v1")
    flow = ws.flow(FLOW)
    ws.run(flow).assert_success()
    [kept] = (tmp_path / "action-cache" / "entries").glob("*/*/action.*.*.json")
    which = kept.name.split(".")[1]
    old = json.loads(kept.read_text())
    for key in ("env", "cache", "branding", "schema_"):
        old.pop(key, None)
    (kept.parent / f"action.{which}.json").write_text(json.dumps(old))  # the older name
    kept.unlink()
    again = ws.run(flow, "--no-cache")
    again.assert_success()
    assert "add/3 | sum is 35" in again.stdout
