"""The study server over real HTTP (waitress, Flask, SQLite): vote validation, idempotent retries, what is
served and what is not."""
import http.client
import json
import sqlite3
from urllib.parse import urlsplit

import pytest

from adflow_plugin.apps.study import db
from adflow_plugin.apps.study.create import load_study


def request(url, method, path, body=None, raw=None, headers=None):
    """(status, body bytes) of one request, the path sent exactly as given."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        hdrs = {'Content-Type': 'application/json'} if data is not None else {}
        hdrs.update(headers or {})
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def vote(url, token, trial, answer='left', vote_id='vote-0000001', response_ms=900, **extra):
    body = dict(trial=trial, answer=answer, response_ms=response_ms, vote_id=vote_id, **extra)
    return request(url, 'POST', f'/api/{token}/vote', body)


def rows(study):
    return db.read_votes(study)


def test_votes_are_validated_and_retries_stored_once(served_study):
    study, url, tokens = served_study
    token, other = tokens[2], tokens[3]
    total = len(load_study(study)['participants'][token])
    before = len(rows(study))
    bad = [
        (vote(url, 'not-a-token', 0), 403),
        (vote(url, token, total), 400),  # unknown trial (past the last)
        (vote(url, token, -1), 400),
        (vote(url, token, '0'), 400),
        (vote(url, token, 0.0), 400),
        (vote(url, token, 0, answer='both'), 400),
        (vote(url, token, 0, response_ms=-5), 400),
        (vote(url, token, 0, response_ms=True), 400),
        (vote(url, token, 0, vote_id='x'), 400),
        (vote(url, token, 0, pair=1), 400),  # no client says which methods or pair it saw
        (vote(url, token, 1), 409),  # ahead of the next trial
        (request(url, 'POST', f'/api/{token}/vote', raw=b'{"trial": 0,'), 400),
        (request(url, 'POST', f'/api/{token}/vote', raw=b'x' * 10000), 413),
    ]
    assert [status for (status, _), _ in bad] == [want for _, want in bad]
    assert len(rows(study)) == before

    status, body = vote(url, token, 0, 'right', vote_id='first-vote-0')
    assert status == 200 and json.loads(body)['stored'] is True and json.loads(body)['done'] == 1
    status, body = vote(url, token, 0, 'right', vote_id='first-vote-0')  # a retry: acknowledged, not stored again
    assert status == 200 and json.loads(body)['stored'] is False
    assert vote(url, token, 0, 'left', vote_id='second-vote-0')[0] == 409  # a second opinion on trial 0
    assert vote(url, token, 0, 'left', vote_id='first-vote-0')[0] == 409  # the same id for another answer
    assert vote(url, other, 0, 'right', vote_id='first-vote-0')[0] == 409  # another participant, same id
    mine = [v for v in rows(study) if v['participant'] == token]
    stored = [(v['trial'], v['answer'], v['vote_id'], v['response_ms']) for v in mine]
    assert stored == [(0, 'right', 'first-vote-0', 900)]
    conn = sqlite3.connect(db.db_path(study))  # the database file is in WAL mode, as any reader finds it
    try:
        assert conn.execute('PRAGMA journal_mode').fetchone()[0] == 'wal'
    finally:
        conn.close()
    # votes of one participant do not show in another's state
    status, body = request(url, 'GET', f'/api/{other}/state')
    assert status == 200 and json.loads(body)['done'] == 0


@pytest.mark.parametrize('path', [
    '/img/../study.json', '/img/..%2fstudy.json', '/img/%2e%2e%2fvotes.sqlite', '/img/..%2F..%2Fstudy.json',
    '/static/../create.py', '/static/..%2fcreate.py', '/static/%2e%2e/server.py', '/study.json', '/votes.sqlite',
    '/participants.txt', '/public/', '/img/', '/p/../study.json', '/api/x/../../study.json', '/p/nobody',
    '/img/0123456789abcdef.png', '/img/study.json', '/%2e%2e/%2e%2e/etc/passwd', '//etc/passwd'])
def test_only_public_files_are_served(served_study, path):
    study, url, tokens = served_study
    status, body = request(url, 'GET', path)
    assert status == 404, (path, status, body[:200])
    assert tokens[0].encode() not in body and b'AdFlow' not in body


def test_nothing_served_names_a_method(served_study):
    study, url, tokens = served_study
    plan = load_study(study)
    token = tokens[3]
    status, page = request(url, 'GET', f'/p/{token}')
    assert status == 200 and b'zoom' in page
    status, state = request(url, 'GET', f'/api/{token}/state')
    state = json.loads(state)
    trial = state['trial']
    assert set(trial) == {'index', 'lr', 'lr_size', 'box', 'left', 'right'}
    served = [page, json.dumps(state).encode()]
    for path in ('/static/study.js', '/static/study.css'):
        status, body = request(url, 'GET', path)
        assert status == 200
        served.append(body)
    for key in ('lr', 'left', 'right'):
        status, body = request(url, 'GET', trial[key])
        assert status == 200 and body.startswith(b'\x89PNG')
    for name in [m['name'] for m in plan['methods']] + [plan['lr_dir']]:
        assert not any(name.encode() in body for body in served), name
    # the two zooms are the files of the two methods of this trial's pair, one each side
    crop, pair, first_left = plan['participants'][token][0]
    files = plan['crops'][crop]['files']
    a, b = plan['pairs'][pair]
    left, right = (a, b) if first_left else (b, a)
    assert (trial['left'], trial['right']) == (f'/img/{files[left]}', f'/img/{files[right]}')
