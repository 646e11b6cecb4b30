"""The dashboard in a real headless browser (Debian's chromium driven by selenium) against a real `shoal up`
cluster: without a session the browser is refused with what to do; `shoal ui` prints a login link, the browser
(no client certificate) opens it and lands on the live page without console errors; a service created through
the API appears with its counts, a scale shows up live (no reload), a killed task's error appears — and the
nodes, raft members and subsystems are there; the link does not work twice.

Skipped, saying why, without chromium + chromium-driver or selenium; `.ci/run` installs them
(scripts/browser.sh) and sets SHOAL_REQUIRE_BROWSER=1, which makes their absence a failure."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Cluster, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(240)]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
except ImportError:  # pragma: no cover - the test extra installs it
    webdriver = None

if webdriver is None or not CHROMIUM or not CHROMEDRIVER:
    WHY = ("the dashboard's browser test needs chromium, chromium-driver (apt) and selenium (the test extra): "
           "`scripts/browser.sh` installs them")
    if os.environ.get("SHOAL_REQUIRE_BROWSER") == "1":  # .ci/run: a missing browser is a failure, not a skip
        pytest.fail(WHY, pytrace=False)
    pytest.skip(WHY, allow_module_level=True)


@pytest.fixture
def cluster(shared: Cluster) -> Cluster:
    """The session's shared cluster (tests/e2e/conftest.py): this module only creates its own objects and reads."""
    return shared


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1366,768", f"--user-data-dir={tmp_path / 'chromium'}"):
        opts.add_argument(arg)
    # the gateway's certificate is signed by the cluster's own root, which this fresh profile does not trust
    # (a user imports ca.pem or accepts the warning); the connection is still TLS, the cookie still Secure
    opts.accept_insecure_certs = True
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: Any, what: str, check: Callable[[], Any], timeout: float = 45.0) -> Any:
    def attempt() -> Any:
        try:
            return check() or None
        except WebDriverException:
            return None
    try:
        return eventually(attempt, timeout, what)
    except AssertionError:
        shot = Path(os.environ.get("SHOAL_UI_SCREENSHOT_DIR", "/tmp")) / "shoal-dashboard-failure.png"
        driver.save_screenshot(str(shot))
        raise AssertionError(f"{what}: not seen in {timeout:g}s (screenshot {shot}); page:\n"
                             f"{driver.find_element(By.TAG_NAME, 'main').text[:3000]}") from None


def replicas(driver: Any, service: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, f'tr[data-service="{service}"] .replicas').text)


def severe(driver: Any) -> list[dict[str, Any]]:
    """The console's errors since the last call (reading the log empties it)."""
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def test_the_dashboard_shows_the_cluster_live(cluster: Cluster, browser: Any) -> None:
    browser.get(cluster.layout.gateway_url + "/ui/")  # no certificate, no session: refused, saying what to do
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "unauthenticated" in body and "shoal ui" in body, body
    refusal = severe(browser)  # the console is captured (so an empty one later means something): the 401 is there
    assert any("401" in e.get("message", "") for e in refusal), refusal
    link = cluster.cli("ui", "-q").stdout.strip()
    assert link.startswith(cluster.layout.gateway_url + "/ui/login?token="), link
    browser.get(link)
    wait_for(browser, "the live dashboard", lambda: browser.current_url.endswith("/ui/")
             and browser.find_element(By.ID, "connection").text == "live")
    cookies = {c["name"]: c for c in browser.get_cookies()}
    assert cookies["shoal_session"]["httpOnly"] and cookies["shoal_session"]["secure"]
    assert cookies["shoal_session"]["sameSite"] == "Strict"
    # what the cluster is made of: its nodes, the raft members with a leader, the subsystems with leases
    wait_for(browser, "two ready nodes", lambda: len(browser.find_elements(
        By.CSS_SELECTOR, "#nodes tbody tr td.state.ready")) == 2)
    wait_for(browser, "three raft members and a leader", lambda: len(browser.find_elements(
        By.CSS_SELECTOR, "#raft tbody tr")) == 3 and browser.find_elements(By.CSS_SELECTOR, "#raft td.role.leader")
        and "leader" in browser.find_element(By.ID, "raft-summary").text)
    wait_for(browser, "an active scheduler", lambda: browser.find_elements(
        By.CSS_SELECTOR, '#instances tr[data-instance^="scheduler/"] td.instance.active'))

    cluster.create_service("dash", 2)
    wait_for(browser, "dash at 2/2", lambda: replicas(browser, "dash") == "2/2")
    wait_for(browser, "the service's creation in the event feed", lambda: any(
        "service create" in li.text and "dash" in li.text
        for li in browser.find_elements(By.CSS_SELECTOR, "#events li")))

    page = browser.find_element(By.TAG_NAME, "html")
    cluster.scale("dash", 3)
    wait_for(browser, "dash at 3/3, live", lambda: replicas(browser, "dash") == "3/3")
    assert browser.find_element(By.TAG_NAME, "html") == page  # the same document: no reload

    victim = cluster.wait_running("dash", 3)[0]
    name = f"dash.{victim['slot']}"
    os.kill(int(victim["status"]["pid"]), signal.SIGKILL)
    err = wait_for(browser, f"the error of the killed task {name}", lambda: next(
        (li.text for li in browser.find_elements(By.CSS_SELECTOR, 'tr[data-service="dash"] ul.errors li')
         if li.text.startswith(name + " failed")), None))
    assert "137" in err or "SIGKILL" in err, err
    wait_for(browser, "dash back at 3/3", lambda: replicas(browser, "dash") == "3/3")
    by_state = {c.get_attribute("data-state"): int(c.get_attribute("data-count"))
                for c in browser.find_elements(By.CSS_SELECTOR, "#task-states .chip")}
    assert by_state.get("running", 0) >= 3 and by_state.get("failed", 0) >= 1, by_state

    errors = severe(browser)  # everything logged since the login
    assert errors == [], errors
    if os.environ.get("SHOAL_UI_SCREENSHOT_DIR"):
        browser.save_screenshot(str(Path(os.environ["SHOAL_UI_SCREENSHOT_DIR"]) / "shoal-dashboard.png"))

    # the link works once: a browser without the cookie cannot use it again
    browser.delete_all_cookies()
    browser.get(link)
    assert "already used" in browser.find_element(By.TAG_NAME, "body").text
    assert not browser.get_cookies()
