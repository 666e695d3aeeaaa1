"""What the service gives the web page's editor and start form, over real HTTP: a flow's
text checked with its stored local actions, saving the YAML alone while keeping the files of
the version it came from, the inputs of the start form and the role starting needs."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.servicefixtures import Served, push, serving, wait_run

ACTION_V1 = (b"name: shout\ninputs:\n  text: {type: string, required: true}\n"
             b"runs:\n  using: cmd\n  command: echo \"$INPUT_TEXT!\"\n")
ACTION_V2 = ACTION_V1.replace(b"!", b"?")
FLOW = ("name: acted\ntriggers:\n  manual:\n    role: viewer\n    inputs:\n"
        "      n: {type: integer, required: true, description: how many}\n"
        "      lr: {type: float, default: 0.1}\n"
        "jobs:\n  a:\n    steps:\n      - action: ./actions/shout\n"
        "        inputs: {text: loud}\n")
MISSING = "local action './actions/shout' not found: there is no folder 'actions/shout'"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("webapi")) as server:
        with server.client() as admin:
            assert push(admin, "acted", FLOW, files={
                "actions/shout/action-datatorch.yaml": ACTION_V1}).status_code == 201
            assert push(admin, "acted", FLOW, files={
                "actions/shout/action-datatorch.yaml": ACTION_V2}).status_code == 200
        yield server


def test_the_editor_s_text_is_checked_with_the_flow_s_own_local_actions(
        admin: httpx.Client) -> None:
    alone = admin.post("/api/v1/validate", json={"text": FLOW}).json()["diagnostics"]
    assert [(d["line"], d["message"]) for d in alone] == [(11, MISSING)]
    # the temporary folder it was checked in is named nowhere
    assert "flowray-validate" not in str(alone)
    kept = admin.post("/api/v1/validate", json={"text": FLOW, "flow": "acted"})
    assert kept.json() == {"diagnostics": []}
    old = admin.post("/api/v1/validate", json={"text": FLOW, "flow": "acted", "version": 1})
    assert old.json() == {"diagnostics": []}
    nope = admin.post("/api/v1/validate", json={"text": FLOW, "flow": "nope"})
    assert (nope.status_code, nope.json()) == (404, {"error": "no flow named 'nope'"})
    nope = admin.post("/api/v1/validate", json={"text": FLOW, "flow": "acted", "version": 9})
    assert (nope.status_code, nope.json()) == (404, {
        "error": "no flow named 'acted' with version 9"})


def test_saving_the_yaml_alone_keeps_the_files_of_the_version_it_came_from(
        admin: httpx.Client) -> None:
    def action_of(version: int) -> str:
        got = admin.get("/api/v1/flows/acted", params={"version": version}).json()
        assert got["files"] == ["actions/shout/action-datatorch.yaml"]
        run = admin.post("/api/v1/validate", json={"text": got["text"], "flow": "acted",
                                                   "version": version})
        assert run.json() == {"diagnostics": []}
        return str(got["version"])

    edited = FLOW.replace("text: loud", "text: louder")
    from_old = admin.put("/api/v1/flows/acted", json={"text": edited, "keep_files": True,
                                                      "base_version": 1})
    assert from_old.status_code == 200, from_old.text
    action_of(from_old.json()["version"])
    # the files are version 1's (its action shouts "!"), not the newest one's ("?")
    run_id = admin.post("/api/v1/flows/acted/runs", json={"inputs": {"n": 1}}).json()["id"]
    assert wait_run(admin, run_id)["status"] == "success"
    assert admin.get(f"/api/v1/runs/{run_id}/logs/a/0").text == "louder!\n"

    with_files = admin.put("/api/v1/flows/acted", json={
        "text": edited, "keep_files": True, "files": {"x": "eA=="}})
    assert (with_files.status_code, with_files.json()) == (422, {
        "error": "keep_files keeps the files of the version edited: send no files or "
                 "executable with it"})
    missing = admin.put("/api/v1/flows/acted", json={"text": edited, "keep_files": True,
                                                     "base_version": 99})
    assert (missing.status_code, missing.json()) == (422, {
        "error": "no flow named 'acted' with version 99 to keep the files of"})


def test_the_start_form_gets_the_typed_inputs_and_starting_needs_a_runner(
        admin: httpx.Client) -> None:
    got = admin.get("/api/v1/flows/acted").json()
    assert got["inputs"] == {
        "n": {"type": "integer", "required": True, "default": None,
              "description": "how many"},
        "lr": {"type": "float", "required": False, "default": 0.1, "description": None}}
    # triggers.manual.role: viewer cannot lower what starting a run needs
    assert got["start_role"] == "runner"
