"""``basicsr study analyse`` on a fixed vote table whose intervals were computed by hand."""
import csv
import math

import pytest

from adflow_plugin.cli import main
from adflow_plugin.apps.study import db
from adflow_plugin.apps.study.analyse import bradley_terry, cluster_bootstrap_interval, wilson_interval
from adflow_plugin.apps.study.create import load_study

from .conftest import make_study

# Wilson 95% intervals, by hand: centre = (p + z^2/2n) / (1 + z^2/n),
# half width = z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2), z = 1.959964
HAND_WILSON = {(6, 8): (0.40928, 0.92852), (1, 8): (0.02242, 0.47089), (4, 8): (0.21522, 0.78478),
               (7, 8): (0.52911, 0.97758), (0, 5): (0.0, 0.43448), (5, 5): (0.56552, 1.0)}


@pytest.mark.parametrize('k,n', list(HAND_WILSON))
def test_wilson_matches_hand_computation(k, n):
    assert wilson_interval(k, n) == pytest.approx(HAND_WILSON[(k, n)], abs=1e-5)


def test_cluster_bootstrap_cases_checkable_by_hand():
    # all participants alike: every resample gives the same share
    assert cluster_bootstrap_interval([(1, 2)] * 5) == (0.5, 0.5)
    # two opposite participants: resamples give 0, 0.5 or 1 (1/4, 1/2, 1/4): the interval is (0, 1)
    assert cluster_bootstrap_interval([(2, 2), (0, 2)]) == (0.0, 1.0)


def test_bradley_terry_two_methods_is_the_odds_of_winning():
    scores, pseudo = bradley_terry(['A', 'B'], {('A', 'B'): 6, ('B', 'A'): 2})
    assert pseudo == 0 and scores['A'] == pytest.approx(0.5 * math.log(3))
    assert scores['B'] == pytest.approx(-0.5 * math.log(3))
    scores, pseudo = bradley_terry(['A', 'B'], {('A', 'B'): 3})  # B never won: no MLE, pseudo-votes
    assert pseudo == 0.5 and scores['A'] - scores['B'] == pytest.approx(math.log(3.5 / 0.5))


# winner per participant (P0..P3), pair and crop: pair 0 AdFlow-ESRGAN, 1 AdFlow-GT, 2 ESRGAN-GT
WINNERS = {
    0: {0: ('AdFlow', 'AdFlow'), 1: ('AdFlow', 'GT'), 2: ('ESRGAN', 'ESRGAN')},
    1: {0: ('AdFlow', 'AdFlow'), 1: ('GT', 'GT'), 2: ('ESRGAN', 'ESRGAN')},
    2: {0: ('AdFlow', 'AdFlow'), 1: ('GT', 'GT'), 2: ('GT', 'GT')},
    3: {0: ('ESRGAN', 'ESRGAN'), 1: ('GT', 'GT'), 2: ('GT', 'GT')},
}


def fill_votes(study):
    plan = load_study(study)
    conn = db.connect(study)
    try:
        for p, (token, trials) in enumerate(plan['participants'].items()):
            for i, (crop, pair, first_left) in enumerate(trials):
                a, b = plan['pairs'][pair]
                left, right = (a, b) if first_left else (b, a)
                winner = WINNERS[p][pair][crop]
                db.record_vote(conn, token, i, crop, pair, left, right, 'left' if winner == left else 'right',
                               1000 * (p + 1), f'vote-{p}-{i:04d}')
    finally:
        conn.close()
    return plan


def test_analyse_fixed_vote_table(tmp_path, capsys):
    study = make_study(tmp_path, participants=4, crops_per_image=1)
    db.init_db(study)
    plan = fill_votes(study)
    assert plan['pairs'] == [['AdFlow', 'ESRGAN'], ['AdFlow', 'GT'], ['ESRGAN', 'GT']]
    out = tmp_path / 'analysis'
    assert main(['study', 'analyse', study, '-o', str(out)]) == 0
    import json
    summary = json.loads((out / 'summary.json').read_text())
    pairs = {(p['a'], p['b']): p for p in summary['pairs']}
    ae, ag, eg = pairs[('AdFlow', 'ESRGAN')], pairs[('AdFlow', 'GT')], pairs[('ESRGAN', 'GT')]
    assert (ae['wins_a'], ae['votes'], ag['wins_a'], ag['votes'], eg['wins_a'], eg['votes']) == (6, 8, 1, 8, 4, 8)
    assert ae['wilson'] == pytest.approx(HAND_WILSON[(6, 8)], abs=1e-5)
    assert ag['wilson'] == pytest.approx(HAND_WILSON[(1, 8)], abs=1e-5)
    assert eg['wilson'] == pytest.approx(HAND_WILSON[(4, 8)], abs=1e-5)
    # AdFlow-ESRGAN per participant: 2/2, 2/2, 2/2, 0/2; a resample's share is (draws of P0-P2) / 4,
    # Binomial(4, 3/4) / 4: P(0) = 0.4 % < 2.5 % < P(<= 1) = 5.1 %, P(4) = 32 %: the interval is (0.25, 1)
    assert ae['bootstrap'] == [0.25, 1.0]
    # ESRGAN-GT: 2/2, 2/2, 0/2, 0/2: a resample can have no or only ESRGAN-preferring participants
    assert eg['bootstrap'] == [0.0, 1.0]
    # Bradley-Terry: the strengths solve the likelihood equations W_i = sum_j n_ij p_i / (p_i + p_j)
    bt = {m: math.exp(s) for m, s in summary['bradley_terry'].items()}
    wins = {'AdFlow': 6 + 1, 'ESRGAN': 2 + 4, 'GT': 7 + 4}
    for m in bt:
        expected = sum(8 * bt[m] / (bt[m] + bt[o]) for o in bt if o != m)
        assert expected == pytest.approx(wins[m], rel=1e-6)
    assert sum(summary['bradley_terry'].values()) == pytest.approx(0, abs=1e-9)
    # participants: P0 agrees with the others' majority on 3 of 6 trials, P3 on 2 of 6 (worked out by hand)
    parts = list(summary['participants'].values())
    assert [p['majority_agreement'] for p in parts][0] == pytest.approx(3 / 6)
    assert [p['majority_agreement'] for p in parts][3] == pytest.approx(2 / 6)
    assert [p['median_response_ms'] for p in parts] == [1000, 2000, 3000, 4000]
    # circular triads, per crop: P0 crop 0 A>E, A>G, E>G (a ranking), crop 1 A>E, G>A, E>G (a cycle);
    # P1 A>E, G>A, E>G on both crops (cycles); P2 and P3 rank GT first on both crops
    assert [(p['circular_triads'], p['complete_triads']) for p in parts] == [(1, 2), (2, 2), (0, 2), (0, 2)]
    votes = db.read_votes(study)
    for pid, p in summary['participants'].items():
        mine = [v for v in votes if v['participant'] == pid]
        assert p['left_share'] == pytest.approx(sum(v['answer'] == 'left' for v in mine) / 6)
    # Table 1 style rows and the raw votes
    md = (out / 'summary.md').read_text()
    assert '| ESRGAN | 8 | 75.0 | 40.9-92.9 | 25.0-100.0 | 4 |' in md
    assert '| GT | 8 | 12.5 | 2.2-47.1 |' in md
    assert '| 66.7 | 2 of 2 | 2.0 |' in md  # P1: agreement, circular triads, median response
    assert md in capsys.readouterr().out
    with open(out / 'votes.csv') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 24 and [r['vote_id'] for r in rows] == [v['vote_id'] for v in votes]
    assert (out / 'preferences.png').read_bytes().startswith(b'\x89PNG')
    # reference from the other side: GT against AdFlow is 7 of 8
    assert main(['study', 'analyse', study, '-o', str(tmp_path / 'a2'), '--reference', 'GT']) == 0
    summary = json.loads((tmp_path / 'a2' / 'summary.json').read_text())
    ga = [p for p in summary['pairs'] if (p['a'], p['b']) == ('GT', 'AdFlow')][0]
    assert (ga['wins_a'], ga['votes']) == (7, 8) and ga['wilson'] == pytest.approx(HAND_WILSON[(7, 8)], abs=1e-5)
    assert ga['bootstrap'][1] == 1.0


def test_analyse_without_votes_says_so(tmp_path, capsys):
    study = make_study(tmp_path, participants=2)
    assert main(['study', 'analyse', study]) == 2
    err = capsys.readouterr().err
    assert 'has no votes yet' in err and len(err.strip().splitlines()) == 1
