"""``basicsr study create``: file matching, crops cut without resampling, balanced orders, clear refusals."""
import os
import os.path as osp
from collections import Counter

import cv2
import numpy as np
import pytest

from adflow_plugin.cli import main
from adflow_plugin.apps.study.create import load_study

from .conftest import IMAGES, SCALE, method_args


def create(study, dirs, *extra, methods=None):
    extra = list(extra) if '--crop-size' in extra else ['--crop-size', '16'] + list(extra)
    return main(['study', 'create', str(study), '--lr', dirs['lr']] + (methods or method_args(dirs)) + extra)


def test_crops_are_cut_from_the_chosen_files_without_resampling(tmp_path, results):
    study = tmp_path / 'study'
    methods = ['--method', f'AdFlow={results["flow"]}:t=0.8:s=1', '--method', f'ESRGAN={results["esrgan"]}',
               '--method', f'GT={results["gt"]}']
    assert create(study, results, '--crop-size', '24', '--crops-per-image', '3', '--seed', '7',
                  methods=methods) == 0
    plan = load_study(study)
    assert plan['seed'] == 7 and plan['scale'] == SCALE and [i['name'] for i in plan['images']] == list(IMAGES)
    assert plan['images'][0]['sources'] == {
        'AdFlow': osp.join(results['flow'], '0801_t0.8_s1_test_AdFlow_x4.png'),
        'ESRGAN': osp.join(results['esrgan'], '0801_test_ESRGAN_x4.png'), 'GT': osp.join(results['gt'], '0801.png')}
    assert len(plan['crops']) == 6
    public = set(os.listdir(study / 'public'))
    assert len(public) == 2 + 6 * 3  # LR images and crops, nothing else
    for crop in plan['crops']:
        image = plan['images'][crop['image']]
        w, h = image['sr_size']
        x, y, s = crop['x'], crop['y'], crop['size']
        assert x % SCALE == 0 and y % SCALE == 0 and 0 <= x <= w - s and 0 <= y <= h - s and s == 24
        for method, name in crop['files'].items():
            sr = cv2.imread(image['sources'][method], cv2.IMREAD_UNCHANGED)
            cut = cv2.imread(str(study / 'public' / name), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(cut, sr[y:y + s, x:x + s])
            assert method not in name
    for image in plan['images']:
        with open(image['lr'], 'rb') as a, open(study / 'public' / image['lr_public'], 'rb') as b:
            assert a.read() == b.read()
    # the seed fixes crops and orders (tokens and file names are random)
    assert create(tmp_path / 'again', results, '--crop-size', '24', '--crops-per-image', '3', '--seed', '7',
                  methods=methods) == 0
    again = load_study(tmp_path / 'again')
    def where(p):
        return [(c['image'], c['x'], c['y']) for c in p['crops']]
    assert where(again) == where(plan)
    assert list(again['participants'].values()) == list(plan['participants'].values())
    assert (study / 'participants.txt').read_text().split() == list(plan['participants'])


@pytest.mark.parametrize('participants,crops', [(4, 3), (3, 1)])
def test_every_participant_judges_every_crop_and_pair_with_balanced_sides(tmp_path, results, participants, crops):
    study = tmp_path / 'study'
    assert create(study, results, '--crop-size', '16', '--crops-per-image', str(crops), '--participants',
                  str(participants)) == 0
    plan = load_study(study)
    n_crops, n_pairs = 2 * crops, 3
    plans = list(plan['participants'].values())
    assert len(plans) == participants
    for trials in plans:
        assert sorted((c, p) for c, p, _ in trials) == [(c, p) for c in range(n_crops) for p in range(n_pairs)]
        for p in range(n_pairs):
            firsts = sum(left for _, q, left in trials if q == p)
            assert abs(2 * firsts - n_crops) <= 1  # each method of a pair is on the left half of the time
    sides = [{(c, p): left for c, p, left in trials} for trials in plans]
    assert all(sides[1][k] != sides[0][k] for k in sides[0])  # participants 2q, 2q+1: opposite sides
    orders = [[(c, p) for c, p, _ in trials] for trials in plans]
    assert len({tuple(o) for o in orders}) == participants  # each their own order
    assert Counter(plan['pairs'][0]) == Counter(['AdFlow', 'ESRGAN'])


def _drop(results):
    os.remove(osp.join(results['esrgan'], 'img_2_test_ESRGAN_x4.png'))


def _resize(results):
    path = osp.join(results['esrgan'], 'img_2_test_ESRGAN_x4.png')
    cv2.imwrite(path, cv2.imread(path)[:-4])


@pytest.mark.parametrize('change,extra,methods,message', [
    (_drop, [], None, 'method ESRGAN has no file for image img_2'),
    (_resize, [], None, 'image img_2: AdFlow is 80x64 but ESRGAN is 80x60'),
    (None, ['--crop-size', '30'], None, '--crop-size 30 is no multiple of the scale 4'),
    (None, ['--crop-size', '100'], None, '--crop-size 100 is larger than image 0801 (80x64)'),
    (None, [], 'temperatures', 'image 0801 has samples at temperatures 0.8, 1; pick one with AdFlow='),
    (None, [], 'one', 'a study needs at least two methods'),
    (None, [], 'spec', '--method expects NAME=DIR[:t=T][:s=K]'),
    (None, [], 'duplicate', 'method names must be distinct'),
    (None, ['--participants', '0'], None, '--participants must be at least 1'),
    (None, ['--images', '0'], None, '--images must be at least 1'),
])
def test_refusals_are_one_clear_line_and_write_nothing(tmp_path, results, capsys, change, extra, methods, message):
    if change:
        change(results)
    methods = {None: None, 'temperatures': ['--method', f'AdFlow={results["flow"]}', '--method', f'GT={results["gt"]}'],
               'one': ['--method', f'GT={results["gt"]}'], 'spec': ['--method', results['gt'], '--method', 'x'],
               'duplicate': ['--method', f'GT={results["gt"]}', '--method', f'GT={results["esrgan"]}']}[methods]
    before = sorted(os.listdir(tmp_path))
    assert create(tmp_path / 'study', results, *extra, methods=methods) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert sorted(os.listdir(tmp_path)) == before  # no study folder, no temporary folder left


def test_an_existing_study_is_never_overwritten(tmp_path, results, capsys):
    assert create(tmp_path / 'study', results) == 0
    plan = (tmp_path / 'study' / 'study.json').read_text()
    assert create(tmp_path / 'study', results) == 2
    assert 'already exists' in capsys.readouterr().err
    assert (tmp_path / 'study' / 'study.json').read_text() == plan
