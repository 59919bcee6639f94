"""The console in a real browser: Debian's chromium, driven by Playwright, over a real local stack
that trained a real model (one upload, shared by the module), served as ``sluice up`` serves it.

Screenshots land in ``tests/artifacts/console/`` (gitignored) for a person to look at.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest

from functions.shared.registry_dynamodb import DynamoDBRegistry
from infra.cli import Deployment, console_data
from infra.console.server import Console
from infra.local.local_file import LOCAL_FILE
from infra.local.stack import LocalStack, StackConfig, free_port
from infra.topology import Topology
from tests.builders import churn_frame, contract_bytes, csv_bytes
from tests.processes import ChildProcess

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts" / "console"
WAIT_SECONDS = 240
API_KEY = "console-key"


def chromium_binary() -> str | None:
    """Debian's chromium (``make test`` installs it where it can); None when absent."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A local stack with one live churn model, some captured traffic and a drift report."""
    saved = dict(os.environ)  # the stack sets its functions' environment process-wide
    os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    config = StackConfig(
        topology=Topology(stage="console"),
        aws_port=free_port(),
        api_port=free_port(),
        api_key=API_KEY,
        state_dir=tmp_path_factory.mktemp("console") / ".sluice",
        environment={  # every request captured, and written within a second
            "CAPTURE_SAMPLE_RATE": "1",
            "CAPTURE_MAX_AGE_SECONDS": "0.5",
            "CAPTURE_FLUSH_INTERVAL_SECONDS": "0.2",
        },
    )
    try:
        with LocalStack(config, log=lambda line: None) as running:
            _train(running)
            yield running
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _train(stack: LocalStack) -> None:
    s3, topology = stack.client("s3"), stack.config.topology
    s3.put_object(Bucket=topology.raw_bucket, Key="churn/contract.json", Body=contract_bytes())
    frame = churn_frame(600, seed=4)
    s3.put_object(Bucket=topology.raw_bucket, Key="churn/data/jan.csv", Body=csv_bytes(frame))
    registry = DynamoDBRegistry(stack.client("dynamodb"), topology.registry_table)
    deadline = time.monotonic() + WAIT_SECONDS
    while not stack.runs:
        assert time.monotonic() < deadline, "no run finished"
        time.sleep(0.2)
    assert registry.live("churn") is not None, stack.runs
    metadata = urllib.request.Request(
        f"{stack.api_url}/v1/models/churn/metadata", headers={"x-api-key": API_KEY}
    )
    with urllib.request.urlopen(metadata, timeout=30) as response:
        features = [f["name"] for f in json.loads(response.read())["features"]]
    instances = json.loads(frame[features].head(150).to_json(orient="records"))
    request = urllib.request.Request(
        f"{stack.api_url}/v1/models/churn:predict",
        data=json.dumps({"instances": instances}).encode(),
        headers={"content-type": "application/json", "x-api-key": API_KEY},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
    for _ in range(50):  # the capture is written within a second
        [drift] = stack.run_drift()
        if drift["status"] == "measured":
            break
        time.sleep(0.2)
    assert drift["status"] == "measured", drift


@pytest.fixture(scope="module")
def console(stack: LocalStack) -> Iterator[str]:
    """The console as ``sluice up`` serves it: over the deployment local.json names."""
    local = json.loads((stack.config.state_dir / LOCAL_FILE).read_text())
    deployment = Deployment(
        stage=local["stage"],
        region=local["region"],
        registry_table=local["registry_table"],
        endpoint_url=local["aws_endpoint_url"],
        source=stack.config.state_dir / LOCAL_FILE,
        raw_bucket=local["raw_bucket"],
        artifacts_bucket=local["artifacts_bucket"],
    )
    with Console(console_data(deployment, stack.config.state_dir)) as running:
        yield running.url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no chromium binary on PATH: `make test` installs Debian's where it is root")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: chromium refuses to sandbox itself as root (CI runs as root)
        launched = playwright.chromium.launch(executable_path=binary, args=["--no-sandbox"])
        yield launched
        launched.close()


def _get(url: str, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(url, method=method, data=b"{}" if method != "GET" else None)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_every_link_from_the_index_answers_200_in_the_browser(browser: Any, console: str) -> None:
    # Given the console's index in a real browser
    page = browser.new_page()
    seen: set[str] = set()
    queue = [console]
    statuses: dict[str, int] = {}
    # When every same-site link reachable from it is followed
    while queue:
        url = queue.pop()
        if url in seen:
            continue
        seen.add(url)
        response = page.goto(url)
        statuses[url] = response.status
        for href in page.eval_on_selector_all("a[href]", "as => as.map(a => a.href)"):
            target = urljoin(url, href).split("#", 1)[0]
            if urlsplit(target).netloc == urlsplit(console).netloc and target not in seen:
                queue.append(target)
    # Then each one answers 200, and the crawl reached every kind of page
    assert statuses and all(code == 200 for code in statuses.values()), statuses
    paths = {urlsplit(u).path for u in statuses}
    for expected in (
        "/",
        "/runs",
        "/datasets/churn",
        "/datasets/churn/versions/1",
        "/datasets/churn/versions/1/report",
        "/datasets/churn/drift",
        "/datasets/churn/retraining",
    ):
        assert expected in paths, sorted(paths)
    assert any(p.startswith("/runs/") for p in paths), sorted(paths)
    assert any(p.startswith("/datasets/churn/drift/") for p in paths), sorted(paths)
    page.close()


def test_the_index_shows_the_live_version_and_its_metric(browser: Any, console: str) -> None:
    page = browser.new_page()
    page.goto(console)
    row = page.locator("tbody tr", has_text="churn")
    cells = row.locator("td").all_inner_texts()
    assert cells[0] == "1", cells  # the live version
    metric, value = cells[1].split()
    assert metric == "f1_macro" and 0.0 <= float(value) <= 1.0, cells
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "index.png", full_page=True)
    page.goto(urljoin(console, "/datasets/churn"))
    assert "promoted" in page.locator("table").nth(1).inner_text()  # the audit trail
    page.screenshot(path=ARTIFACTS / "dataset.png", full_page=True)
    page.close()


def test_the_model_report_renders_with_its_figures(browser: Any, console: str) -> None:
    page = browser.new_page()
    page.goto(urljoin(console, "/datasets/churn/versions/1/report"))
    figures = page.locator("svg")
    assert figures.count() >= 3
    boxes = [figures.nth(i).bounding_box() for i in range(figures.count())]
    assert all(box and box["width"] > 0 and box["height"] > 0 for box in boxes), boxes
    assert all(figures.nth(i).locator("*").count() > 0 for i in range(figures.count()))
    page.screenshot(path=ARTIFACTS / "report.png", full_page=True)
    page.goto(urljoin(console, "/datasets/churn/drift"))
    assert page.locator("tbody tr").count() >= 1
    page.screenshot(path=ARTIFACTS / "drift.png", full_page=True)
    runs = page.goto(urljoin(console, "/runs"))
    assert runs.status == 200
    page.locator("tbody a").first.click()
    assert "Promote" in page.locator("main").inner_text()  # the state path and its timings
    page.screenshot(path=ARTIFACTS / "run.png", full_page=True)
    page.close()


def test_tab_reaches_the_skip_link_first_and_it_moves_focus_to_main(
    browser: Any, console: str
) -> None:
    page = browser.new_page()
    page.goto(console)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    page.close()


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("/datasets/nosuch", "no dataset named 'nosuch'"),
        ("/datasets/churn/versions/9", "no model version 9"),
        ("/datasets/churn/versions/x1", "no model version of 'churn' named 'x1'"),
        ("/datasets/..%2Fetc/drift", "no dataset named '../etc'"),
        ("/datasets/churn/drift/2020-01-01T0000Z", "no drift report 2020-01-01T0000Z"),
        ("/runs/nosuch-run", "no run named 'nosuch-run'"),
        ("/elsewhere", "no page at /elsewhere"),
    ],
)
def test_an_unknown_name_is_a_404_page_naming_it(console: str, path: str, named: str) -> None:
    status, body = _get(urljoin(console, path))
    assert status == 404 and named in body.replace("&#x27;", "'"), body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_the_console_is_read_only(console: str, method: str) -> None:
    status, body = _get(urljoin(console, "/datasets/churn"), method)
    assert status == 405 and "read-only" in body


def test_sluice_up_serves_the_console_and_prints_its_url(tmp_path: Path) -> None:
    # Given `sluice up` started as a user starts it, its console on a port of their choosing
    port = free_port()
    command = [sys.executable, "-m", "infra.cli", "up", "--state-dir", str(tmp_path / ".sluice")]
    command += ["--aws-port", str(free_port()), "--api-port", str(free_port())]
    command += ["--console-port", str(port)]
    up = ChildProcess(command, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        up.wait_ready(60)
        # Then it printed the console's URL, on loopback, and the page there answers
        url = f"http://127.0.0.1:{port}/"
        assert f"console  {url} " in up.said, up.said
        status, body = _get(url)
        assert status == 200 and "<h1>Datasets</h1>" in body, body
        assert "No dataset has a model version yet" in body
    finally:
        up.process.send_signal(signal.SIGINT)
        up.process.wait(timeout=60)
    assert up.process.returncode == 0, up.said + up.rest()


@pytest.mark.parametrize("host", ["evil.example:8090", "127.0.0.1.evil.example", "", "10.0.0.1"])
def test_a_request_for_another_host_is_refused_421_dns_rebinding(console: str, host: str) -> None:
    # Given the console served on loopback
    port = urlsplit(console).port
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        # When a page of another site, its name re-pointed at 127.0.0.1, asks for the index
        connection.putrequest("GET", "/", skip_host=True)
        if host:
            connection.putheader("Host", host)
        connection.endheaders()
        refused = connection.getresponse()
        body = refused.read().decode()
        # Then it is refused, and none of the console's data is in the answer
        assert refused.status == 421, body
        assert "churn" not in body
        # And the console's own names are answered on the same connection
        for own in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST"):
            connection.request("GET", "/", headers={"Host": own})
            answered = connection.getresponse()
            assert answered.status == 200 and "churn" in answered.read().decode()
    finally:
        connection.close()
