"""End-to-end tests in headless Chromium: the app served on localhost from a small
pipeline output, driven like a user. Screenshots go to ``reports/screenshots/dashboard/``.

Skipped locally when Chromium or chromedriver is missing; in CI (``CI=true``) they must run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from dashboard.app import Settings, create_app
from dashboard.auth import hash_password
from tests.dashboard.conftest import make_pipeline

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "reports" / "screenshots" / "dashboard"
CHROMIUM = os.environ.get("HISTOXAI_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("HISTOXAI_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = (
    "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking "
    "--disable-component-update --disable-sync --disable-dev-shm-usage --window-size=1440,900"
).split()
TIMEOUT_S = 20


def _chromium_present() -> bool:
    return all(Path(p).exists() or shutil.which(p) for p in (CHROMIUM, CHROMEDRIVER))


@pytest.fixture(scope="module")
def browser():
    if not _chromium_present():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"browser tests must run in CI: {CHROMIUM} or {CHROMEDRIVER} is missing")
        pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER}")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.remote.remote_connection import RemoteConnection

    if hasattr(RemoteConnection, "set_timeout"):
        # selenium 3.141 hands urllib3 2.x a sentinel timeout unless one is set.
        RemoteConnection.set_timeout(60)
    options = Options()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="histoxai-chromium-")
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    try:
        from selenium.webdriver.chrome.service import Service

        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # selenium 4
    except TypeError:
        driver = webdriver.Chrome(executable_path=CHROMEDRIVER, options=options)  # selenium 3
    driver.set_page_load_timeout(60)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@contextlib.contextmanager
def _serve(app):
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args, **kwargs):
            pass

    server = make_server("127.0.0.1", 0, app.server, threaded=True, request_handler=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_pipeline(tmp_path_factory.mktemp("e2e"), n_samples=2, grid=6, size=64)


@pytest.fixture(scope="module")
def site(run):
    app = create_app(Settings(run["patches"], saliency_root=run["saliency"], reports_dir=run["reports"]))
    with _serve(app) as url:
        yield url, app.catalog


# ----------------------------------------------------------------------------- helpers


def _by(css: str):
    from selenium.webdriver.common.by import By

    return By.CSS_SELECTOR, css


def wait_for(driver, condition, what: str, timeout: float = TIMEOUT_S):
    """Poll ``condition(driver)`` until truthy; fail naming ``what``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(Exception):
            value = condition(driver)
            if value:
                return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (at {driver.current_url})")


def srcs(driver, css: str = "#page-content .tile img") -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(i => i.getAttribute('src'))", css
    )


def texts(driver, css: str) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.innerText)", css
    )


def images_loaded(driver) -> bool:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#page-content img, .viewer img'))"
        ".every(i => i.offsetParent === null || (i.complete && i.naturalWidth > 0))"
    )


def query(driver) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(driver.current_url).query).items()}


def open_page(driver, url: str, ready_css: str) -> None:
    driver.get(url)
    wait_for(driver, lambda d: d.find_elements(*_by(ready_css)), ready_css)
    wait_for(driver, images_loaded, "images to load")


def shot(driver, name: str) -> Path:
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def severe_logs(driver) -> list:
    with contextlib.suppress(Exception):
        return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return []


def first_tile_title(driver) -> str:
    return texts(driver, "#page-content .tile .pid")[0]


def click_option(driver, dropdown_id: str, label: str) -> None:
    driver.find_element(*_by(f"#{dropdown_id}")).click()
    options = wait_for(
        driver,
        lambda d: [
            o for o in d.find_elements(*_by(".dash-dropdown-option")) if o.text == label and o.is_displayed()
        ],
        f"option {label!r} of #{dropdown_id}",
    )
    options[0].click()


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    "name,path,ready",
    [
        ("main", "/", ".card"),
        ("single-target", "/single?target=md&variant=gradcampp&y=1.3,&sort=absdelta&desc=1", ".grid .tile"),
        ("multiple-targets", "/targets?target=md&variant=layercam", ".table-grid .tile"),
        ("multiple-methods", "/methods?target=md&variant=gradcampp", ".table-grid .tile"),
    ],
)
def test_every_page_loads(browser, site, name, path, ready):
    url, _ = site
    severe_logs(browser)  # drop entries of earlier tests
    open_page(browser, url + path, ready)
    wait_for(browser, lambda d: d.find_elements(*_by("#hist-y .bars, #hist-y .trace")), "histograms")
    shot(browser, name)
    assert browser.title == "histoxai dashboard"
    assert severe_logs(browser) == []


def test_a_filter_narrows_the_grid(browser, site):
    url, catalog = site
    open_page(browser, url + "/single?target=md&variant=gradcampp&per=96", ".grid .tile")
    n_all = len(catalog.tables["md"])
    assert len(srcs(browser)) == n_all
    browser.find_element(*_by("#split input[value='test']")).click()
    n_test = int((catalog.tables["md"].split == 2).sum())
    wait_for(browser, lambda d: len(srcs(d)) == n_test, f"{n_test} test patches")
    assert query(browser)["split"] == "test"
    assert texts(browser, "#status")[0].startswith(f"{n_test} of {n_all} patches match")

    from selenium.webdriver.common.keys import Keys

    thumb = browser.find_element(*_by("#range-y .dash-slider-thumb-1"))
    thumb.click()
    for _ in range(3):
        thumb.send_keys(Keys.PAGE_UP)
    wait_for(browser, lambda d: "y" in query(d), "the y range in the URL")
    lo = float(query(browser)["y"].split(",")[0])
    y = catalog.tables["md"].values["y"][catalog.tables["md"].split == 2]
    wait_for(browser, lambda d: len(srcs(d)) == int((y >= lo).sum()), "the y filter to narrow the grid")
    assert len(srcs(browser)) < n_test


def test_the_method_switch_changes_the_overlays(browser, site):
    url, _ = site
    open_page(browser, url + "/single?target=md&variant=gradcampp", ".grid .tile")
    before = srcs(browser)
    assert all("/gradcampp/" in s for s in before)
    click_option(browser, "method", "layercam")
    wait_for(browser, lambda d: all("/layercam/" in s for s in srcs(d)), "layercam overlays")
    after = srcs(browser)
    assert len(after) == len(before) and after != before
    assert query(browser)["variant"] == "layercam"
    wait_for(browser, images_loaded, "images to load")


def test_pagination_moves(browser, site):
    url, _ = site
    open_page(browser, url + "/single?target=md&variant=gradcampp&per=24", ".grid .tile")
    assert first_tile_title(browser) == "#0"
    browser.find_element(*_by("#next")).click()
    wait_for(browser, lambda d: first_tile_title(d) == "#24", "page 2")
    assert query(browser)["page"] == "2"
    assert browser.execute_script("return document.getElementById('page').value") == "2"
    browser.find_element(*_by("#prev")).click()
    wait_for(browser, lambda d: first_tile_title(d) == "#0", "page 1 again")


def test_a_url_reopens_the_same_view(browser, site):
    url, _ = site
    open_page(browser, url + "/single?target=fa&variant=gradcampp&per=24", ".grid .tile")
    browser.find_element(*_by("#split input[value='train']")).click()
    wait_for(browser, lambda d: query(d).get("split") == "train", "split=train")
    click_option(browser, "method", "smoothgrad")
    wait_for(browser, lambda d: all("/smoothgrad_s0.1/" in s for s in srcs(d)), "smoothgrad overlays")
    browser.find_element(*_by("#next")).click()
    wait_for(browser, lambda d: query(d).get("page") == "2", "page 2")
    wait_for(browser, lambda d: first_tile_title(d) != "#0", "page 2 tiles")
    shared, tiles, status = browser.current_url, srcs(browser), texts(browser, "#status")
    browser.get("about:blank")
    open_page(browser, shared, ".grid .tile")
    wait_for(browser, lambda d: srcs(d) == tiles, "the same tiles")
    assert texts(browser, "#status") == status
    assert browser.execute_script("return document.querySelector('#split input:checked').value") == "train"
    assert texts(browser, "#variant .dash-dropdown-value")[0].startswith("smoothgrad_s0.1")


def test_page_links_keep_the_view_and_back_restores_it(browser, site):
    url, _ = site
    open_page(browser, url + "/single?target=fa&variant=layercam&split=val", ".grid .tile")
    browser.find_element(*_by("#nav-methods")).click()
    wait_for(browser, lambda d: d.find_elements(*_by(".table-grid .tile")), "the methods page")
    assert urlsplit(browser.current_url).path == "/methods"
    assert query(browser) == {"target": "fa", "variant": "layercam", "split": "val"}
    assert texts(browser, "#page-content h2")[0] == "fa · mdfa"
    browser.find_element(*_by("#split input[value='all']")).click()
    wait_for(browser, lambda d: "split" not in query(d), "split=all")
    browser.back()
    wait_for(browser, lambda d: query(d).get("split") == "val", "the previous URL")
    wait_for(
        browser,
        lambda d: d.execute_script("return document.querySelector('#split input:checked').value") == "val",
        "the split control to follow the URL",
    )
    browser.find_element(*_by("#sidebar-toggle")).click()
    wait_for(browser, lambda d: not d.find_element(*_by("#sidebar")).is_displayed(), "the sidebar to hide")
    browser.find_element(*_by("#sidebar-toggle")).click()
    wait_for(browser, lambda d: d.find_element(*_by("#sidebar")).is_displayed(), "the sidebar to show")


def test_a_tile_opens_large_raw_and_overlay(browser, site):
    url, _ = site
    open_page(browser, url + "/single?target=md&variant=layercam&cmap=magma", ".grid .tile")
    browser.find_elements(*_by("#page-content .tile"))[5].click()
    wait_for(
        browser, lambda d: "hidden" not in d.find_element(*_by("#viewer")).get_attribute("class"), "viewer"
    )
    big = wait_for(browser, lambda d: srcs(d, "#viewer img.big"), "large images")
    assert big[0] == "/img/patch/5.png" and "/md/layercam/5.png?cmap=magma" in big[1]
    wait_for(browser, images_loaded, "large images to load")
    shot(browser, "tile-viewer")
    browser.find_element(*_by("#viewer-close")).click()
    wait_for(
        browser, lambda d: "hidden" in d.find_element(*_by("#viewer")).get_attribute("class"), "viewer closed"
    )


def test_no_match_says_so(browser, site):
    url, _ = site
    open_page(browser, url + "/single?target=md&variant=gradcampp&y=100,200", ".message")
    assert "No patch matches the filters" in texts(browser, ".message")[0]
    shot(browser, "no-match")


def test_a_missing_store_names_the_path(browser, tmp_path):
    app = create_app(Settings(tmp_path / "no-patches", saliency_root=tmp_path / "no-saliency"))
    with _serve(app) as url:
        for path in ("/", "/single"):
            open_page(browser, url + path, "#problems")
            text = texts(browser, "#problems")[0]
            assert str(tmp_path / "no-patches") in text and "index.parquet" in text
            assert "Traceback" not in browser.page_source
        shot(browser, "missing-store")


def test_login_rejects_a_wrong_password(browser, run):
    settings = Settings(run["patches"], saliency_root=run["saliency"], users={"ana": hash_password("right")})
    with _serve(create_app(settings)) as url:
        browser.delete_all_cookies()
        browser.get(url + "/single?target=fa")
        wait_for(browser, lambda d: urlsplit(d.current_url).path == "/login", "the login form")
        browser.find_element(*_by("#user")).send_keys("ana")
        browser.find_element(*_by("#password")).send_keys("wrong")
        browser.find_element(*_by("#login-submit")).click()
        error = wait_for(browser, lambda d: texts(d, "#login-error"), "the error message")
        assert "Wrong user name or password" in error[0]
        shot(browser, "login")
        assert not browser.find_elements(*_by(".grid"))
        browser.find_element(*_by("#user")).send_keys("ana")
        browser.find_element(*_by("#password")).send_keys("right")
        browser.find_element(*_by("#login-submit")).click()
        wait_for(browser, lambda d: d.find_elements(*_by(".grid .tile")), "the grid after login")
        assert query(browser)["target"] == "fa"
        browser.delete_all_cookies()
