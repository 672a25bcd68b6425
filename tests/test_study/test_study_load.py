"""Load on 127.0.0.1: 50 simulated participants post 3,000 votes while the server process (the real
``basicsr study serve`` command) is killed with SIGKILL and started again; every acknowledged vote is in
the database exactly once. Clients resend unacknowledged votes with the same vote id."""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

from adflow_plugin.apps.study import db
from adflow_plugin.apps.study.create import create_study, load_study, parse_method

from .conftest import write_results

PARTICIPANTS = 50
DEADLINE_S = 120  # the whole test; clients give up after it (and the test then fails)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def start_server(study, port, log):
    proc = subprocess.Popen([sys.executable, '-m', 'adflow_plugin.cli', 'study', 'serve', study, '--host',
                             '127.0.0.1', '--port', str(port), '--threads', '8'], stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONUNBUFFERED='1'))
    end = time.time() + 60
    while time.time() < end:
        assert proc.poll() is None, f'the server exited with {proc.returncode}'
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError('the server did not start listening within 60 s')


def participant(port, token, trials, acked, stats, stop):
    """Answers every trial in order; resends a vote (same id) until it is acknowledged."""
    for trial in range(trials):
        body = json.dumps(dict(trial=trial, answer='left' if (hash(token) + trial) % 3 else 'right',
                               response_ms=trial + 1, vote_id=uuid.uuid4().hex))
        while not stop.is_set():
            stats['requests'] += 1
            try:
                conn = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
                conn.request('POST', f'/api/{token}/vote', body=body, headers={'Content-Type': 'application/json'})
                r = conn.getresponse()
                reply = json.loads(r.read())
                conn.close()
            except (OSError, http.client.HTTPException, ValueError):
                stats['unacknowledged'] += 1
                time.sleep(0.2)
                continue
            if r.status != 200:
                stats['rejected'].append((token, trial, r.status, reply))
                return
            stats['resent_stored_before'] += not reply['stored']
            acked.append(json.loads(body) | dict(participant=token))
            break


def test_kill_and_restart_under_load_loses_no_acknowledged_vote(tmp_path):
    dirs = write_results(tmp_path / 'results')
    methods = [parse_method(s) for s in (f'AdFlow={dirs["flow"]}:t=1', f'ESRGAN={dirs["esrgan"]}', f'GT={dirs["gt"]}')]
    study = str(tmp_path / 'study')
    create_study(study, methods, dirs['lr'], crop_size=16, crops_per_image=10, participants=PARTICIPANTS, seed=0)
    plan = load_study(study)
    trials = len(plan['participants'][next(iter(plan['participants']))])
    assert PARTICIPANTS * trials == 3000
    port = free_port()
    log = open(tmp_path / 'server.log', 'w')
    acked, stop = [], threading.Event()
    stats = dict(requests=0, unacknowledged=0, resent_stored_before=0, rejected=[])
    server = start_server(study, port, log)
    try:
        t0 = time.time()
        threads = [threading.Thread(target=participant, args=(port, tok, trials, acked, stats, stop), daemon=True)
                   for tok in plan['participants']]
        for t in threads:
            t.start()
        while len(acked) < 1000 and any(t.is_alive() for t in threads) and time.time() - t0 < DEADLINE_S:
            time.sleep(0.01)
        killed_at, acked_at_kill = time.time() - t0, len(acked)
        os.kill(server.pid, signal.SIGKILL)
        server.wait()
        server = start_server(study, port, log)
        restarted_at = time.time() - t0
        for t in threads:
            t.join(max(0.0, DEADLINE_S - (time.time() - t0)))
        stop.set()
        elapsed = time.time() - t0
    finally:
        stop.set()
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()

    votes = db.read_votes(study)
    print(f'\nload: {PARTICIPANTS} participants, {len(acked)} votes acknowledged, {len(votes)} stored, '
          f'{stats["requests"]} requests, {stats["unacknowledged"]} unacknowledged and resent, '
          f'{stats["resent_stored_before"]} resends found stored before; killed after {killed_at:.1f} s '
          f'({acked_at_kill} acknowledged), listening again after {restarted_at:.1f} s; {elapsed:.1f} s in all, '
          f'{len(acked) / elapsed:.0f} votes/s overall, {acked_at_kill / killed_at:.0f} votes/s before the kill')
    assert not stats['rejected'], stats['rejected'][:5]
    assert len(acked) == 3000
    stored = {(v['participant'], v['trial']): v for v in votes}
    assert len(stored) == len(votes) == 3000  # one row per (participant, trial)
    assert len({v['vote_id'] for v in votes}) == 3000
    for a in acked:  # each acknowledged vote is stored, once, as sent
        v = stored[(a['participant'], a['trial'])]
        assert (v['vote_id'], v['answer'], v['response_ms']) == (a['vote_id'], a['answer'], a['response_ms'])
