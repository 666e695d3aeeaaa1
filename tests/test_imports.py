"""`import flowray` and `flowray validate` stay light: no ray, docker or git imported."""

from __future__ import annotations

import subprocess
import sys

from conftest import Workspace

HEAVY = ("ray", "docker", "git")


def _modules_after(code: str, cwd: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys\nprint('\\n'.join(sys.modules))"],
        cwd=cwd, capture_output=True, text=True, check=True,
    ).stdout
    return set(out.split())


def test_import_flowray_imports_nothing_heavy(ws: Workspace) -> None:
    mods = _modules_after("import flowray", str(ws.root))
    assert not {m for m in mods if m.split(".")[0] in HEAVY}
    assert "pydantic" not in mods


def test_validate_and_run_import_no_cluster_libraries(ws: Workspace) -> None:
    ws.flow("name: x\njobs: {a: {steps: [{run: 'true'}]}}\n")
    code = (
        "import sys\n"
        "from flowray.cli import main\n"
        "for argv in (['validate', 'flow.yaml'], ['run', 'flow.yaml', '-q']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
    )
    mods = _modules_after(code, str(ws.root))
    assert "flowray.spec.loader" in mods or "flowray.spec" in mods
    assert not {m for m in mods if m.split(".")[0] in HEAVY}


def test_validate_never_asks_for_docker(ws: Workspace) -> None:
    # A flow with container steps of every kind validates with no engine and no docker import.
    ws.write("d/action-datatorch.yaml", "name: D\nruns: {using: docker, image: alpine}\n")
    ws.flow("name: x\njobs:\n  j: {container: alpine, steps: [{run: 'true'}]}\n"
            "  k: {steps: [{action: 'docker://alpine'}, {action: ./d}]}\n")
    code = (
        "import os\n"
        "os.environ['DOCKER_HOST'] = 'unix:///nonexistent/docker.sock'\n"
        "from flowray.cli import main\n"
        "try:\n"
        "    main(['validate', 'flow.yaml'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
    )
    mods = _modules_after(code, str(ws.root))
    assert not {m for m in mods if m.split(".")[0] in HEAVY}
    assert "flowray.execute.container" not in mods


def test_cached_run_does_not_import_pydantic(ws: Workspace) -> None:
    ws.flow("name: x\njobs: {a: {steps: [{run: 'true'}]}}\n")
    ws.run("flow.yaml").assert_success()  # fills the validated-flow cache
    code = (
        "from flowray.cli import main\n"
        "try:\n"
        "    main(['run', 'flow.yaml', '-q'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
    )
    mods = _modules_after(code, str(ws.root))
    assert "pydantic" not in mods and "yaml" not in mods


def test_run_without_git_actions_does_not_import_the_actions_package(ws: Workspace) -> None:
    # The directory context names the action cache's folder; finding it must not import the
    # git actions package (its cache, references and configuration) on every run.
    ws.flow("name: x\njobs: {a: {steps: [{run: 'echo ${{ directory.actions }}'}]}}\n")
    ws.run("flow.yaml").assert_success()  # fills the validated-flow cache
    code = (
        "from flowray.cli import main\n"
        "try:\n"
        "    main(['run', 'flow.yaml', '-q'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
    )
    mods = _modules_after(code, str(ws.root))
    assert "flowray.execute.contexts" in mods
    assert not {m for m in mods if m == "flowray.actions" or m.startswith("flowray.actions.")}
