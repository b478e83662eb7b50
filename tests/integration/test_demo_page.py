"""The demo page in a real browser: headless Debian Chromium, driven through its own
chromium-driver (Selenium), against the session's real gateway and workers.

Screenshots go to $FACEVAL_TEST_ARTIFACTS (or a pytest temporary folder); the path is printed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from shared import codes
from shared.pipeline import STAGES
from tests.integration.conftest import ApiClient
from tools.samples import SamplePair, write_samples
from tools.stack import Stack

pytestmark = pytest.mark.integration

BROWSERS = ("chromium", "chromium-browser", "/usr/bin/chromium")
DRIVERS = ("chromedriver", "/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
#: Headless as root on a closed network: no sandbox, and nothing that phones out.
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--disable-quic", "--disable-extensions", "--disable-default-apps",
    "--window-size=1280,1600", "--force-device-scale-factor=1",
    # A synthetic camera that needs no permission prompt, for the capture path.
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
)  # fmt: skip
RESULT_SECONDS = 150
STAGE_TIMES = re.compile(r"^\d+\.\d / \d+\.\d ms$")


def _first(names: tuple[str, ...]) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("FACEVAL_TEST_ARTIFACTS")
    folder = Path(given) / "demo-page" if given else tmp_path_factory.mktemp("demo-page")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\ndemo page screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    browser = _first(BROWSERS)
    if browser is None:
        pytest.skip("no chromium on this machine: bash scripts/ensure-browser.sh installs it")
    chromedriver = _first(DRIVERS)
    assert chromedriver, "chromium is here but chromedriver is not: bash scripts/ensure-browser.sh"
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    service = Service(executable_path=chromedriver, log_output=os.devnull)
    chrome = webdriver.Chrome(options=options, service=service)
    chrome.set_page_load_timeout(60)
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[SamplePair, Path, Path]]:
    written = write_samples(tmp_path_factory.mktemp("demo-samples"))
    return {sample.name: (sample, near, far) for sample, near, far in written}


def _open(driver: WebDriver, stack: Stack, key: str | None) -> None:
    # From a blank page: a new fragment alone would not load the page afresh.
    driver.get("about:blank")
    driver.get(f"{stack.url}/demo/" + (f"#key={key}" if key else ""))
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.body.dataset.ready === 'true'")
    )


def _choose(driver: WebDriver, near: Path, far: Path) -> None:
    driver.find_element(By.ID, "near-file").send_keys(str(near))
    driver.find_element(By.ID, "far-file").send_keys(str(far))


def _watch_stage_states(driver: WebDriver) -> None:
    """Record every state each stage row shows, however briefly, while the page polls."""
    driver.execute_script("""
        window.seenStates = {};
        new MutationObserver(() => {
          for (const row of document.querySelectorAll('#stage-rows tr')) {
            (window.seenStates[row.dataset.stage] ||= []).push(row.dataset.state);
          }
        }).observe(document.getElementById('stage-rows'), {childList: true});
    """)


def _submit_and_wait_for_decision(driver: WebDriver) -> None:
    driver.find_element(By.ID, "submit").click()
    WebDriverWait(driver, RESULT_SECONDS).until(
        lambda d: (
            d.find_element(By.ID, "decision").is_displayed()
            or d.find_element(By.ID, "error").is_displayed()
        )
    )
    error = driver.find_element(By.ID, "error")
    assert not error.is_displayed(), f"the page showed an error: {error.text}"


def _screenshot(driver: WebDriver, artifacts: Path, name: str) -> Path:
    # The whole page, not just the first screenful.
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, max(900, int(height) + 160))
    path = artifacts / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"no screenshot written to {path}"
    driver.set_window_size(1280, 1600)
    print(f"screenshot: {path}")
    return path


def _overlay(driver: WebDriver, side: str) -> dict[str, Any]:
    """How many faces the overlay says it drew, and how many pixels are actually painted."""
    result: dict[str, Any] = driver.execute_script(
        """
        const canvas = document.getElementById(arguments[0] + '-overlay');
        const {data} = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
        let painted = 0;
        for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted += 1;
        const img = document.getElementById(arguments[0] + '-img');
        return {faces: canvas.dataset.faces, painted, width: canvas.width,
                naturalWidth: img.naturalWidth};
        """,
        side,
    )
    return result


def _stage_rows(driver: WebDriver) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for row in driver.find_elements(By.CSS_SELECTOR, "#stage-rows tr"):
        times = {
            str(cell.get_attribute("data-side")): cell.text
            for cell in row.find_elements(By.CSS_SELECTOR, "td.times")
        }
        rows[str(row.get_attribute("data-stage"))] = {"state": row.get_attribute("data-state"),
                                                      **times}  # fmt: skip
    return rows


def test_serves_the_page_and_its_files_with_a_strict_policy(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        redirect = http.get("/demo")
        assert redirect.status_code == 308
        assert redirect.headers["location"] == "demo/"
        page = http.get("/demo/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert 'src="app.js"' in page.text
        assert http.get("/demo/app.js").headers["content-type"].startswith("text/javascript")
        assert http.get("/demo/style.css").headers["content-type"].startswith("text/css")
        # Only the page's own files: nothing else in the package is reachable.
        assert http.get("/demo/router.py").status_code == 404
        assert http.get("/demo/..%2Fapp.py").status_code == 404


def test_validates_an_uploaded_pair_live_and_shows_decision_times_and_face_boxes(
    driver: WebDriver,
    stack: Stack,
    client_a: ApiClient,
    samples: dict[str, tuple[SamplePair, Path, Path]],
    artifacts: Path,
) -> None:
    _, near, far = samples["astronaut"]
    _open(driver, stack, client_a.key)
    # The key came in the URL fragment: the page takes it and drops it from the address bar.
    assert driver.find_element(By.ID, "api-key").get_attribute("value") == client_a.key
    assert "key=" not in driver.current_url
    _choose(driver, near, far)
    _watch_stage_states(driver)
    _submit_and_wait_for_decision(driver)

    verdict = driver.find_element(By.ID, "verdict")
    assert verdict.text == "Accepted"
    summary = driver.find_element(By.ID, "summary").text
    assert "Summary code\n0" in summary
    # The page shows the description the API gives, which claims a live face only when a
    # PAD model judged both images (without ../shared, MiniFASNet is not installed).
    tid = summary.rsplit("Transaction\n", 1)[1].split()[0]
    result = httpx.get(f"{stack.url}/v1/validations/{tid}",
                       headers={"X-API-Key": client_a.key}).json()  # fmt: skip
    expected = (codes.ACCEPTED.description if result["liveness"]["assessed"]
                else codes.ACCEPTED_LIVENESS_NOT_ASSESSED)  # fmt: skip
    assert result["summary_desc"] == expected
    assert f"Description\n{expected}" in summary
    rows = _stage_rows(driver)
    assert list(rows) == list(STAGES)
    for stage, row in rows.items():
        assert row["state"] == "passed", (stage, row)
        for side in ("near", "far"):
            assert STAGE_TIMES.match(row[side]), (stage, side, row[side])
    # Seen live: the first stage was shown running before it passed.
    seen = driver.execute_script("return window.seenStates")
    assert "running" in seen["face_detector"], seen
    assert seen["face_detector"][-1] == "passed"
    captions = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "#scores caption")]
    assert captions == [
        "Face detection", "Accessories", "Image quality", "Identity", "Presentation attack"
    ]  # fmt: skip
    for side in ("near", "far"):
        overlay = _overlay(driver, side)
        assert overlay["faces"] == "1", (side, overlay)
        assert overlay["width"] == overlay["naturalWidth"] > 0
        assert overlay["painted"] > 500, f"no face box painted on the {side} image: {overlay}"
    _screenshot(driver, artifacts, "accepted")

    transaction = driver.find_element(By.CSS_SELECTOR, "#summary dd:last-of-type").text
    entry = driver.find_element(By.CSS_SELECTOR, f'#history li[data-transaction="{transaction}"]')
    assert "accepted (code 0" in entry.text
    # The history is this browser's: it survives a reload, and the key was not kept.
    _open(driver, stack, None)
    assert driver.find_element(By.ID, "api-key").get_attribute("value") == ""
    assert not driver.find_element(By.ID, "decision").is_displayed()
    driver.find_element(By.ID, "api-key").send_keys(client_a.key)
    driver.find_element(
        By.CSS_SELECTOR, f'#history li[data-transaction="{transaction}"] button'
    ).click()
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "decision").is_displayed())
    assert driver.find_element(By.ID, "verdict").text == "Accepted"
    assert {row["state"] for row in _stage_rows(driver).values()} == {"passed"}


def test_shows_a_rejection_with_its_reason_and_the_stages_that_never_ran(
    driver: WebDriver,
    stack: Stack,
    client_a: ApiClient,
    samples: dict[str, tuple[SamplePair, Path, Path]],
    artifacts: Path,
) -> None:
    _, near, far = samples["no_face"]
    _open(driver, stack, client_a.key)
    _choose(driver, near, far)
    _submit_and_wait_for_decision(driver)

    assert driver.find_element(By.ID, "verdict").text == "Rejected"
    assert "Reason\nno_face" in driver.find_element(By.ID, "summary").text
    assert "no_face" in driver.find_element(By.ID, "reasons").text
    states = {stage: row["state"] for stage, row in _stage_rows(driver).items()}
    assert states == {stage: "rejected" if stage == "face_detector" else "skipped"
                      for stage in STAGES}  # fmt: skip
    assert _overlay(driver, "near")["faces"] == "0"
    _screenshot(driver, artifacts, "rejected-no-face")


def _error_after_submit(driver: WebDriver) -> tuple[str, str]:
    driver.find_element(By.ID, "submit").click()
    error = driver.find_element(By.ID, "error")
    WebDriverWait(driver, 60).until(lambda _: error.is_displayed())
    return str(error.get_attribute("data-code")), error.text


def test_explains_refusals_in_words(
    driver: WebDriver,
    stack: Stack,
    client_a: ApiClient,
    samples: dict[str, tuple[SamplePair, Path, Path]],
    artifacts: Path,
    tmp_path: Path,
) -> None:
    _, near, far = samples["astronaut"]
    _open(driver, stack, "not-a-real-key")
    _choose(driver, near, far)
    code, text = _error_after_submit(driver)
    assert code == "unauthorized"
    assert "The API key was not accepted" in text

    not_image = tmp_path / "notes.jpg"
    not_image.write_text("these are meeting notes, not a photograph\n" * 50)
    _open(driver, stack, client_a.key)
    _choose(driver, not_image, far)
    code, text = _error_after_submit(driver)
    assert code == "unsupported_format"
    assert "not an image FaceVal accepts" in text
    _screenshot(driver, artifacts, "error-not-an-image")

    too_large = tmp_path / "huge.jpg"
    too_large.write_bytes(near.read_bytes()[:2] + os.urandom(stack.settings.max_upload_bytes + 1))
    _open(driver, stack, client_a.key)
    _choose(driver, too_large, far)
    code, text = _error_after_submit(driver)
    assert code == "file_too_large"
    assert "too large" in text


def test_says_when_the_rate_limit_is_reached(
    driver: WebDriver,
    stack: Stack,
    samples: dict[str, tuple[SamplePair, Path, Path]],
    artifacts: Path,
) -> None:
    name = f"demo-limited-{uuid.uuid4().hex[:6]}"
    created = subprocess.run(
        [sys.executable, "-c", "from cli.main import main; main()",
         "client", "create", name, "--rate-limit", "1"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    _, near, far = samples["no_face"]
    _open(driver, stack, key)
    _choose(driver, near, far)
    code, text = "", ""
    # One validation a minute: the second is refused, or the third if a minute began between.
    for _ in range(3):
        driver.find_element(By.ID, "submit").click()
        WebDriverWait(driver, RESULT_SECONDS).until(
            lambda d: d.find_element(By.ID, "submit").is_enabled()
            and (d.find_element(By.ID, "decision").is_displayed()
                 or d.find_element(By.ID, "error").is_displayed())
        )  # fmt: skip
        error = driver.find_element(By.ID, "error")
        if error.is_displayed():
            code, text = str(error.get_attribute("data-code")), error.text
            break
    assert code == "rate_limited", text
    assert re.search(r"Too many requests: .* Try again in \d+ s\.", text), text
    _screenshot(driver, artifacts, "error-rate-limited")


def test_takes_a_photo_with_the_camera(
    driver: WebDriver, stack: Stack, client_a: ApiClient, artifacts: Path
) -> None:
    _open(driver, stack, client_a.key)
    driver.find_element(By.CSS_SELECTOR, '.camera-open[data-side="near"]').click()
    shoot = driver.find_element(By.CSS_SELECTOR, '.camera-shoot[data-side="near"]')
    WebDriverWait(driver, 30).until(lambda _: shoot.is_displayed())
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.getElementById('near-video').videoWidth > 0")
    )
    shoot.click()
    preview = driver.find_element(By.ID, "near-preview")
    WebDriverWait(driver, 30).until(lambda _: preview.is_displayed())
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.getElementById('near-img').naturalWidth > 0")
    )
    assert driver.find_element(By.ID, "near-caption").text.startswith("camera-near.jpg")
    # The camera is released once the photo is taken.
    assert not driver.find_element(By.ID, "near-video").is_displayed()
    _screenshot(driver, artifacts, "camera-capture")


#: Every element's box must lie inside the viewport: what a phone would scroll sideways.
_OVERFLOW = """
const width = document.documentElement.clientWidth;
const outside = [];
for (const node of document.querySelectorAll('body *')) {
  const box = node.getBoundingClientRect();
  if (box.width === 0 || box.height === 0) continue;
  if (box.right > width + 1 || box.left < -1) {
    const name = `${node.tagName.toLowerCase()}#${node.id}.${node.className}`;
    outside.push(`${name} ${Math.round(box.left)}..${Math.round(box.right)}`);
  }
}
return {scrollWidth: document.documentElement.scrollWidth, width, outside: outside.slice(0, 12),
        height: document.documentElement.scrollHeight};
"""


@pytest.mark.parametrize(("width", "height"), [(1280, 900), (390, 844)], ids=["desktop", "phone"])
def test_the_page_fits_desktop_and_phone_screens_with_every_result_shown(
    driver: WebDriver,
    stack: Stack,
    client_a: ApiClient,
    samples: dict[str, tuple[SamplePair, Path, Path]],
    artifacts: Path,
    width: int,
    height: int,
) -> None:
    _, near, far = samples["astronaut"]
    driver.set_window_size(width, height)
    try:
        _open(driver, stack, client_a.key)
        _choose(driver, near, far)
        _submit_and_wait_for_decision(driver)
        viewport = driver.execute_script("return document.documentElement.clientWidth")
        assert abs(viewport - width) < 40, f"the window did not take the size: {viewport}"
        layout = driver.execute_script(_OVERFLOW)
        assert layout["scrollWidth"] <= layout["width"], layout
        assert layout["outside"] == [], layout
        # Models that did not run are one line per stage and image, not a row each.
        statuses = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "#scores td[data-label]")
                    if c.get_attribute("data-label") == "Status"]  # fmt: skip
        assert statuses and "not_run" not in statuses
        for row in driver.find_elements(By.CSS_SELECTOR, "#scores tr.not-run"):
            assert "not run" in row.text and "\n" not in row.text.strip()
        path = artifacts / f"layout-{width}px.png"
        driver.set_window_size(width, int(layout["height"]) + 160)
        assert driver.save_screenshot(str(path))
        print(f"screenshot: {path} (page {layout['height']} px tall)")
    finally:
        driver.set_window_size(1280, 1600)


def _identity_answer(driver: WebDriver, button: str) -> None:
    driver.find_element(By.ID, button).click()
    WebDriverWait(driver, RESULT_SECONDS).until(
        lambda d: d.find_element(By.ID, "enroll-submit").is_enabled()
        and (d.find_element(By.ID, "identity-result").is_displayed()
             or d.find_element(By.ID, "identity-error").is_displayed())
    )  # fmt: skip
    error = driver.find_element(By.ID, "identity-error")
    assert not error.is_displayed(), f"the identity panel showed an error: {error.text}"


def _facts(driver: WebDriver) -> dict[str, str]:
    names = driver.find_elements(By.CSS_SELECTOR, "#identity-facts dt")
    values = driver.find_elements(By.CSS_SELECTOR, "#identity-facts dd")
    return {name.text: value.text for name, value in zip(names, values, strict=True)}


def test_enrols_a_face_verifies_it_searches_and_deletes_it_on_desktop_and_phone(
    driver: WebDriver,
    stack: Stack,
    client_a: ApiClient,
    samples: dict[str, tuple[SamplePair, Path, Path]],
    artifacts: Path,
) -> None:
    _, near, far = samples["astronaut"]
    external_id = f"demo-astro-{uuid.uuid4().hex[:6]}"
    _open(driver, stack, client_a.key)
    driver.find_element(By.ID, "enroll-external-id").send_keys(external_id)
    driver.find_element(By.ID, "enroll-file").send_keys(str(near))
    assert len(driver.find_elements(By.CSS_SELECTOR, "#enroll-thumbs li")) == 1
    _identity_answer(driver, "enroll-submit")
    enrolled = _facts(driver)
    assert enrolled["External ID"] == external_id and enrolled["Photos used"] == "1", enrolled
    subject_id = enrolled["Subject ID"]
    listed = driver.find_element(By.CSS_SELECTOR, f'#subjects li[data-subject="{subject_id}"]')
    assert external_id in listed.text
    # The new subject is the one chosen to verify against.
    assert driver.find_element(By.ID, "verify-subject").get_attribute("value") == subject_id

    driver.find_element(By.ID, "probe-file").send_keys(str(far))
    _identity_answer(driver, "verify-submit")
    assert driver.find_element(By.ID, "identity-verdict").text == "Match"
    verified = _facts(driver)
    assert verified["Same person"] == "yes", verified
    assert float(verified["Similarity"]) >= float(verified["Threshold"]) > 0, verified
    assert verified["Model"].startswith("dlib_resnet_v1"), verified
    _screenshot(driver, artifacts, "identity-verified")

    _identity_answer(driver, "search-submit")
    best = driver.find_element(By.CSS_SELECTOR, "#search-matches li")
    assert best.get_attribute("data-subject") == subject_id
    assert re.search(rf"^{external_id} similarity 0\.\d{{4}} match$", best.text), best.text

    # A photo with no face is refused in words, with the pipeline's reason.
    driver.find_element(By.ID, "probe-file").send_keys(str(samples["no_face"][1]))
    driver.find_element(By.ID, "verify-submit").click()
    error = driver.find_element(By.ID, "identity-error")
    WebDriverWait(driver, RESULT_SECONDS).until(lambda _: error.is_displayed())
    assert error.get_attribute("data-code") == "unusable_image"
    assert "no usable face in the photo: no face was found" in error.text, error.text

    driver.set_window_size(390, 844)
    try:
        viewport = driver.execute_script("return document.documentElement.clientWidth")
        assert abs(viewport - 390) < 40, f"the window did not take the size: {viewport}"
        layout = driver.execute_script(_OVERFLOW)
        assert layout["scrollWidth"] <= layout["width"], layout
        assert layout["outside"] == [], layout
        path = artifacts / "identity-390px.png"
        driver.set_window_size(390, int(layout["height"]) + 160)
        assert driver.save_screenshot(str(path))
        print(f"screenshot: {path}")
    finally:
        driver.set_window_size(1280, 1600)

    listed = driver.find_element(By.CSS_SELECTOR, f'#subjects li[data-subject="{subject_id}"]')
    listed.find_element(By.TAG_NAME, "button").click()
    driver.switch_to.alert.accept()
    WebDriverWait(driver, 30).until(
        lambda d: not d.find_elements(By.CSS_SELECTOR, f'#subjects li[data-subject="{subject_id}"]')
    )
    assert client_a.http.get(f"/v1/subjects/{subject_id}").status_code == 404
