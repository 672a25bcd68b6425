"""``basicsr study serve``: the participants' web app (Flask, served by waitress).

Routes (``<token>`` is a participant's token from ``participants.txt``):

    GET  /p/<token>            the study page (instructions, then one trial at a time)
    GET  /api/<token>/state    progress and the current trial (image URLs only, never method names)
    POST /api/<token>/vote     {"trial": i, "answer": "left"|"right", "response_ms": n, "vote_id": "..."}
    GET  /img/<name>.png       a file of the study's public/ folder (random names; nothing else is served)

A vote is committed to SQLite before the answer is sent, so whatever a participant's browser saw
acknowledged survives a server restart; the page resends an unacknowledged vote with the same
``vote_id``, which the database stores once.
"""
import math
import os.path as osp
import re

from adflow_plugin.apps.study import db
from adflow_plugin.apps.study.create import PUBLIC, load_study

PUBLIC_NAME = re.compile(r'^[0-9a-f]{16}\.png$')
VOTE_ID = re.compile(r'^[A-Za-z0-9_-]{8,64}$')
MAX_RESPONSE_MS = 24 * 3600 * 1000


def trial_view(plan, trials, index):
    """What the page needs for trial ``index`` of a participant: image URLs and the box, nothing else."""
    crop_i, pair_i, first_left = trials[index]
    crop = plan['crops'][crop_i]
    image = plan['images'][crop['image']]
    a, b = plan['pairs'][pair_i]
    left, right = (a, b) if first_left else (b, a)
    w, h = image['sr_size']
    return dict(index=index, lr=f'/img/{image["lr_public"]}', lr_size=image['lr_size'],
                box=[crop['x'] / w, crop['y'] / h, crop['size'] / w, crop['size'] / h],
                left=f'/img/{crop["files"][left]}', right=f'/img/{crop["files"][right]}')


def create_app(study_dir):
    """The Flask application of the study in ``study_dir`` (creates its database if needed)."""
    from flask import Flask, abort, jsonify, render_template, request, send_from_directory

    study_dir = osp.abspath(study_dir)
    plan = load_study(study_dir)
    participants = plan['participants']
    public = osp.join(study_dir, PUBLIC)
    db.init_db(study_dir)
    here = osp.dirname(osp.abspath(__file__))
    app = Flask(__name__, template_folder=osp.join(here, 'templates'), static_folder=osp.join(here, 'static'),
                static_url_path='/static')
    app.config['MAX_CONTENT_LENGTH'] = 4096

    def error(status, message):
        response = jsonify(error=message)
        response.status_code = status
        return response

    @app.after_request
    def headers(response):
        response.headers['X-Content-Type-Options'] = 'nosniff'
        response.headers['Referrer-Policy'] = 'no-referrer'  # links carry the participant's token
        response.headers['X-Frame-Options'] = 'DENY'
        response.headers['Content-Security-Policy'] = "default-src 'self'; img-src 'self'; frame-ancestors 'none'"
        if request.path.startswith(('/api/', '/p/')):
            response.headers['Cache-Control'] = 'no-store'
        return response

    @app.get('/')
    def index():
        return 'Open the link with your participant token that you were given.\n', 404, {'Content-Type': 'text/plain'}

    @app.get('/p/<token>')
    def page(token):
        if token not in participants:
            abort(404)
        return render_template('study.html', token=token)

    def state(token):
        trials = participants[token]
        conn = db.connect(study_dir)
        try:
            done = db.votes_done(conn, token)
        finally:
            conn.close()
        trial = trial_view(plan, trials, done) if done < len(trials) else None
        return dict(done=done, total=len(trials), trial=trial)

    @app.get('/api/<token>/state')
    def get_state(token):
        if token not in participants:
            return error(403, 'unknown participant token')
        return jsonify(state(token))

    @app.post('/api/<token>/vote')
    def vote(token):
        if token not in participants:
            return error(403, 'unknown participant token')
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or set(body) != {'trial', 'answer', 'response_ms', 'vote_id'}:
            return error(400, 'a vote is a JSON object with exactly trial, answer, response_ms, vote_id')
        trials = participants[token]
        trial, answer, ms, vote_id = body['trial'], body['answer'], body['response_ms'], body['vote_id']
        if type(trial) is not int or not 0 <= trial < len(trials):
            return error(400, 'unknown trial')
        if answer not in ('left', 'right'):
            return error(400, 'answer must be "left" or "right"')
        if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not math.isfinite(ms) or \
                not 0 <= ms <= MAX_RESPONSE_MS:
            return error(400, 'response_ms must be a number of milliseconds')
        if not isinstance(vote_id, str) or not VOTE_ID.match(vote_id):
            return error(400, 'vote_id must be 8 to 64 letters, digits, - or _')
        crop_i, pair_i, first_left = trials[trial]
        a, b = plan['pairs'][pair_i]
        left, right = (a, b) if first_left else (b, a)
        conn = db.connect(study_dir)
        try:
            stored = db.record_vote(conn, token, trial, crop_i, pair_i, left, right, answer, int(round(ms)), vote_id)
        except db.VoteRejected as e:
            return error(e.status, str(e))
        finally:
            conn.close()
        return jsonify(stored=stored, **state(token))

    @app.get('/img/<name>')
    def image(name):
        if not PUBLIC_NAME.match(name):
            abort(404)
        return send_from_directory(public, name, max_age=3600)

    return app


def serve(study_dir, host='127.0.0.1', port=8765, threads=8, announce=print):
    """Serve the study until interrupted; prints one link per participant."""
    from waitress import create_server

    app = create_app(study_dir)
    server = create_server(app, host=host, port=port, threads=threads)
    port = server.effective_port
    shown = host if host not in ('0.0.0.0', '::', '') else '<this machine>'
    announce(f'serving {osp.abspath(study_dir)} on http://{host}:{port}/ (Ctrl+C stops; votes are in '
             f'{db.db_path(study_dir)})')
    for token in load_study(study_dir)['participants']:
        announce(f'participant link: http://{shown}:{port}/p/{token}')
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0
