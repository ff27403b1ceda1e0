"""Drives the console in a real headless Chromium (Debian's chromium + chromium-driver),
as tests/console.rs asks: a key signs in, builds a task in the playground against the
sandbox, watches it complete and its video play; it cannot open another key's task; the
operator revokes that other key. A screenshot of every page goes to the given folder.

Usage: console_browser.py BASE KEY_A KEY_B_ID TASK_OF_B ADMIN_TOKEN SCREENSHOT_DIR
Prints one JSON line with what it saw; exits non-zero (with the reason) on any failure.
"""

import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

base, key_a, key_b_id, task_of_b, admin_token, shots = sys.argv[1:7]
os.makedirs(shots, exist_ok=True)


PROFILE = tempfile.mkdtemp(prefix="omnigate-chromium-")


def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--window-size=1280,1000", "--autoplay-policy=no-user-gesture-required",
        f"--user-data-dir={PROFILE}",
    ):
        opts.add_argument(flag)
    # The browser's console, where Chromium reports what a Content-Security-Policy blocked.
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def shot(driver, name):
    # The whole page, not just the window.
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(height, 700), 4000))
    driver.save_screenshot(os.path.join(shots, f"{name}.png"))
    driver.set_window_size(1280, 1000)


def sign_in(driver, token):
    driver.get(f"{base}/console/login")
    field = driver.find_element(By.ID, "token")
    # Every input has a label.
    label = driver.find_element(By.CSS_SELECTOR, "label[for=token]")
    assert label.text, "the token field has no label"
    field.send_keys(token)
    field.send_keys(Keys.ENTER)
    WebDriverWait(driver, 10).until(EC.url_contains("/console/tasks"))


def sign_out(driver):
    driver.find_element(By.CSS_SELECTOR, "form.signout button").click()
    WebDriverWait(driver, 10).until(EC.url_contains("/console/login"))


def headers_of(driver, path):
    """The response headers of a page, fetched with the browser's session cookies (a
    WebDriver cannot read a page's headers itself)."""
    cookies = "; ".join(f"{c['name']}={c['value']}" for c in driver.get_cookies())
    req = urllib.request.Request(f"{base}{path}", headers={"Cookie": cookies})
    with urllib.request.urlopen(req) as resp:
        assert resp.status == 200, f"{path}: {resp.status}"
        return {k.lower(): v for k, v in resp.headers.items()}


def csp_violations(driver):
    return [e["message"] for e in driver.get_log("browser")
            if "Content Security Policy" in e["message"] or "Content-Security-Policy" in e["message"]]


def wait_for(driver, what, probe, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = probe()
            if value:
                return value
        except StaleElementReferenceException:
            pass  # the page reloaded under us
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; page: {driver.current_url}")


def main():
    seen = {}
    driver = browser()
    try:
        driver.get(f"{base}/console/login")
        # The sign-in page starts in its one field.
        assert driver.switch_to.active_element.get_attribute("id") == "token"
        shot(driver, "01-sign-in")

        # A key signs in and builds a task in the playground.
        sign_in(driver, key_a)
        # Keyboard first: the first Tab reaches the skip link, the next ones the navigation.
        ActionChains(driver).send_keys(Keys.TAB).perform()
        active = driver.switch_to.active_element
        assert "skip" in (active.get_attribute("class") or ""), "Tab does not reach the skip link first"
        ActionChains(driver).send_keys(Keys.TAB).send_keys(Keys.TAB).perform()
        assert driver.switch_to.active_element.text == "Tasks", "Tab does not walk the navigation"
        driver.get(f"{base}/console/playground")
        prompt = driver.find_element(By.NAME, "prompt")
        prompt.send_keys("a lighthouse at dusk, waves below")
        quote = wait_for(
            driver, "the live quote",
            lambda: driver.find_element(By.ID, "quote-text").get_attribute("data-provider"),
        )
        seen["quoted_provider"] = quote
        shot(driver, "02-playground")
        driver.find_element(By.CSS_SELECTOR, "#playground button[type=submit]").click()
        WebDriverWait(driver, 20).until(EC.url_contains("/console/tasks/vgt_"))
        task_id = driver.current_url.rsplit("/", 1)[1]
        seen["task_id"] = task_id

        # The page follows its task (task-follow.js, by the status stream) until it completes and its video has a source
        # that plays (the browser loaded enough of it to know its length).
        src = wait_for(
            driver, "the video element's source",
            lambda: driver.execute_script(
                "const v = document.querySelector('video#result');"
                "return v && v.readyState >= 1 && v.duration > 0 ? v.currentSrc : null;"
            ),
        )
        seen["video_src"] = src
        seen["video_seconds"] = driver.execute_script(
            "return document.querySelector('video#result').duration")
        shot(driver, "03-task")

        seen["console_headers"] = headers_of(driver, "/console/tasks")
        driver.get(f"{base}/console/tasks")
        assert task_id in driver.page_source, "the new task is not in the list"
        shot(driver, "04-tasks")
        driver.get(f"{base}/console/tasks?status=completed")
        assert task_id in driver.page_source, "the status filter lost the completed task"
        driver.get(f"{base}/console/usage")
        shot(driver, "05-usage")

        # Another key's task page does not exist for this key.
        driver.get(f"{base}/console/tasks/{task_of_b}")
        heading = driver.find_element(By.TAG_NAME, "h1").text
        assert heading == "Not found", f"another key's task page showed: {heading}"
        assert task_of_b not in driver.page_source.replace(f"/console/tasks/{task_of_b}", "")
        seen["other_task_heading"] = heading
        driver.get(f"{base}/console/tasks")
        sign_out(driver)

        # The operator sees providers and keys, and revokes key B.
        sign_in(driver, admin_token)
        driver.get(f"{base}/console/providers")
        assert driver.find_elements(By.CSS_SELECTOR, "table.providers tbody tr"), "no provider rows"
        shot(driver, "06-providers")
        driver.get(f"{base}/console/keys")
        shot(driver, "07-keys")
        form = driver.find_element(By.CSS_SELECTOR, f"form[action='/console/keys/{key_b_id}/revoke']")
        form.find_element(By.TAG_NAME, "button").click()
        WebDriverWait(driver, 5).until(EC.alert_is_present()).accept()
        wait_for(
            driver, "key B shown revoked",
            lambda: "revoked" in driver.find_element(
                By.XPATH, f"//tr[.//code[text()='{key_b_id}']]").text,
            timeout=10,
        )
        shot(driver, "08-key-revoked")
        driver.get(f"{base}/console/tasks")
        assert task_of_b in driver.page_source, "the operator does not see key B's task"
        driver.get(f"{base}/console/tasks/{task_id}")
        shot(driver, "09-task-operator-view")

        # The API reference renders from the gateway's own assets under its CSP.
        driver.get(f"{base}/docs")
        seen["docs_title"] = wait_for(
            driver, "the rendered API reference",
            # find_elements: the reference renders after the page loads, and an empty
            # list means "not yet", not an error.
            lambda: "".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, ".swagger-ui .info .title")),
            timeout=20,
        )
        seen["docs_operations"] = len(driver.find_elements(By.CSS_SELECTOR, ".opblock"))
        shot(driver, "10-docs")
        seen["csp_violations"] = csp_violations(driver)
    finally:
        driver.quit()
        shutil.rmtree(PROFILE, ignore_errors=True)
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
