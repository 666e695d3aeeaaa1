"""Defects found by attacking flowray as a clumsy or hostile user (issue 11's siblings)."""

from __future__ import annotations

from pathlib import Path

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
