"""The votes of a study in SQLite: one row per vote, WAL mode, every vote committed before it is acknowledged.

``synchronous=FULL``: a committed vote survives the server process being killed and the machine
losing power. Each request opens its own connection (SQLite connections are not shared between threads);
writers queue on SQLite's lock (``BEGIN IMMEDIATE``, busy timeout 30 s).
"""
import os.path as osp
import sqlite3
import time

DB_FILE = 'votes.sqlite'

SCHEMA = """
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY,
    participant TEXT NOT NULL,
    trial INTEGER NOT NULL,
    crop INTEGER NOT NULL,
    pair INTEGER NOT NULL,
    left_method TEXT NOT NULL,
    right_method TEXT NOT NULL,
    answer TEXT NOT NULL CHECK (answer IN ('left', 'right')),
    chosen_method TEXT NOT NULL,
    response_ms INTEGER NOT NULL,
    vote_id TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    UNIQUE (participant, trial)
);
"""
COLUMNS = ('id', 'participant', 'trial', 'crop', 'pair', 'left_method', 'right_method', 'answer', 'chosen_method',
           'response_ms', 'vote_id', 'created_at')


def db_path(study_dir):
    return osp.join(study_dir, DB_FILE)


def connect(study_dir):
    conn = sqlite3.connect(db_path(study_dir), timeout=30, isolation_level=None)
    conn.execute('PRAGMA journal_mode=WAL')
    conn.execute('PRAGMA synchronous=FULL')
    return conn


def init_db(study_dir):
    conn = connect(study_dir)
    try:
        conn.executescript(SCHEMA)
    finally:
        conn.close()


def votes_done(conn, participant):
    return conn.execute('SELECT COUNT(*) FROM votes WHERE participant = ?', (participant, )).fetchone()[0]


class VoteRejected(Exception):
    """A vote that is not stored; ``status`` is the HTTP status to answer with."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def record_vote(conn, participant, trial, crop, pair, left_method, right_method, answer, response_ms, vote_id):
    """Store one vote, or say why not.

    A retry of a stored vote (same ``vote_id``, participant, trial and answer) stores nothing and returns
    False: the client may resend until it gets an answer. Any other second vote for a trial, and any vote
    for a trial ahead of the participant's next one, raises ``VoteRejected(409)``. Returns True when stored.
    """
    chosen = left_method if answer == 'left' else right_method
    conn.execute('BEGIN IMMEDIATE')
    try:
        row = conn.execute('SELECT participant, trial, answer FROM votes WHERE vote_id = ?', (vote_id, )).fetchone()
        if row is not None:
            if tuple(row) == (participant, trial, answer):
                conn.execute('ROLLBACK')
                return False
            raise VoteRejected(409, 'this vote id was already used for another vote')
        done = votes_done(conn, participant)
        if trial < done:
            raise VoteRejected(409, f'trial {trial} already has a vote')
        if trial > done:
            raise VoteRejected(409, f'trial {trial} is ahead of the next trial {done}')
        conn.execute(
            'INSERT INTO votes (participant, trial, crop, pair, left_method, right_method, answer, chosen_method, '
            'response_ms, vote_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
            (participant, trial, crop, pair, left_method, right_method, answer, chosen, response_ms, vote_id,
             time.time()))
        conn.execute('COMMIT')
        return True
    except BaseException:
        if conn.in_transaction:
            conn.execute('ROLLBACK')
        raise


def read_votes(study_dir):
    """All votes as dicts, in the order they were stored."""
    if not osp.isfile(db_path(study_dir)):
        return []
    conn = connect(study_dir)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(f'SELECT {", ".join(COLUMNS)} FROM votes ORDER BY id')]
    finally:
        conn.close()
