"""The web page in a real headless Chromium (tests/browserfixtures.py) against a real
`flowray serve` on a free port: what a person does there, and what they see.

The service is told it has two GPUs (FLOWRAY_GPUS: there is no GPU here; the page only shows
which ones a job was given)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browserfixtures import (
    PAGE_OVERFLOW,
    UNNAMED_CONTROLS,
    WIDTHS,
    Relay,
    browser,
    screenshot,
    signed_in,
)
from tests.servicefixtures import Served, push, serving, wait_run

__all__ = ["browser"]  # the fixture, used by name

LIVE = """\
name: live
triggers:
  manual:
    inputs:
      gate: {type: string, required: true, description: a file the step waits for}
jobs:
  work:
    resources: {gpus: 1}
    steps:
      - name: Wait for the gate
        env:
          GATE: ${{ inputs.gate }}
        run: |
          echo "early line before the gate"
          printf '\\033[31mred text\\033[0m\\n'
          while [ ! -e "$GATE" ]; do sleep 0.05; done
          echo "after the gate"
          mkdir -p out && echo "artifact body" > out/result.txt
    artifacts: [out/result.txt]
"""

TYPED = """\
name: typed
triggers:
  manual:
    inputs:
      epochs: {type: integer, required: true, description: how many passes}
      lr: {type: float, default: 0.001}
      shuffle: {type: boolean, default: false}
      layers: {type: array, default: [64, 64]}
      model: {type: string, default: resnet}
jobs:
  show:
    steps:
      - run: echo shown
"""

SWEEP = """\
name: sweep
triggers:
  manual:
    inputs:
      marker: {type: string, required: true}
jobs:
  train:
    strategy:
      fail-fast: false
      matrix:
        lr: [0.1, 0.01]
        width: [16, 32, 64]
    outputs:
      score: ${{ steps.fit.outputs.score }}
    steps:
      - id: fit
        env:
          LR: ${{ matrix.lr }}
          WIDTH: ${{ matrix.width }}
          MARKER: ${{ inputs.marker }}
        run: |
          if [ "$WIDTH" = 64 ] && [ "$LR" = 0.01 ] && [ ! -e "$MARKER" ]; then
            echo "no marker yet" >&2; exit 3
          fi
          echo "score=$((WIDTH * 2))" >> "$FLOWRAY_OUTPUT"
  report:
    needs: train
    if: always()
    steps:
      - run: echo reported
"""

TESTS = """\
name: tested
jobs:
  check:
    reports: [junit.xml]
    steps:
      - run: |
          cat > junit.xml <<'XML'
          <testsuite name="unit">
            <testcase classname="calc" name="test_adds" time="0.01"/>
            <testcase classname="calc" name="test_divides" time="0.02">
              <failure message="expected 2, got 3">Traceback: calc.py line 7</failure>
            </testcase>
          </testsuite>
          XML
"""

SECRET = """\
name: secretive
jobs:
  leak:
    steps:
      - env:
          KEY: ${{ secrets.CLOUD_KEY }}
        run: echo "the key is $KEY"
"""

EDITABLE = """\
name: editable
jobs:
  one:
    steps:
      - run: echo one
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("web"), env={"FLOWRAY_GPUS": "2"}) as server:
        with server.client() as admin:
            for name, text in (("live", LIVE), ("typed", TYPED), ("sweep", SWEEP),
                               ("tested", TESTS), ("secretive", SECRET),
                               ("editable", EDITABLE)):
                assert push(admin, name, text).status_code in (200, 201)
        yield server


def start(admin: httpx.Client, flow: str, **inputs: Any) -> str:
    answer = admin.post(f"/api/v1/flows/{flow}/runs", json={"inputs": inputs})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


# The log lines drawn in the page, without their line numbers.
LOG_LINES = """() => [...document.querySelectorAll('.log-line')].map((row) =>
  row.textContent.slice(row.querySelector('.ln').textContent.length))"""


def badge_text(page: Any) -> str:
    return str(page.locator(".run-head h1 .status").inner_text())


# ------------------------------------------------------------------ sign in, roles


def test_sign_in_shows_who_and_what_the_role_allows(served: Served, browser: Any,
                                                    admin: httpx.Client) -> None:
    page_url = served.url
    with signed_in(browser, page_url, served.token) as page:
        assert page.locator("#who-name").inner_text() == "admin"
        assert page.locator("#who-role").inner_text() == "admin"
        page.get_by_role("link", name="New flow").wait_for()
        assert page.get_by_role("link", name="Secrets").is_visible()
        row = page.get_by_role("row").filter(has_text="typed")
        assert row.get_by_role("link", name="Start typed").is_visible()
        cookies = {c["name"]: c for c in page.context.cookies()}
        assert cookies["flowray_session"]["httpOnly"] is True
        assert cookies["flowray_session"]["sameSite"] == "Strict"
        # the page's script cannot read it
        assert page.evaluate("document.cookie") == ""

    viewer = admin.post("/api/v1/tokens", json={"name": "watcher", "role": "viewer"}).json()
    with signed_in(browser, page_url, viewer["token"]) as page:
        assert page.locator("#who-role").inner_text() == "viewer"
        page.get_by_role("link", name="editable", exact=True).wait_for()
        assert not page.get_by_role("link", name="Secrets").is_visible()
        assert page.get_by_role("link", name="New flow").count() == 0
        assert page.get_by_role("link", name="Start typed").count() == 0
        page.get_by_role("link", name="editable", exact=True).click()
        page.locator(".cm-content").wait_for()
        assert page.get_by_role("button", name="Save").count() == 0
        assert page.locator(".cm-content").get_attribute("aria-readonly") == "true"
        page.locator(".cm-line").first.click()
        page.keyboard.type("typed by a viewer")
        assert "typed by a viewer" not in page.locator(".cm-content").inner_text()


def test_a_wrong_token_is_refused_with_the_service_s_message(served: Served,
                                                             browser: Any) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(served.url + "/runs")
        page.wait_for_url(re.compile(r"/sign-in\?next=%2Fruns$"))
        page.get_by_label("Token").fill("frt_not-a-token")
        page.get_by_role("button", name="Sign in").click()
        assert page.get_by_role("alert").filter(has_text="valid").inner_text() == \
            "the token is not valid"
        assert context.cookies() == []
    finally:
        context.close()


# ------------------------------------------------------------------ the editor


def test_the_editor_marks_an_error_at_its_line_as_one_types_and_saves_a_version(
        served: Served, browser: Any, admin: httpx.Client) -> None:
    with signed_in(browser, served.url, served.token) as page:
        page.goto(served.url + "/flows/editable")
        page.get_by_text("No problems.").wait_for()
        content = page.locator(".cm-content")
        # line 5 is "      - run: echo one": break it by misspelling run
        line5 = page.locator(".cm-line").nth(4)
        line5.click()
        page.keyboard.press("End")
        for _ in range(len("run: echo one")):
            page.keyboard.press("Shift+ArrowLeft")
        page.keyboard.type("rnu: echo one")
        mark = page.locator(".cm-line").nth(4).locator(".cm-lintRange-error")
        mark.wait_for()
        problems = page.get_by_role("list", name="Problems").locator("li")
        assert problems.count() == 1
        text = problems.first.inner_text()
        assert text.startswith("5:9 error jobs.one.steps[0].rnu "), text
        assert page.get_by_role("status").filter(has_text="error").inner_text() == \
            "1 error, 0 warnings"
        # the problems list jumps to the line
        page.locator(".cm-line").nth(0).click()
        problems.first.get_by_role("button").click()
        assert page.evaluate("document.activeElement.closest('.cm-editor') !== null")
        assert page.locator(".cm-activeLine").inner_text() == "      - rnu: echo one"
        screenshot(page, "editor-with-an-error")
        # fixed: the mark goes
        page.keyboard.press("End")
        for _ in range(len("rnu: echo one")):
            page.keyboard.press("Shift+ArrowLeft")
        page.keyboard.type("run: echo two")
        page.get_by_text("No problems.").wait_for()
        assert page.locator(".cm-lintRange-error").count() == 0
        assert problems.count() == 0
        assert "echo two" in content.inner_text()
        page.get_by_role("button", name="Save").click()
        page.get_by_role("heading", name="editable v2").wait_for()
    stored = admin.get("/api/v1/flows/editable").json()
    assert stored["version"] == 2
    assert stored["text"] == EDITABLE.replace("echo one", "echo two")


def test_older_versions_are_viewable_and_diffable(served: Served, browser: Any,
                                                  admin: httpx.Client) -> None:
    push(admin, "versioned", EDITABLE.replace("editable", "versioned"))
    push(admin, "versioned", EDITABLE.replace("editable", "versioned")
         .replace("echo one", "echo uno"))
    with signed_in(browser, served.url, served.token) as page:
        page.goto(served.url + "/flows/versioned")
        versions = page.get_by_role("complementary", name="Versions")
        versions.get_by_role("button", name="Compare version 1 with the text here").click()
        diff = page.get_by_role("region", name="Differences")
        diff.locator(".cm-deletedChunk, .cm-deletedLine, del").first.wait_for()
        assert "echo one" in diff.inner_text() and "echo uno" in diff.inner_text()
        screenshot(page, "editor-diff")
        versions.get_by_role("link", name="v1").click()
        page.get_by_role("heading", name="versioned v1").wait_for()
        assert page.get_by_role("note").inner_text().startswith("This is version 1, saved ")
        assert "echo one" in page.locator(".cm-content").inner_text()


def test_a_new_flow_from_the_template_is_valid_and_saved(served: Served, browser: Any,
                                                         admin: httpx.Client) -> None:
    with signed_in(browser, served.url, served.token) as page:
        page.get_by_role("link", name="New flow").click()
        page.get_by_text("No problems.").wait_for()
        page.get_by_role("button", name="Save").click()
        assert page.get_by_role("alert").filter(has_text="name").inner_text() == \
            "A flow needs a name."
        page.get_by_label("Flow name").fill("from-template")
        page.get_by_role("button", name="Save").click()
        page.get_by_role("heading", name="from-template v1").wait_for()
    assert admin.get("/api/v1/flows/from-template").json()["text"].splitlines()[1] == \
        "name: from-template"
    run = start(admin, "from-template")
    assert wait_run(admin, run)["status"] == "success"


# ------------------------------------------------------------------ starting a run


def test_the_start_form_is_typed_and_checks_each_field_before_sending(
        served: Served, browser: Any, admin: httpx.Client) -> None:
    with signed_in(browser, served.url, served.token) as page:
        page.goto(served.url + "/flows/typed/start")
        epochs = page.get_by_label(re.compile("^epochs"))
        assert epochs.get_attribute("aria-required") == "true"
        assert page.get_by_label(re.compile("^lr")).input_value() == "0.001"
        assert page.get_by_label(re.compile("^shuffle")).get_attribute("type") == "checkbox"
        assert page.get_by_label(re.compile("^layers")).input_value() == "[64,64]"
        assert page.get_by_text("how many passes").is_visible()
        sent: list[str] = []
        page.on("request", lambda r: sent.append(r.url) if r.method == "POST" else None)
        page.get_by_role("button", name="Start run").click()
        assert page.locator("#input-epochs-error").inner_text() == "epochs is required."
        epochs.fill("two")
        page.get_by_label(re.compile("^layers")).fill("{not json")
        page.get_by_role("button", name="Start run").click()
        assert page.locator("#input-epochs-error").inner_text() == \
            "epochs must be a whole number."
        assert page.locator("#input-layers-error").inner_text() == "layers must be JSON."
        assert epochs.get_attribute("aria-invalid") == "true"
        assert sent == []
        screenshot(page, "start-form-errors")
        epochs.fill("12")
        page.get_by_label(re.compile("^lr")).fill("1e-4")
        page.get_by_label(re.compile("^shuffle")).check()
        page.get_by_label(re.compile("^layers")).fill("[128, 32]")
        page.get_by_role("button", name="Start run").click()
        page.wait_for_url(re.compile(r"/runs/[^/]+$"))
        run_id = page.url.rsplit("/", 1)[1]
    record = wait_run(admin, run_id)
    assert record["status"] == "success"
    assert admin.get(f"/api/v1/runs/{run_id}").json()["inputs"] == {
        "epochs": 12, "lr": 0.0001, "shuffle": True, "layers": [128, 32], "model": "resnet"}


# ------------------------------------------------------------------ a run, live


def test_a_run_is_watched_live_logs_before_the_step_ends_then_success_and_an_artifact(
        served: Served, browser: Any, admin: httpx.Client, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with signed_in(browser, served.url, served.token) as page:
        run_id = start(admin, "live", gate=str(gate))
        page.goto(f"{served.url}/runs/{run_id}")
        cell = page.get_by_role("button", name="work: running")
        cell.wait_for()
        log = page.get_by_role("region", name="Log")
        log.get_by_text("early line before the gate").wait_for()
        # still running: the line came before the step ended
        assert admin.get(f"/api/v1/runs/{run_id}").json()["status"] == "running"
        assert badge_text(page) == "running"
        red = log.locator(".a-f1")
        assert red.inner_text() == "red text"
        panel = page.get_by_role("region", name="Job")
        assert panel.locator("dt:text-is('GPUs') + dd").inner_text() in ("0", "1")
        assert panel.locator("dt:text-is('Node') + dd").inner_text() != ""
        screenshot(page, "run-running")
        gate.write_text("go")
        page.get_by_role("button", name="work: success").wait_for()
        log.get_by_text("after the gate").wait_for()
        page.locator(".run-head h1 .status", has_text="success").wait_for()
        with page.expect_download() as download:
            page.get_by_role("link", name="result.txt").click()
        assert Path(download.value.path()).read_text() == "artifact body\n"
        assert download.value.suggested_filename == "result.txt"
        screenshot(page, "run-success")


def test_a_running_run_is_cancelled_from_its_page(served: Served, browser: Any,
                                                  admin: httpx.Client, tmp_path: Path) -> None:
    with signed_in(browser, served.url, served.token) as page:
        run_id = start(admin, "live", gate=str(tmp_path / "never"))
        page.goto(f"{served.url}/runs/{run_id}")
        page.get_by_role("button", name="work: running").wait_for()
        page.get_by_role("button", name="Cancel run").click()
        page.locator(".run-head h1 .status", has_text="cancelled").wait_for(timeout=60_000)
        page.get_by_role("button", name="work: cancelled").wait_for()
        assert page.get_by_role("button", name="Cancel run").count() == 0
    assert wait_run(admin, run_id)["status"] == "cancelled"


def test_the_runs_list_updates_by_itself_and_filters(served: Served, browser: Any,
                                                     admin: httpx.Client,
                                                     tmp_path: Path) -> None:
    with signed_in(browser, served.url, served.token) as page:
        page.goto(served.url + "/runs?flow=typed")
        rows = page.locator("tbody tr")
        rows.first.wait_for()
        before = rows.count()
        run_id = start(admin, "typed", epochs=1)
        page.locator(f"tr[data-run='{run_id}']").wait_for()
        assert rows.count() == before + 1
        page.locator(f"tr[data-run='{run_id}'] .status", has_text="success").wait_for()
        page.get_by_label("Status").select_option("failure")
        page.wait_for_url(re.compile(r"status=failure"))
        page.get_by_text("No runs.").wait_for()
        screenshot(page, "runs")


# ------------------------------------------------------------------ sweeps and reruns


def test_a_sweep_table_plot_csv_and_rerunning_the_one_failed_cell(
        served: Served, browser: Any, admin: httpx.Client, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    run_id = start(admin, "sweep", marker=str(marker))
    assert wait_run(admin, run_id)["status"] == "failure"
    with signed_in(browser, served.url, served.token) as page:
        page.goto(f"{served.url}/runs/{run_id}/sweep")
        table = page.locator("table.sweep")
        table.locator("caption", has_text="6 cells of train").wait_for()
        assert table.locator("tbody tr").count() == 6
        page.get_by_role("button", name="score").click()  # sort by the output, ascending
        scores = table.locator("tbody tr td:last-child").all_inner_texts()
        assert scores == ["32", "32", "64", "64", "128", ""]
        page.get_by_role("button", name="score ▲").click()  # descending
        assert table.locator("tbody tr td:last-child").all_inner_texts()[:2] == ["128", "64"]
        plot = page.get_by_role("img", name="score against lr for 5 cells")
        assert plot.locator("canvas").count() >= 1
        page.get_by_label("against axis").select_option("width")
        page.get_by_role("img", name="score against width for 5 cells").wait_for()
        screenshot(page, "sweep")
        with page.expect_download() as download:
            page.get_by_role("button", name="Download CSV").click()
        lines = Path(download.value.path()).read_text().splitlines()
        assert lines[0] == "cell,lr,width,status,duration_s,score"
        assert len(lines) == 7
        assert sorted(line.split(",")[5] for line in lines[1:]) == [
            "", "128", "32", "32", "64", "64"]

        page.goto(f"{served.url}/runs/{run_id}")
        failed = page.get_by_role("button", name=re.compile(r"lr=0\.01, width=64: failure$"))
        failed.click()
        panel = page.get_by_role("region", name="Job")
        page.get_by_role("region", name="Log").get_by_text("no marker yet").wait_for()
        assert panel.locator(".step").inner_text().startswith("fit\nfailure (exit 3)") or \
            "failure (exit 3)" in panel.locator(".step").inner_text()
        marker.write_text("now")
        panel.get_by_role("button", name="Rerun this cell").click()
        page.wait_for_url(re.compile(r"/runs/(?!" + re.escape(run_id) + ")[^/]+$"))
        new_id = page.url.rsplit("/", 1)[1]
        page.locator(".run-head h1 .status", has_text="success").wait_for(timeout=60_000)
        assert page.locator(".graph .cell.s-success").count() == 6
        screenshot(page, "rerun")
    rerun = admin.get(f"/api/v1/runs/{new_id}").json()
    assert rerun["rerun_of"] == run_id and rerun["status"] == "success"


def test_test_results_show_the_failed_ones_first_with_their_message(
        served: Served, browser: Any, admin: httpx.Client) -> None:
    run_id = start(admin, "tested")
    wait_run(admin, run_id)
    with signed_in(browser, served.url, served.token) as page:
        page.goto(f"{served.url}/runs/{run_id}")
        results = page.get_by_role("region", name="Test results")
        results.wait_for()
        assert results.locator("p").first.inner_text() == \
            "2 tests: 1 passed, 1 failed, 0 errors, 0 skipped"
        rows = results.locator("tbody tr")
        assert rows.nth(0).locator("td").first.inner_text().startswith(
            "calc.test_divides\nexpected 2, got 3")
        assert rows.nth(1).locator("td").first.inner_text() == "calc.test_adds"


# ------------------------------------------------------------------ logs


@pytest.mark.timeout(400)
def test_a_100000_line_log_stays_usable(served: Served, browser: Any,
                                        admin: httpx.Client) -> None:
    push(admin, "loud", "name: loud\njobs:\n  talk:\n    steps:\n"
                        "      - run: seq 1 100000 | sed 's/^/line /'\n")
    run_id = start(admin, "loud")
    assert wait_run(admin, run_id, timeout=300)["status"] == "success"
    with signed_in(browser, served.url, served.token) as page:
        page.goto(f"{served.url}/runs/{run_id}")
        log = page.get_by_role("region", name="Log")
        log.locator(".log-line", has_text=re.compile(r"line 100000$")).wait_for()
        # only the lines in sight are in the page
        assert log.locator(".log-line").count() < 200
        assert page.evaluate(LOG_LINES)[-1] == "line 100000"
        search = page.get_by_label("Search the log")
        search.fill("line 4242")  # 4242 and 42420 to 42429
        assert page.locator(".log-tools [role=status]").inner_text() == "1 of 11"
        current = log.locator(".log-line.current")
        assert current.inner_text() == "4242line 4242"
        search.press("Enter")
        assert page.locator(".log-tools [role=status]").inner_text() == "2 of 11"
        assert current.inner_text() == "42420line 42420"
        search.press("Shift+Enter")
        assert current.inner_text() == "4242line 4242"
        assert current.locator("mark").inner_text() == "line 4242"
        screenshot(page, "log-100k")


def test_the_log_stream_reconnects_without_losing_or_repeating_a_line(
        served: Served, browser: Any, admin: httpx.Client, tmp_path: Path) -> None:
    push(admin, "drip", "name: drip\ntriggers:\n  manual:\n    inputs:\n"
                        "      dir: {type: string, required: true}\n"
                        "jobs:\n  drip:\n    steps:\n      - env:\n"
                        "          DIR: ${{ inputs.dir }}\n"
                        "        run: |\n"
                        "          for i in $(seq 1 40); do\n"
                        "            echo \"drop $i\"\n"
                        "            [ $i = 10 ] && while [ ! -e \"$DIR/go\" ]; do sleep 0.05; done\n"
                        "            sleep 0.02\n"
                        "          done\n")
    run_id = start(admin, "drip", dir=str(tmp_path))
    relay = Relay(served.port)  # the page reaches the service through it
    try:
        with signed_in(browser, relay.url, served.token) as page:
            streams: list[Any] = []
            page.on("request", lambda r: streams.append(r) if "/events" in r.url else None)
            page.goto(f"{relay.url}/runs/{run_id}")
            log = page.get_by_role("region", name="Log")
            log.locator(".log-line", has_text=re.compile(r"drop 10$")).wait_for()
            relay.drop()  # the connection goes, while the step goes on printing
            (tmp_path / "go").write_text("")
            page.locator(".run-head h1 .status", has_text="success").wait_for(timeout=60_000)
            assert page.evaluate(LOG_LINES) == [f"drop {i}" for i in range(1, 41)]
            # it did lose the stream, and came back after the last event it had
            assert len(streams) >= 2, streams
            resumed = streams[1].all_headers().get("last-event-id")
            assert resumed is not None and int(resumed) > 10, resumed
    finally:
        relay.close()


# ------------------------------------------------------------------ secrets


def test_secrets_are_set_and_deleted_and_their_value_never_reaches_the_page(
        served: Served, browser: Any, admin: httpx.Client) -> None:
    value = "s3cr3t-Value-That-Must-Not-Leak"
    bodies: list[bytes] = []
    with signed_in(browser, served.url, served.token) as page:
        def keep(route: Any) -> None:
            answer = route.fetch()
            bodies.append(answer.body())
            route.fulfill(response=answer)

        page.route("**/*", keep)
        page.on("dialog", lambda dialog: dialog.accept())
        page.get_by_role("link", name="Secrets").click()
        page.get_by_label("Name").fill("CLOUD_KEY")
        page.get_by_label("Value").fill(value)
        page.get_by_role("button", name="Save secret").click()
        row = page.get_by_role("row").filter(has_text="CLOUD_KEY")
        row.wait_for()
        assert page.get_by_label("Value").input_value() == ""
        screenshot(page, "secrets")
        run_id = start(admin, "secretive")
        assert wait_run(admin, run_id)["status"] == "success"
        page.goto(f"{served.url}/runs/{run_id}")
        page.get_by_role("region", name="Log").get_by_text("the key is ***").wait_for()
        page.locator(".run-head h1 .status", has_text="success").wait_for()
        page.goto(f"{served.url}/runs/{run_id}/sweep")
        page.get_by_text("This run has no matrix job.").wait_for()
        page.goto(served.url + "/secrets")
        row.wait_for()
        row.get_by_role("button", name="Delete secret CLOUD_KEY").click()
        page.get_by_text("No secrets yet.").wait_for()
        page.unroute("**/*")
    assert bodies, "no response was seen"
    leaked = [b[:200] for b in bodies if value.encode() in b]
    assert leaked == []


def test_variables_are_set_listed_and_deleted(served: Served, browser: Any,
                                              admin: httpx.Client) -> None:
    with signed_in(browser, served.url, served.token) as page:
        page.on("dialog", lambda dialog: dialog.accept())
        page.get_by_role("link", name="Variables").click()
        page.get_by_label("Name").fill("REGION")
        page.get_by_label("Value").fill("eu-west-1")
        page.get_by_role("button", name="Save variable").click()
        row = page.get_by_role("row").filter(has_text="REGION")
        assert row.locator("td").first.inner_text() == "eu-west-1"
        assert admin.get("/api/v1/variables/REGION").json()["value"] == "eu-west-1"
        screenshot(page, "variables")
        page.get_by_label("Name").fill("9bad")
        page.get_by_role("button", name="Save variable").click()
        assert page.locator("[id$='-error']").first.inner_text() == \
            "Letters, digits and _, not starting with a digit."
        row.get_by_role("button", name="Delete variable REGION").click()
        page.get_by_text("No variables yet.").wait_for()
    assert admin.get("/api/v1/variables/REGION").status_code == 404


# ------------------------------------------------------------------ every page, both widths


def test_every_page_fits_both_widths_names_its_controls_and_is_screenshotted(
        served: Served, browser: Any, admin: httpx.Client, tmp_path: Path) -> None:
    sweep = start(admin, "sweep", marker=str(tmp_path / "none"))
    wait_run(admin, sweep)
    pages = {"flows": "/flows", "flow": "/flows/sweep", "start": "/flows/typed/start",
             "runs-list": "/runs", "run": f"/runs/{sweep}", "sweep-view": f"/runs/{sweep}/sweep",
             "secrets-page": "/secrets", "variables-page": "/variables"}
    for width in WIDTHS:
        with signed_in(browser, served.url, served.token, width=width) as page:
            for name, path in pages.items():
                page.goto(served.url + path)
                page.locator("main h1").first.wait_for()
                page.wait_for_load_state("networkidle") if name not in ("run", "sweep-view",
                                                                        "runs-list") else None
                if name == "run":
                    page.locator(".run-head .status", has_text="failure").wait_for()
                if name == "sweep-view":
                    page.locator("table.sweep").wait_for()
                if name == "flow":
                    page.locator(".cm-content").wait_for()
                assert page.evaluate(PAGE_OVERFLOW) <= 0, (name, width)
                assert page.evaluate(UNNAMED_CONTROLS) == [], (name, width)
                screenshot(page, name)
    with signed_in(browser, served.url, served.token, width=390) as page:
        page.goto(served.url + "/flows")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"


def test_a_page_that_does_not_exist_says_so(served: Served, browser: Any) -> None:
    with signed_in(browser, served.url, served.token) as page:
        page.goto(served.url + "/runs/no-such-run")
        assert page.get_by_role("alert").inner_text() == "no run with id 'no-such-run'"
        page.goto(served.url + "/flows/a/b/c")
        page.get_by_role("heading", name="Not found").wait_for()
        # the API's own JSON stays JSON
        answer = json.loads(page.evaluate(
            "fetch('/api/v1/flows/nope', {headers: {'X-Flowray-CSRF': "
            "localStorage.getItem('flowray-csrf')}}).then((r) => r.text())"))
        assert answer == {"error": "no flow named 'nope'"}


def test_signing_in_again_in_another_tab_keeps_the_first_tab_signed_in(
        served: Served, browser: Any) -> None:
    with signed_in(browser, served.url, served.token) as first:
        second = first.context.new_page()
        second.goto(served.url + "/sign-in")
        second.get_by_label("Token").fill(served.token)
        second.get_by_role("button", name="Sign in").click()
        second.get_by_role("link", name="New flow").wait_for()
        # the first tab's next request meets the new sign-in's cookie: it takes the new value
        first.get_by_role("link", name="Runs").first.click()
        first.get_by_role("heading", name="Runs").wait_for()
        assert "sign-in" not in first.url
        second.reload()
        second.get_by_role("link", name="New flow").wait_for()
        assert "sign-in" not in second.url
