"""Signs in to the console as the operator in headless Chromium and saves the queue view
(and, beside it, a waiting task's page) as PNG: bench/console-queue-shot.sh runs it.

Usage: console_queue_shot.py BASE ADMIN_TOKEN OUT.png WAITING_TASK_ID
"""

import os
import sys
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

base, admin_token, out, task_id = sys.argv[1:5]

opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--window-size=1280,900", "--force-color-profile=srgb",
             f"--user-data-dir={tempfile.mkdtemp(prefix='omnigate-shot-')}"):
    opts.add_argument(flag)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
try:
    driver.get(f"{base}/console/login")
    field = driver.find_element(By.ID, "token")
    field.send_keys(admin_token)
    field.send_keys(Keys.ENTER)
    WebDriverWait(driver, 10).until(EC.url_contains("/console/tasks"))
    driver.get(f"{base}/console/queue")
    assert driver.find_element(By.TAG_NAME, "h1").text == "Queue", driver.page_source
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(height, 600), 3000))
    driver.save_screenshot(out)
    driver.get(f"{base}/console/tasks/{task_id}")
    assert "Queue position" in driver.page_source, driver.page_source
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(height, 600), 3000))
    driver.save_screenshot(os.path.splitext(out)[0] + "-task.png")
finally:
    driver.quit()
