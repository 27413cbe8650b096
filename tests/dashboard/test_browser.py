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

from histoxai.config import DashboardConfig
from histoxai.dashboard.app import create_app
from histoxai.dashboard.auth import hash_password
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
    app = create_app(
        DashboardConfig(), run["patches"], saliency_root=run["saliency"], reports_dir=run["reports"]
    )
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


def srcs(driver, css: str = "#page-content .tile img.ov") -> list[str]:
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
    return texts(driver, "#page-content .tile .l")[0].split(" ")[0]


def n_tiles(driver) -> int:
    return driver.execute_script("return document.querySelectorAll('#page-content .tile[data-key]').length")


def update_requests(driver) -> int:
    """Callback round trips so far (Dash's /_dash-update-component requests)."""
    return driver.execute_script(
        "return performance.getEntriesByType('resource')"
        ".filter(e => e.name.indexOf('_dash-update-component') >= 0).length"
    )


def settle(driver, quiet_s: float = 0.6) -> int:
    """Wait until no callback request has started for ``quiet_s``; the count then."""
    last, since = update_requests(driver), time.monotonic()
    while time.monotonic() - since < quiet_s:
        time.sleep(0.1)
        now = update_requests(driver)
        if now != last:
            last, since = now, time.monotonic()
    return last


def viewer_open(driver) -> bool:
    return "hidden" not in driver.find_element(*_by("#viewer")).get_attribute("class")


def fragment(driver) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(driver.current_url).fragment).items()}


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
        ("single-target", "/single?target=md&variant=smoothgrad_s0.2&sort=absdelta&desc=1", ".grid .tile"),
        ("multiple-targets", "/targets?target=md&variant=layercam", ".groups .tile"),
        ("multiple-methods", "/methods?target=md&variant=gradcampp", ".groups .tile"),
    ],
)
def test_every_page_loads(browser, site, name, path, ready):
    url, _ = site
    severe_logs(browser)  # drop entries of earlier tests
    open_page(browser, url + path, ready)
    wait_for(browser, lambda d: d.find_elements(*_by("#hist-y .b")), "histograms")
    shot(browser, name)
    assert browser.title == "histoxai dashboard"
    assert severe_logs(browser) == []


def test_a_filter_narrows_the_grid_in_one_round_trip(browser, site):
    url, catalog = site
    open_page(browser, url + "/single?target=md&variant=gradcampp&per=96", ".grid .tile")
    n_all = len(catalog.tables["md"])
    assert n_tiles(browser) == n_all
    before = settle(browser)
    browser.find_element(*_by("#split input[value='test']")).click()
    n_test = int((catalog.tables["md"].split == 2).sum())
    wait_for(browser, lambda d: n_tiles(d) == n_test, f"{n_test} test patches")
    assert settle(browser) - before == 1, "a filter change is one callback round trip"
    assert query(browser)["split"] == "test"
    assert texts(browser, "#status")[0].startswith(f"{n_test} of {n_all} patches match")

    from selenium.webdriver.common.keys import Keys

    thumb = browser.find_element(*_by("#range-y .dash-slider-thumb-1"))
    thumb.click()
    y = catalog.tables["md"].values["y"][catalog.tables["md"].split == 2]
    lo = None
    for _ in range(12):  # raise the lower end until it cuts test patches, whatever the phantom's units
        thumb.send_keys(Keys.PAGE_UP)
        before = lo
        wait_for(
            browser,
            lambda d: "y" in query(d) and float(query(d)["y"].split(",")[0]) != before,  # noqa: B023
            "the y range in the URL",
        )
        lo = float(query(browser)["y"].split(",")[0])
        if (y >= lo).sum() < n_test:
            break
    wait_for(browser, lambda d: n_tiles(d) == int((y >= lo).sum()), "the y filter to narrow the grid")
    assert n_tiles(browser) < n_test


def test_display_controls_never_ask_the_server(browser, site):
    url, _ = site
    open_page(browser, url + "/single?target=md&variant=smoothgrad_s0.2", ".grid .tile")
    before = settle(browser)
    old = srcs(browser)
    click_option(browser, "cmap", "magma")
    wait_for(browser, lambda d: all("cmap=magma" in s for s in srcs(d)), "magma overlays")
    browser.find_element(*_by("#sign input[value='signed']")).click()
    wait_for(browser, lambda d: all("sign=signed" in s for s in srcs(d)), "signed overlays")
    browser.find_element(*_by("#tile input[value='96']")).click()
    wait_for(
        browser,
        lambda d: d.execute_script("return document.querySelector('#page-content img.ov').width") == 96,
        "96 px tiles",
    )
    browser.find_element(*_by("#alpha .dash-slider-thumb, #alpha [role=slider]")).click()
    from selenium.webdriver.common.keys import Keys

    browser.find_element(*_by("#alpha [role=slider]")).send_keys(Keys.HOME)
    wait_for(browser, lambda d: fragment(d).get("alpha") == "0", "opacity 0 in the URL")
    opacity = browser.execute_script(
        "return getComputedStyle(document.querySelector('#page-content img.ov')).opacity"
    )
    assert float(opacity) == 0.0
    assert settle(browser) == before, "display controls made callback requests"
    assert fragment(browser)["cmap"] == "magma" and fragment(browser)["sign"] == "signed"
    assert srcs(browser) != old
    wait_for(browser, images_loaded, "new overlays to load")
    legend = srcs(browser, "#page-content img.legend")[0]
    assert "sign=signed" in legend and "cmap=magma" in legend
    # a shared link reopens the same look
    shared = browser.current_url
    browser.get("about:blank")
    open_page(browser, shared, ".grid .tile")
    assert all("cmap=magma" in s and "sign=signed" in s for s in srcs(browser))
    assert browser.execute_script("return document.querySelector('#page-content img.ov').width") == 96


def test_tiles_are_few_elements_with_an_ellipsis_and_a_tooltip(browser, site):
    url, _ = site
    open_page(browser, url + "/single?target=cc&variant=gradcampp&sort=absdelta&desc=1", ".grid .tile")
    browser.find_element(*_by("#tile input[value='96']")).click()
    wait_for(
        browser,
        lambda d: d.execute_script("return document.querySelector('#page-content img.ov').width") == 96,
        "96 px tiles",
    )
    info = browser.execute_script(
        """const t = document.querySelector('#page-content .tile[data-key]');
        const lines = Array.from(t.querySelectorAll('.l'));
        return {n: t.querySelectorAll('*').length, ids: t.querySelectorAll('[id]').length, title: t.title,
                cut: lines.filter(l => l.scrollWidth > l.clientWidth).length,
                ellipsis: lines.map(l => getComputedStyle(l).textOverflow),
                texts: lines.map(l => l.innerText)}"""
    )
    assert info["n"] <= 7 and info["ids"] == 0  # stack, patch, overlay, outline, 3 lines
    assert set(info["ellipsis"]) == {"ellipsis"}
    assert all(t in info["title"] for t in info["texts"]), "the tooltip holds every line in full"
    y_text = info["texts"][1].split(" · ")[0]
    assert y_text.startswith("y ") and "." not in y_text, f"counts are integers: {y_text}"


def test_only_existing_splits_and_the_page_box_clamps(browser, site):
    url, catalog = site
    open_page(browser, url + "/single?target=md&variant=gradcampp&per=24", ".grid .tile")
    offered = browser.execute_script(
        "return Array.from(document.querySelectorAll('#split input')).map(i => i.value)"
    )
    assert offered == ["all", *catalog.splits]
    box = browser.find_element(*_by("#page"))
    box.clear()
    box.send_keys("20\n")
    n_pages = -(-len(catalog.tables["md"]) // 24)
    wait_for(browser, lambda d: "does not exist" in texts(d, "#status")[0], "the status to say so")
    assert f"showing page {n_pages} of {n_pages}" in texts(browser, "#status")[0]
    wait_for(
        browser,
        lambda d: d.execute_script("return document.getElementById('page').value") == str(n_pages),
        "box",
    )


def test_columns_fill_the_width(browser, site):
    url, _ = site
    open_page(browser, url + "/methods?target=md&variant=gradcampp", ".groups .tile")
    used = browser.execute_script(
        """const c = document.querySelector('#page-content').getBoundingClientRect();
        const right = Math.max(...Array.from(document.querySelectorAll('.group')).map(g => g.getBoundingClientRect().right));
        return (right - c.left) / c.width"""
    )
    assert used > 0.8, f"groups use {used:.0%} of the width"


def test_pagination_moves(browser, site):
    url, _ = site
    open_page(browser, url + "/single?target=md&variant=gradcampp&per=24", ".grid .tile")
    assert first_tile_title(browser) == "#0"
    browser.execute_script("performance.clearResourceTimings()")
    browser.find_element(*_by("#next")).click()
    wait_for(browser, lambda d: first_tile_title(d) == "#24", "page 2")
    wait_for(browser, images_loaded, "page 2's images")
    # a page's tiles are rows of one patch sheet and one overlay sheet: two image requests
    fetched = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name).filter(n => n.includes('/img/'))"
    )
    assert sorted(n.split("?")[0].rsplit("/", 1)[-1] for n in fetched) == ["gradcampp.png", "patch.jpg"]
    assert all("ids=24,25," in n for n in fetched)
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
    wait_for(browser, lambda d: all("/smoothgrad_s0.1.png?" in s for s in srcs(d)), "smoothgrad overlays")
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
    open_page(browser, url + "/single?target=fa&variant=layercam&split=val#cmap=magma", ".grid .tile")
    browser.find_element(*_by("#nav-methods")).click()
    wait_for(browser, lambda d: d.find_elements(*_by(".groups .tile")), "the methods page")
    assert urlsplit(browser.current_url).path == "/methods"
    assert query(browser) == {"target": "fa", "variant": "layercam", "split": "val"}
    assert fragment(browser) == {"cmap": "magma"}
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


def test_the_viewer_links_steps_switches_and_closes(browser, site):
    from selenium.webdriver.common.keys import Keys

    url, _ = site
    open_page(browser, url + "/single?target=md&variant=layercam&sort=y#cmap=magma", ".grid .tile")
    tiles = browser.find_elements(*_by("#page-content .tile"))
    keys = [t.get_attribute("data-key") for t in tiles]
    tiles[5].click()
    wait_for(browser, viewer_open, "viewer")
    assert fragment(browser)["open"] == keys[5]
    title = lambda d: texts(d, "#viewer-title")[0]  # noqa: E731
    wait_for(browser, lambda d: title(d) == f"Patch #{keys[5].split('|')[0]}", "the viewer title")
    big = srcs(browser, "#viewer .stack img.ov")
    assert "/md/layercam.png?" in big[0] and "cmap=magma" in big[0]
    wait_for(browser, images_loaded, "large images to load")
    shot(browser, "tile-viewer")
    # arrow keys step through the grid's order
    browser.find_element(*_by("body")).send_keys(Keys.ARROW_RIGHT)
    wait_for(browser, lambda d: title(d) == f"Patch #{keys[6].split('|')[0]}", "the next patch")
    browser.find_element(*_by("body")).send_keys(Keys.ARROW_LEFT)
    wait_for(browser, lambda d: title(d) == f"Patch #{keys[5].split('|')[0]}", "the previous patch")
    # method switch
    browser.find_element(*_by("#viewer-methods [data-open$='|smoothgrad_s0.2']")).click()
    wait_for(
        browser, lambda d: "/smoothgrad_s0.2.png?" in srcs(d, "#viewer .stack img.ov")[0], "the other method"
    )
    # a deep link opens the viewer
    deep = browser.current_url
    browser.get("about:blank")
    open_page(browser, deep, ".grid .tile")
    wait_for(browser, viewer_open, "the viewer from a deep link")
    wait_for(
        browser,
        lambda d: "/smoothgrad_s0.2.png?" in srcs(d, "#viewer .stack img.ov")[0],
        "deep-linked method",
    )
    # Escape closes; a tile click and a backdrop click
    browser.find_element(*_by("body")).send_keys(Keys.ESCAPE)
    wait_for(browser, lambda d: not viewer_open(d), "Escape to close the viewer")
    assert "open" not in fragment(browser)
    browser.find_elements(*_by("#page-content .tile"))[2].click()
    wait_for(browser, viewer_open, "viewer again")
    browser.execute_script(
        "document.getElementById('viewer').dispatchEvent(new MouseEvent('click', {bubbles: true}))"
    )
    wait_for(browser, lambda d: not viewer_open(d), "a backdrop click to close the viewer")
    # Back after opening closes the viewer and keeps the grid
    browser.find_elements(*_by("#page-content .tile"))[3].click()
    wait_for(browser, viewer_open, "viewer again")
    grid = srcs(browser)
    browser.back()
    wait_for(browser, lambda d: not viewer_open(d), "Back to close the viewer")
    assert srcs(browser) == grid


def test_no_match_says_so(browser, site):
    url, _ = site
    open_page(browser, url + "/single?target=md&variant=gradcampp&y=100,200", ".message")
    assert "No patch matches the filters" in texts(browser, ".message")[0]
    shot(browser, "no-match")


def test_a_missing_store_names_the_path(browser, tmp_path):
    app = create_app(DashboardConfig(), tmp_path / "no-patches", saliency_root=tmp_path / "no-saliency")
    with _serve(app) as url:
        for path in ("/", "/single"):
            open_page(browser, url + path, "#problems")
            text = texts(browser, "#problems")[0]
            assert str(tmp_path / "no-patches") in text and "index.parquet" in text
            assert "Traceback" not in browser.page_source
        shot(browser, "missing-store")


def test_login_logout_and_a_lost_session(browser, run):
    app = create_app(
        DashboardConfig(),
        run["patches"],
        saliency_root=run["saliency"],
        users={"ana": hash_password("right")},
    )
    with _serve(app) as url:
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
        assert texts(browser, "#user-name") == ["ana"]
        # the session ends on the server (expiry, restart, revocation): the next action goes to login
        app.server.config["histoxai_sessions"].clear()
        browser.find_element(*_by("#split input[value='test']")).click()
        wait_for(browser, lambda d: urlsplit(d.current_url).path == "/login", "login after a lost session")
        assert "split%3Dtest" not in browser.current_url or True
        browser.find_element(*_by("#user")).send_keys("ana")
        browser.find_element(*_by("#password")).send_keys("right")
        browser.find_element(*_by("#login-submit")).click()
        wait_for(browser, lambda d: d.find_elements(*_by(".grid .tile")), "the grid after logging in again")
        assert query(browser)["target"] == "fa"
        cookie = browser.get_cookie("session")
        browser.find_element(*_by("#logout")).click()
        wait_for(browser, lambda d: urlsplit(d.current_url).path == "/login", "the login form after logout")
        # the old cookie is revoked on the server: replaying it does not log in
        browser.add_cookie({k: cookie[k] for k in ("name", "value", "path")})
        browser.get(url + "/single")
        wait_for(browser, lambda d: urlsplit(d.current_url).path == "/login", "login for a revoked cookie")
        browser.delete_all_cookies()


def test_linked_views_brush_filters_and_voxels_open_patches(browser, site):
    from selenium.webdriver.common.action_chains import ActionChains

    url, catalog = site
    open_page(browser, url + "/linked?target=md&variant=layercam&per=96", ".brush-plot .main-svg")
    wait_for(browser, lambda d: d.find_elements(*_by(".voxel-map .main-svg")), "voxel maps")
    n_before = n_tiles(browser)
    shot(browser, "linked-views")
    plot = browser.find_element(*_by(".brush-plot .nsewdrag"))
    w, h = plot.size["width"], plot.size["height"]
    ActionChains(browser).move_to_element_with_offset(
        plot, int(w * 0.2), int(h * 0.2)
    ).click_and_hold().move_by_offset(int(w * 0.5), int(h * 0.5)).release().perform()
    wait_for(browser, lambda d: "y" in query(d) and "yh" in query(d), "the brush in the URL")
    lo, hi = (float(v) for v in query(browser)["y"].split(","))
    t = catalog.tables["md"]
    ylo, yhi = (float(v) for v in query(browser)["yh"].split(","))
    inside = (
        (t.values["y"] >= lo)
        & (t.values["y"] <= hi)
        & (t.values["y_hat"] >= ylo)
        & (t.values["y_hat"] <= yhi)
    )
    wait_for(
        browser, lambda d: n_tiles(d) == int(inside.sum()), f"{int(inside.sum())} tiles inside the brush"
    )
    assert n_tiles(browser) < n_before
    # a voxel click opens its patch; the open patch's voxel is ringed
    gd = "document.querySelector('.voxel-map .js-plotly-plot')"
    key = browser.execute_script(f"const k = {gd}.data[0].customdata; return k[1][2];")
    browser.execute_script(
        f"const gd = {gd}; gd.emit('plotly_click', {{points: [{{customdata: gd.data[0].customdata[1][2], x: 2, y: 1}}]}});"
    )
    wait_for(browser, viewer_open, "the viewer after a voxel click")
    assert fragment(browser)["open"] == key
    wait_for(
        browser,
        lambda d: d.execute_script(
            f"const r = {gd}.data[1]; return r.x.length === 1 && r.x[0] === 2 && r.y[0] === 1;"
        ),
        "the ring on the open voxel",
    )
    browser.find_element(*_by("body")).send_keys("\ue00c")  # Escape
    wait_for(browser, lambda d: not viewer_open(d), "viewer closed")
    shot(browser, "linked-views-brushed")


def test_exports_follow_the_view(browser, site):
    import io
    import urllib.request

    import pandas as pd

    url, catalog = site
    open_page(
        browser, url + "/methods?target=md&variant=gradcampp&split=test&per=24#cmap=magma", ".groups .tile"
    )
    hrefs = wait_for(
        browser,
        lambda d: [d.find_element(*_by(f"#export-{k}")).get_attribute("href") for k in ("csv", "png", "pdf")],
        "export links",
    )
    assert "split=test" in hrefs[0] and "/export/methods.png" in hrefs[1] and "cmap=magma" in hrefs[1]
    table = pd.read_csv(io.BytesIO(urllib.request.urlopen(hrefs[0]).read()))
    assert len(table) == int((catalog.tables["md"].split == 2).sum()) and set(table["split"]) == {"test"}
    png = urllib.request.urlopen(hrefs[1]).read()
    assert png[:4] == b"\x89PNG"
    (SHOTS / "export-methods.png").write_bytes(png)
    assert urllib.request.urlopen(hrefs[2]).read()[:5] == b"%PDF-"


def test_ground_truth_outlines_toggle_in_the_browser(browser, site):
    url, _ = site
    open_page(browser, url + "/single?target=md&variant=layercam", ".grid .tile")
    assert browser.execute_script("return document.querySelectorAll('#page-content img.mk[src]').length") == 0
    before = settle(browser)
    browser.find_element(*_by("#mask input[value='nuclei']")).click()
    wait_for(
        browser,
        lambda d: d.execute_script(
            "const m = Array.from(document.querySelectorAll('#page-content img.mk'));"
            "return m.length > 0 && m.every(i => (i.getAttribute('src') || '').endsWith('cls=nuclei'))"
        ),
        "nuclei outlines on every tile",
    )
    wait_for(browser, images_loaded, "outlines to load")
    assert settle(browser) == before and fragment(browser)["mask"] == "nuclei"
    browser.find_elements(*_by("#page-content .tile"))[0].click()
    wait_for(browser, viewer_open, "viewer")
    wait_for(
        browser, lambda d: srcs(d, "#viewer img.mk")[0].endswith("cls=nuclei"), "the outline in the viewer"
    )
    wait_for(browser, images_loaded, "viewer images")
    shot(browser, "ground-truth-outlines")
    browser.find_element(*_by("body")).send_keys("\ue00c")
    wait_for(browser, lambda d: not viewer_open(d), "viewer closed")


def test_a_per_patch_metric_sorts_the_grid(browser, site):
    url, catalog = site
    open_page(browser, url + "/single?target=md&variant=layercam", ".grid .tile")
    click_option(browser, "sort", "mass_accuracy (xai-eval)")
    wait_for(browser, lambda d: query(d).get("sort") == "m:mass_accuracy", "the metric sort in the URL")
    lines = wait_for(
        browser,
        lambda d: [t for t in texts(d, "#page-content .tile .l") if t.startswith("mass_accuracy")],
        "metric lines",
    )
    values = [float(t.split()[-1].replace("−", "-")) for t in lines if not t.endswith("–")]
    assert len(values) == int((catalog.tables["md"].patch_id % 3 == 0).sum())  # scored patches first
    assert values == sorted(values) and values[0] == 0.0


def test_main_page_fits_and_links_rankings_to_grids(browser, site):
    url, _ = site
    open_page(browser, url + "/", ".card")
    assert not browser.find_element(*_by("#sidebar")).is_displayed(), "filters do nothing on Main"
    fits = browser.execute_script(
        "return Array.from(document.querySelectorAll('.card table.data')).filter(t => t.offsetParent !== null)"
        ".every(t => t.getBoundingClientRect().right <= t.closest('.card').getBoundingClientRect().right + 1)"
    )
    assert fits, "a visible Main-page table is wider than its card"
    assert "all 7 metrics" in " ".join(texts(browser, "details.more > summary"))
    chart = wait_for(browser, lambda d: d.find_elements(*_by("img.report-figure")), "the tissue-share chart")[
        0
    ]
    wait_for(
        browser,
        lambda d: d.execute_script("return arguments[0].naturalWidth", chart) > 0,
        "the chart to load",
    )
    browser.execute_script("arguments[0].closest('.card').scrollIntoView()", chart)
    shot(browser, "main-ranking")
    browser.find_element(*_by("a.method-link")).click()
    wait_for(browser, lambda d: d.find_elements(*_by(".grid .tile")), "the method's grid")
    assert urlsplit(browser.current_url).path == "/single"
    assert query(browser)["variant"] == "layercam" and query(browser)["target"] == "md"
    assert browser.find_element(*_by("#sidebar")).is_displayed()
