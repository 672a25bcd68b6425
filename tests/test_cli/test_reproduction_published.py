"""The README's "Does it reproduce the paper?" shows the committed full run of ``basicsr reproduce``: its tables
are what the committed ``results.json`` gives, line for line, and its pictures are committed and small."""
import json
import os

import pytest

from adflow_plugin.apps.reproduce import report
from adflow_plugin.apps.reproduce.presets import get_preset

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PUBLISHED = os.path.join(REPO, 'docs', 'reproduction')


@pytest.fixture(scope='module')
def published():
    with open(os.path.join(PUBLISHED, 'results.json')) as f:
        results = json.load(f)
    with open(os.path.join(REPO, 'README.md'), encoding='utf-8') as f:
        readme = f.read()
    return results, results['info']['preset'], readme


def test_the_published_run_is_the_full_preset(published):
    results, preset, _ = published
    assert preset['name'] == 'full' and results['info']['eval_photos'] > 0
    assert set(results['metrics']) >= {'Bicubic', 'L1_RRDB', 'ESRGAN', 'BaseFlow_K4', 'AdFlow_K4'}
    # run with the committed preset (its seconds per iteration only feed the progress line's estimate)
    recorded, committed = ({k: v for k, v in p.items() if k != 'sec_per_iter'} for p in (preset, get_preset('full')))
    assert recorded == json.loads(json.dumps(committed))


@pytest.mark.parametrize('table', ['table2_lines', 'ladder_lines', 'discriminator_lines'])
def test_readme_tables_are_the_jsons(published, table):
    results, preset, readme = published
    make = getattr(report, table)
    lines = make(results) if table == 'discriminator_lines' else make(results, preset)
    missing = [line for line in lines if line not in readme.splitlines()]
    assert not missing, f'README lines that differ from docs/reproduction/results.json: {missing}'


def test_pictures_are_committed_small_and_shown(published):
    _, _, readme = published
    for name in ('fig7.png', 'crops.png'):
        path = os.path.join(PUBLISHED, name)
        assert os.path.getsize(path) < 600 * 1024, name
        assert f'docs/reproduction/{name}' in readme
