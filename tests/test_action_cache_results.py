"""The action result cache (`cache: true`): a git action's outputs reused, without starting it,
when the same commit gets the same inputs; through the real CLI, against real git repositories.

Whether the action's process started is seen in a file it appends a line to on every start
(``$FLOWRAY_WORKSPACE/ran.txt``); the cache lives in the test's FLOWRAY_CACHE_DIR.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import textwrap
from pathlib import Path

import pytest
from conftest import Workspace
from gitfixtures import Forge

from flowray.execute.results import CachedResult, ResultCache

CACHED_ACTION = textwrap.dedent("""\
    name: Add
    cache: true
    inputs:
      a: {type: integer, required: true}
      b: {type: integer, default: 0}
      token: {type: string, default: ""}
    outputs:
      sum: {type: integer}
    runs:
      using: python
      main: add.py
""")
ADD_PY = textwrap.dedent("""\
    import json, os
    with open(os.path.join(os.environ["FLOWRAY_WORKSPACE"], "ran.txt"), "a") as fh:
        fh.write(os.environ["INPUT_A"] + "\\n")
    a, b = int(os.environ["INPUT_A"]), int(os.environ["INPUT_B"])
    if a < 0:
        raise SystemExit("negative")
    print("::sum::" + json.dumps(a + b))
    if os.environ.get("INPUT_TOKEN") and os.environ.get("ECHO_TOKEN"):
        print("::echo::" + json.dumps("token " + os.environ["INPUT_TOKEN"]))
""")

FLOW = """
    name: cached
    jobs:
      j:
        steps:
          - id: add
            action: acme/add@v1
            with: {a: 1, b: 2}
          - run: echo "sum is ${{ steps.add.outputs.sum }}"
"""


def _publish(forge: Forge, tag: str = "v1", action: str = CACHED_ACTION,
             main: str = ADD_PY) -> str:
    return forge.publish("acme/add", {"action-datatorch.yaml": action, "add.py": main}, tag)


def _starts(ws: Workspace) -> list[str]:
    """The action's starts so far (its input `a`, one a start)."""
    ran = ws.root / "ran.txt"
    return ran.read_text().splitlines() if ran.exists() else []


def _results(tmp_path: Path) -> Path:
    return tmp_path / "action-cache" / "results"


def _entries(tmp_path: Path) -> list[Path]:
    folder = _results(tmp_path) / "entries"
    return sorted(folder.glob("*.json")) if folder.exists() else []


def _step(record: dict[str, object], index: int = 0) -> dict[str, object]:
    jobs = record["jobs"]
    assert isinstance(jobs, dict)
    steps = jobs["j"]["steps"]
    assert isinstance(steps[index], dict)
    return steps[index]  # type: ignore[no-any-return]


def test_second_run_reuses_the_outputs_without_starting_the_action(
    ws: Workspace, forge: Forge, tmp_path: Path
) -> None:
    sha = _publish(forge)
    flow = ws.flow(FLOW)
    first = ws.run(flow)
    first.assert_success()
    assert _starts(ws) == ["1"]
    first_record = ws.record()
    assert _step(first_record)["cached"] is False
    assert _step(first_record)["exit_code"] == 0

    second = ws.run(flow)
    second.assert_success()
    assert _starts(ws) == ["1"]  # not started again
    assert "j/2 | sum is 3" in second.stdout  # later steps read the reused outputs
    run1 = first_record["id"]
    assert (f"j/add | cached: outputs of acme/add@v1 ({sha[:7]}) from run {run1} ("
            in second.stdout)
    assert "the action did not run (--no-cache runs it)" in second.stdout

    record = ws.record()
    step = _step(record)
    assert (step["status"], step["outcome"], step["cached"], step["exit_code"]) == (
        "success", "success", True, None)
    assert step["outputs"] == {"sum": 3}
    assert step["kind"] == "python"
    assert _step(record, 1)["cached"] is False

    # the events say so too
    events = [json.loads(line) for line in
              (ws.root / ".flowray" / "runs" / str(record["id"]) / "events.jsonl")
              .read_text().splitlines()]
    finished = [e for e in events if e["type"] == "step.finished"]
    assert [(e["key"], e["cached"]) for e in finished] == [("add", True), ("2", False)]
    # and `flowray status`
    status = ws.cli("status").assert_success()
    line = next(ln for ln in status.stdout.splitlines() if ln.strip().startswith("add "))
    assert line.split()[1] == "success" and line.endswith("  cached"), status
    # and `flowray logs`
    logs = ws.cli("logs", "last", "j/add").assert_success()
    assert f"cached: outputs of acme/add@v1 ({sha[:7]}) from run {run1}" in logs.stdout


def test_a_changed_input_or_env_runs_the_action_again(ws: Workspace, forge: Forge) -> None:
    _publish(forge)
    flow = ws.flow(FLOW)
    ws.run(flow).assert_success()
    ws.flow(FLOW.replace("{a: 1, b: 2}", "{a: 1, b: 5}"))
    changed = ws.run(flow)
    changed.assert_success()
    assert "j/2 | sum is 6" in changed.stdout
    assert _starts(ws) == ["1", "1"]
    # the same inputs written another way (a default spelled out, a number as text): reused
    ws.flow(FLOW.replace("{a: 1, b: 2}", "{a: '1', b: 2, token: ''}"))
    same = ws.run(flow)
    same.assert_success()
    assert "j/2 | sum is 3" in same.stdout and _starts(ws) == ["1", "1"]
    # the environment the flow gives the step is part of the key
    ws.flow(FLOW.replace("with: {a: 1, b: 2}", "with: {a: 1, b: 2}\n            env: {MODE: x}"))
    ws.run(flow).assert_success()
    assert _starts(ws) == ["1", "1", "1"]
    ws.run(flow).assert_success()
    assert _starts(ws) == ["1", "1", "1"]


def test_a_new_commit_runs_again_and_another_tag_of_the_same_commit_does_not(
    ws: Workspace, forge: Forge
) -> None:
    old = _publish(forge)
    flow = ws.flow(FLOW)
    ws.run(flow).assert_success()
    # the tag moves to a new commit (same code, but the key is the commit)
    new = _publish(forge, main=ADD_PY + "# v1, again\n")
    assert new != old
    moved = ws.run(flow)
    moved.assert_success()
    assert f"tag v1 of acme/add moved: {old[:7]} -> {new[:7]}" in moved.stderr
    assert _starts(ws) == ["1", "1"]
    # a new tag on another commit runs; a tag on a commit already run is reused
    _publish(forge, tag="v2", main=ADD_PY + "# v2\n")
    ws.flow(FLOW.replace("acme/add@v1", "acme/add@v2"))
    ws.run(flow).assert_success()
    assert _starts(ws) == ["1", "1", "1"]
    ws.flow(FLOW.replace("acme/add@v1", f"acme/add@{new}"))
    by_sha = ws.run(flow)
    by_sha.assert_success()
    assert _starts(ws) == ["1", "1", "1"]
    assert f"cached: outputs of acme/add@{new} ({new[:7]})" in by_sha.stdout


@pytest.mark.parametrize(("action_cache", "step_cache", "reused"), [
    ("cache: true", "cache: false", False),   # the step turns it off
    ("cache: false", "", False),              # the action's file says no
    ("", "", False),                          # the default: off
    ("", "cache: true", True),                # the step turns it on
])
def test_the_step_overrides_the_action_and_the_default_is_off(
    ws: Workspace, forge: Forge, action_cache: str, step_cache: str, reused: bool
) -> None:
    _publish(forge, action=CACHED_ACTION.replace("cache: true", action_cache))
    flow = ws.flow(FLOW.replace("with: {a: 1, b: 2}",
                                f"with: {{a: 1, b: 2}}\n            {step_cache}"))
    ws.run(flow).assert_success()
    second = ws.run(flow)
    second.assert_success()
    assert "j/2 | sum is 3" in second.stdout
    assert _starts(ws) == (["1"] if reused else ["1", "1"])
    assert _step(ws.record())["cached"] is reused


def test_no_cache_runs_the_action_and_refreshes_the_entry(ws: Workspace, forge: Forge) -> None:
    _publish(forge)
    flow = ws.flow(FLOW)
    ws.run(flow).assert_success()
    fresh = ws.run(flow, "--no-cache")
    fresh.assert_success()
    assert "cached:" not in fresh.stdout
    assert _starts(ws) == ["1", "1"]
    refreshed_by = ws.record()["id"]
    third = ws.run(flow)
    third.assert_success()
    assert _starts(ws) == ["1", "1"]
    assert f"from run {refreshed_by} (" in third.stdout


def test_the_python_api_use_cache_false_runs_the_action(ws: Workspace, forge: Forge) -> None:
    import flowray

    _publish(forge)
    flow = ws.flow(FLOW)
    flowray.start(flow, workdir=ws.root).wait()
    again = flowray.start(flow, workdir=ws.root).wait()
    assert again.jobs["j"].steps[0].cached is True
    assert _starts(ws) == ["1"]
    forced = flowray.start(flow, workdir=ws.root, use_cache=False).wait()
    assert forced.jobs["j"].steps[0].cached is False
    assert _starts(ws) == ["1", "1"]


def test_a_failed_step_is_not_cached(ws: Workspace, forge: Forge) -> None:
    _publish(forge)
    flow = ws.flow(FLOW.replace("{a: 1, b: 2}", "{a: -1, b: 2}"))
    assert ws.run(flow).exit_code == 1
    assert ws.run(flow).exit_code == 1
    assert _starts(ws) == ["-1", "-1"]


def test_secrets_are_never_stored_and_a_changed_secret_runs_again(
    ws: Workspace, forge: Forge, tmp_path: Path
) -> None:
    _publish(forge)
    secret = "s3cr3t-Tok3n-value"
    flow = ws.flow(FLOW.replace("{a: 1, b: 2}", "{a: 1, b: 2, token: '${{ secrets.TOKEN }}'}"))
    ws.run(flow, "--secret", f"TOKEN={secret}").assert_success()
    ws.run(flow, "--secret", f"TOKEN={secret}").assert_success()
    assert _starts(ws) == ["1"]
    ws.run(flow, "--secret", "TOKEN=another-one").assert_success()
    assert _starts(ws) == ["1", "1"]

    results = _results(tmp_path)
    files = [p for p in results.rglob("*") if p.is_file()]
    assert len(_entries(tmp_path)) == 2 and results / "key" in files
    forms = [secret, base64.b64encode(secret.encode()).decode().rstrip("="), "another-one"]
    for path in files:
        data = path.read_bytes()
        assert not any(f.encode() in data for f in forms), path
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(results.stat().st_mode) == 0o700
    assert stat.S_IMODE((results / "entries").stat().st_mode) == 0o700
    # an entry holds the outputs and where they came from, nothing of the inputs
    entry = json.loads(_entries(tmp_path)[0].read_text())
    assert set(entry) == {"format", "key", "outputs", "run", "created", "action", "sha"}
    assert entry["outputs"] == {"sum": 3}


def test_outputs_that_hold_a_secret_are_not_cached(
    ws: Workspace, forge: Forge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _publish(forge)
    monkeypatch.setenv("ECHO_TOKEN", "1")  # the action then puts its token in an output
    flow = ws.flow(FLOW.replace("{a: 1, b: 2}", "{a: 1, b: 2, token: '${{ secrets.TOKEN }}'}"))
    first = ws.run(flow, "--secret", "TOKEN=hunter2-hunter2")
    first.assert_success()
    assert _step(ws.record())["outputs"] == {"sum": 3, "echo": "token ***"}
    assert _entries(tmp_path) == []
    ws.run(flow, "--secret", "TOKEN=hunter2-hunter2").assert_success()
    assert _starts(ws) == ["1", "1"]


@pytest.mark.parametrize("garbage", [b"{not json", b"\xff\xfe", b"[]",
                                     b'{"format": 1, "key": "x", "outputs": {}}'])
def test_a_corrupt_entry_is_ignored_and_replaced(
    ws: Workspace, forge: Forge, tmp_path: Path, garbage: bytes
) -> None:
    _publish(forge)
    flow = ws.flow(FLOW)
    ws.run(flow).assert_success()
    [entry] = _entries(tmp_path)
    entry.write_bytes(garbage)
    again = ws.run(flow)
    again.assert_success()
    assert "Traceback" not in again.stdout + again.stderr
    assert "j/2 | sum is 3" in again.stdout
    assert _starts(ws) == ["1", "1"]
    assert json.loads(entry.read_text())["outputs"] == {"sum": 3}  # written anew
    ws.run(flow).assert_success()
    assert _starts(ws) == ["1", "1"]


def test_an_unwritable_cache_warns_and_the_step_still_runs(
    ws: Workspace, forge: Forge, tmp_path: Path
) -> None:
    _publish(forge)
    flow = ws.flow(FLOW)
    results = _results(tmp_path)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text("a file where the folder should be\n")
    out = ws.run(flow)
    out.assert_success()
    assert "j/2 | sum is 3" in out.stdout
    assert f"! job j: cannot use the action result cache in {results}: File exists" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr


def test_cache_on_a_run_step_is_an_error_and_on_a_local_action_a_warning(
    ws: Workspace
) -> None:
    ws.action("act", "name: Local\nruns: {using: cmd, command: 'echo hi'}\n")
    flow = ws.flow("""
        name: x
        jobs:
          j:
            steps:
              - action: ./act
                cache: true
    """)
    out = ws.run(flow)
    out.assert_success()
    assert ("flow.yaml:6:9: warning: jobs.j.steps[0].cache: 'cache: true' has no effect "
            "here: local actions have no commit to key their results by, so the step always "
            "runs (git actions are cached)") in out.stderr
    bad = ws.flow("name: x\njobs: {j: {steps: [{run: echo, cache: true}]}}\n", "bad.yaml")
    refused = ws.run(bad)
    assert refused.exit_code == 2, refused
    assert "'cache' belongs to 'action' steps, not 'run' steps" in refused.stderr


def test_eviction_keeps_the_most_recently_used(tmp_path: Path) -> None:
    cache = ResultCache(str(tmp_path / "results"), max_entries=10)
    keys = [cache.key_for({"n": i}) for i in range(12)]
    for i, key in enumerate(keys[:10]):
        assert cache.put(key, CachedResult({"n": i}, "run", float(i), "a/b@v1", "0" * 40)) \
            is None
        os.utime(cache._path(key), (1000.0 + i, 1000.0 + i))
    assert cache.get(keys[0]) is not None  # used now: the newest
    for key in keys[10:]:
        cache.put(key, CachedResult({}, "run", 0.0, "a/b@v1", "0" * 40))
    # the 11th put went over 10: down to 9, the two least recently used gone; the 12th fits
    left = {p.stem for p in (tmp_path / "results" / "entries").glob("*.json")}
    assert left == {keys[0], *keys[3:]}


def test_the_bounds_hold_though_a_store_seldom_scans_the_folder(tmp_path: Path) -> None:
    # A store scans the entries only when its count of them passes a bound (or every
    # _RESCAN_EVERY stores): one process keeps the bound exactly; two storing into one folder
    # (two ResultCache objects, as two runs at once) pass it by at most what the other stored
    # since a scan.
    from flowray.execute.results import _RESCAN_EVERY

    folder = tmp_path / "results"
    one = ResultCache(str(folder), max_entries=20)
    seen = []
    for i in range(100):
        one.put(one.key_for({"n": i}), CachedResult({"n": i}, "run", 0.0, "a/b@v1", "0" * 40))
        seen.append(len(list((folder / "entries").glob("*.json"))))
    assert max(seen) == 20 and seen[-1] <= 20
    by_bytes = ResultCache(str(tmp_path / "bytes"), max_bytes=10_000)
    for i in range(100):
        by_bytes.put(by_bytes.key_for({"n": i}),
                     CachedResult({"v": "x" * 900}, "run", 0.0, "a/b@v1", "0" * 40))
        sizes = [p.stat().st_size for p in (tmp_path / "bytes" / "entries").glob("*.json")]
        assert sum(sizes) <= 10_000
    two = ResultCache(str(folder), max_entries=20)
    counts = []
    for i in range(400):
        cache = one if i % 2 else two
        cache.put(cache.key_for({"m": i}), CachedResult({}, "run", 0.0, "a/b@v1", "0" * 40))
        counts.append(len(list((folder / "entries").glob("*.json"))))
    assert 20 <= max(counts) <= 20 + _RESCAN_EVERY
    one.evict()
    assert len(list((folder / "entries").glob("*.json"))) <= 20


def test_keys_are_keyed_hashes_private_to_each_cache(tmp_path: Path) -> None:
    one, two = ResultCache(str(tmp_path / "one")), ResultCache(str(tmp_path / "two"))
    material = {"inputs": {"pin": "1234"}}
    assert one.key_for(material) == one.key_for(dict(material))
    assert one.key_for(material) != two.key_for(material)
    assert ResultCache(str(tmp_path / "one")).key_for(material) == one.key_for(material)
    key_file = tmp_path / "one" / "key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and len(key_file.read_bytes()) == 32


def test_cache_takes_a_boolean_in_the_flow_and_the_action_file(ws: Workspace) -> None:
    ws.action("act", "name: L\ncache: maybe\nruns: {using: cmd, command: echo}\n")
    flow = ws.flow('name: x\njobs:\n  j:\n    steps:\n      - action: ./act\n        cache: "yes"\n')
    out = ws.cli("validate", flow)
    assert out.exit_code == 2, out
    assert "flow.yaml:6:9: jobs.j.steps[0].cache: expected true or false, got 'yes'" \
        in out.stderr
    assert "act/action-datatorch.yaml:2:1: cache: expected true or false, got 'maybe'" \
        in out.stderr


def test_runs_at_once_share_the_cache_safely(ws: Workspace, forge: Forge,
                                             tmp_path: Path) -> None:
    import flowray

    _publish(forge)
    flow = ws.flow(FLOW)
    runs = [flowray.start(flow, workdir=ws.root) for _ in range(3)]  # all going at once
    records = [r.wait() for r in runs]
    assert [r.status.value for r in records] == ["success"] * 3
    assert all(r.jobs["j"].steps[0].outputs == {"sum": 3} for r in records)
    started = len(_starts(ws))
    assert 1 <= started <= 3  # each run that missed started it; none saw half an entry
    assert len(_entries(tmp_path)) == 1
    assert list((_results(tmp_path) / "entries").glob("*.tmp")) == []
    later = flowray.start(flow, workdir=ws.root).wait()
    assert later.jobs["j"].steps[0].cached is True and len(_starts(ws)) == started
