"""Headless Chromium from Debian's packages, driven by Selenium; never downloads a browser or driver."""
import os
import shutil

import pytest

CHROMIUM = '/usr/bin/chromium'
CHROMEDRIVER = '/usr/bin/chromedriver'
INSTALL = ('the browser tests need Chromium and its driver: on Debian or Ubuntu run '
           '"apt-get install chromium chromium-driver" as root (python3 adflow_plugin/bootstrap.py test does '
           f'this when it runs as root), so that {CHROMIUM} and {CHROMEDRIVER} exist')


def start_chromium(user_data_dir, width=1280, height=800):
    """A fresh headless Chromium; fails the test (never skips) when Chromium is not installed."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (os.path.isfile(p) and os.access(p, os.X_OK))]
    if missing:
        pytest.fail(f'{", ".join(missing)} missing: {INSTALL}', pytrace=False)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail('selenium is not installed: pip install "selenium==4.51.0" (setup.cfg, extras "test")',
                    pytrace=False)
    os.environ.setdefault('SE_OFFLINE', 'true')  # belt and braces: Selenium Manager may never download
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync',
                 '--no-first-run', '--no-default-browser-check', f'--user-data-dir={user_data_dir}',
                 f'--window-size={width},{height}'):
        opts.add_argument(flag)
    # an explicit driver path: Selenium Manager (which would download drivers) is not run
    service = Service(CHROMEDRIVER, log_output=os.devnull)
    return webdriver.Chrome(service=service, options=opts)


def quit_chromium(driver, user_data_dir):
    driver.quit()
    shutil.rmtree(user_data_dir, ignore_errors=True)
