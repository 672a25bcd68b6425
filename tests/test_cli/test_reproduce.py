"""``basicsr reproduce`` end to end at its tiny preset, on small real photographs written to disk."""
import json
import os
import re
import shutil
import signal
import subprocess
import time

import cv2
import pytest
import yaml

from adflow_plugin.apps.reproduce import discriminator
from adflow_plugin.data.demo import read_photo
from adflow_plugin.models.discriminator_health import CHANCE_D_PHRASE
from tests.conftest import cli_command

TRAIN = ('brick.png', 'grass.png', 'gravel.png', 'motorcycle_right.png', 'color.png')
EVAL = ('chelsea.png', 'coffee.png')


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp('photos')
    for folder, names in (('train', TRAIN), ('eval', EVAL)):
        os.makedirs(root / folder)
        for name in names:
            img = read_photo(name)
            img = cv2.resize(img, (160, 128), interpolation=cv2.INTER_AREA) if folder == 'train' else img[100:180,
                                                                                                             150:230]
            cv2.imwrite(str(root / folder / name), img)
    return root


def _kill_after_first_stage(args, cwd, out):
    """Start ``basicsr ARGS`` and kill it (SIGKILL: nothing runs on its way out) once it has written its wall
    time after its first training; return what it had recorded."""
    proc = subprocess.Popen(cli_command(args), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (out / 'wall_time.json').is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return json.loads((out / 'wall_time.json').read_text())['invocations']


def test_reproduce_tiny_end_to_end(cli, photos, tmp_path):
    args = ['reproduce', '--train-dir', photos / 'train', '--eval-dir', photos / 'eval', '--out', 'out', '--preset',
            'tiny']
    out = tmp_path / 'out'
    # killed after its first training, the invocation's time so far is on disk, and the next one continues
    killed = _kill_after_first_stage(args, tmp_path, out)
    assert len(killed) == 1 and killed[0]['minutes'] > 0 and killed[0]['jobs'] == 1
    proc = cli(args, cwd=tmp_path)
    for name in ('table.md', 'fig7.png', 'crops.png', 'results.json'):
        assert (out / name).stat().st_size > 0, name
    assert '[14/14] evaluate' in proc.stdout and 'about' in proc.stdout  # a progress line per stage

    results = json.loads((out / 'results.json').read_text())
    runs = ['Bicubic', 'L1_RRDB', 'ESRGAN', 'BaseFlow_K1', 'BaseFlow_K2', 'AdFlow_K1', 'AdFlow_K2']
    assert sorted(results['metrics']) == sorted(runs)
    assert results['warnings'] == []  # per-image means equal what `basicsr test` logged
    assert sorted(results['metrics']['AdFlow_K2']) == ['0', '0.8', '1']  # two sampling temperatures, the mode
    mode = results['metrics']['BaseFlow_K2']['0']['mean']  # T = 0: every sample is the one deterministic output
    assert mode['diversity'] == 0 and mode['lr_psnr_mean'] == mode['lr_psnr_worst'] == mode['lr_psnr']
    for run in runs:
        for summary in results['metrics'][run].values():
            assert sorted(summary['per_image']) == ['chelsea', 'coffee']
            assert summary['worst']['lr_psnr'] == min(v['lr_psnr'] for v in summary['per_image'].values())
    flow = results['metrics']['BaseFlow_K2']['0.9']
    assert {'lr_psnr_mean', 'lr_psnr_worst', 'diversity'} <= set(flow['mean'])
    assert set(flow['test_log']) >= {'psnr', 'lr_psnr', 'lpips', 'diversity'}
    assert results['info']['holdout_photos'] == 2 and results['info']['train_photos'] == 3
    invocations = results['info']['invocations']
    assert len(invocations) == 2 and invocations[0] == killed[0] and invocations[1]['minutes'] > 0
    assert f'Wall time {results["info"]["wall_time_min"]:.1f} min (2 invocations).' in (out / 'table.md').read_text()

    # every method trained on identical data, patches, batch and seed
    trains = [yaml.safe_load((out / 'options' / f'train_{run}.yml').read_text()) for run in runs[1:]]
    shared = {(t['datasets']['train']['dataroot_gt'], t['datasets']['train']['gt_size'],
               t['datasets']['train']['batch_size_per_gpu'], t['manual_seed'], t['datasets']['val']['dataroot_gt'])
              for t in trains}
    assert len(shared) == 1
    adflow = yaml.safe_load((out / 'options' / 'train_AdFlow_K2.yml').read_text())
    assert adflow['val']['best_metric'] == 'lpips' and 'holdout' in adflow['datasets']['val']['dataroot_gt']
    # the paper's lambda on SRFlow's per-pixel NLL, as the shipped stage-2 options
    assert adflow['train']['nll_opt']['unit'] == 'bits_per_pixel_srflow'
    assert adflow['train']['gan_opt']['loss_weight'] == 1e-2
    table = (out / 'table.md').read_text()
    assert '| Bicubic |' in table and '| AdFlow K=2, T=1 |' in table and '## Fig. 7' in table
    assert 'T=0 |' not in table.split('## Fig. 7')[0]  # Table 2 shows samples; the mode is on the ladder
    # the ladder: BaseFlow from the L1 RRDB, AdFlow from ESRGAN (the L1 loss with the GAN term), each at
    # its sampling temperature and at T = 0
    esrgan = results['metrics']['ESRGAN']['-']['mean']
    assert f'| ESRGAN (L1 + GAN) | 0 | - | {esrgan["lr_psnr"]:.2f} |' in table
    assert '| BaseFlow | 2 | 0.9 |' in table and '| BaseFlow | 2 | 0 |' in table and '| AdFlow | 2 | 0 |' in table

    # the L1 rung trains as long as a BaseFlow with its pre-training; ESRGAN and the flows start from its
    # checkpoint at the end of the pre-training
    l1 = yaml.safe_load((out / 'options' / 'train_L1_RRDB.yml').read_text())
    assert l1['train']['total_iter'] == 4 + 4
    start = 'experiments/L1_RRDB/models/net_g_4.pth'
    assert (out / start).is_file()
    esrgan = yaml.safe_load((out / 'options' / 'train_ESRGAN.yml').read_text())
    assert esrgan['path']['pretrain_network_g'] == start
    assert yaml.safe_load((out / 'options' / 'train_BaseFlow_K1.yml').read_text())['network_g'][
        'pretrained_embed'] == start

    # every GAN run's discriminator, read from its training log, in the JSON and the table
    d = results['discriminator']
    assert sorted(d) == ['AdFlow_K1', 'AdFlow_K2', 'ESRGAN']
    assert 0 <= d['AdFlow_K2']['d_acc_real'] <= 1 and d['AdFlow_K2']['gan_to_nll_grad'] > 0
    assert 'd_gap' in d['ESRGAN'] and d['ESRGAN']['dead_warning'] is False and d['ESRGAN']['chance_warning'] is False
    assert '## Discriminators' in table and '| AdFlow_K2 |' in table
    # a stage log that also holds an interrupted attempt (one logged step and an at-chance warning, then
    # started again from scratch) is summarised as the finished training alone
    log = out / 'logs' / 'train_AdFlow_K2.log'
    lines = log.read_text().splitlines(keepends=True)
    first_step = next(i for i, line in enumerate(lines) if '[eta' in line and 'iter:' in line)
    twice = tmp_path / 'twice.log'
    twice.write_text(''.join(lines[:first_step + 1]) + f'2026-01-01 00:00:00,000 WARNING: iter 1: {CHANCE_D_PHRASE} '
                     '(mean accuracy 0.50 over the last 20 logged steps)\n' + ''.join(lines))
    assert discriminator.summarize(twice) == discriminator.summarize(log) == d['AdFlow_K2']

    # the same command again reuses every finished stage
    again = cli(args, cwd=tmp_path)
    assert again.stdout.count('(done before, reused)') == 12  # 6 trainings, 6 tests
    assert json.loads((out / 'wall_time.json').read_text())['invocations'] == invocations  # reusing is not work

    # a test done with other test options (here: before the mode was tested) runs again; its training does not
    marker = out / 'results' / 'test_BaseFlow_K1' / 'reproduce_test.json'
    done = json.loads(marker.read_text())
    marker.write_text(json.dumps(dict(done, val=dict(done['val'], temperature=[0.9]))))
    third = cli(args, cwd=tmp_path)
    assert third.stdout.count('(done before, reused)') == 11 and '] test BaseFlow_K1 |' in third.stdout
    assert json.loads(marker.read_text()) == done


def _log_span(out, run):
    """First and last timestamp of a run's BasicSR training log."""
    from datetime import datetime
    (log, ) = (out / 'experiments' / run).glob(f'train_{run}_*.log')
    stamps = re.findall(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ', log.read_text(), flags=re.M)
    return [datetime.strptime(s, '%Y-%m-%d %H:%M:%S,%f') for s in (stamps[0], stamps[-1])]


def test_reproduce_jobs_runs_stages_side_by_side(cli, photos, tmp_path):
    """--jobs 2: trainings that do not wait on each other run at once as `basicsr` children, with the same
    outputs as one by one; a failing stage stops the reproduction with one line naming it and its log."""
    args = ['reproduce', '--train-dir', photos / 'train', '--eval-dir', photos / 'eval', '--out', 'out', '--preset',
            'tiny', '--jobs', '2']
    proc = cli(args, cwd=tmp_path)
    out = tmp_path / 'out'
    results = json.loads((out / 'results.json').read_text())
    assert sorted(results['metrics']) == sorted(['Bicubic', 'L1_RRDB', 'ESRGAN', 'BaseFlow_K1', 'BaseFlow_K2',
                                                 'AdFlow_K1', 'AdFlow_K2'])
    assert results['warnings'] == [] and proc.stdout.count('] train ') == 6 and proc.stdout.count('] test ') == 6
    (k1_start, k1_end), (k2_start, k2_end) = _log_span(out, 'BaseFlow_K1'), _log_span(out, 'BaseFlow_K2')
    assert k1_start < k2_end and k2_start < k1_end  # the two BaseFlows trained at the same time
    l1_end = _log_span(out, 'L1_RRDB')[1]
    assert l1_end <= min(k1_start, k2_start, _log_span(out, 'ESRGAN')[0])  # all three start from the L1 model
    assert _log_span(out, 'BaseFlow_K2')[1] <= _log_span(out, 'AdFlow_K2')[0]
    info = results['info']
    assert [i['jobs'] for i in info['invocations']] == [2] and info['wall_time_min'] == info['invocations'][0]['minutes']
    assert f'Wall time {info["wall_time_min"]:.1f} min (--jobs 2).' in (out / 'table.md').read_text()
    assert json.loads((out / 'wall_time.json').read_text())['invocations'] == info['invocations']

    # a stage that fails: ESRGAN starts again from an L1 checkpoint that is not a network
    shutil.rmtree(out / 'experiments' / 'ESRGAN')
    (out / 'experiments' / 'L1_RRDB' / 'models' / 'net_g_4.pth').write_text('not weights')
    failed = cli(args, cwd=tmp_path, check=False)
    assert failed.returncode == 2, failed.stderr
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and 'stage "train ESRGAN"' in lines[0] and 'train_ESRGAN.log' in lines[0], lines
    assert len(json.loads((out / 'wall_time.json').read_text())['invocations']) == 2  # the failed one counted too


def test_reproduce_refuses_eval_photos_it_trained_on(cli, photos, tmp_path):
    proc = cli(['reproduce', '--train-dir', photos / 'train', '--eval-dir', photos / 'train', '--out', 'out',
                '--preset', 'tiny', '--holdout', '1'], cwd=tmp_path, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and 'is also a training image' in lines[0], proc.stderr
    too_many = cli(['reproduce', '--train-dir', photos / 'train', '--holdout', '5', '--out', 'held', '--preset', 'tiny'],
                   cwd=tmp_path, check=False)
    assert too_many.returncode == 2 and 'leaves no training photograph' in too_many.stderr
    assert not (tmp_path / 'held').exists()  # refused before anything is written
    no_jobs = cli(['reproduce', '--train-dir', photos / 'train', '--jobs', '0', '--out', 'none', '--preset', 'tiny'],
                  cwd=tmp_path, check=False)
    assert no_jobs.returncode == 2 and '--jobs 0' in no_jobs.stderr and not (tmp_path / 'none').exists()
    missing = cli(['reproduce', '--train-dir', tmp_path / 'nowhere', '--preset', 'tiny'], cwd=tmp_path, check=False)
    assert missing.returncode == 2 and 'mate-backgrounds' in missing.stderr and 'Traceback' not in missing.stderr


def test_reproduce_leaves_smooth_sub_images_out(cli, photos, tmp_path):
    """Sub-images with less detail than --min-detail (default: the flow's dequantisation noise) do not reach the
    training LMDBs: one photograph is a smooth gradient, where a discriminator has nothing to see."""
    from adflow_plugin.apps.reproduce.data import detail, prepare_data
    from adflow_plugin.apps.reproduce.presets import get_preset
    from adflow_plugin.data.recipe import PrepareError

    folder = tmp_path / 'mixed'
    os.makedirs(folder)
    gravel = cv2.imread(str(photos / 'train' / 'gravel.png'))
    ramp = cv2.GaussianBlur(gravel, (0, 0), 25)  # the same colours, no detail left
    cv2.imwrite(str(folder / 'gravel.png'), gravel)
    cv2.imwrite(str(folder / 'smooth.png'), ramp)
    assert detail(ramp) < 0.009 < detail(gravel)
    files = [str(folder / 'gravel.png'), str(folder / 'smooth.png')]
    evals = [str(photos / 'eval' / 'chelsea.png')]
    logs = []
    preset = get_preset('tiny', holdout=0, min_detail=0.009)
    prepare_data(str(tmp_path / 'data'), files, evals, preset, log=logs.append)
    with open(tmp_path / 'data' / 'train' / 'GT.lmdb' / 'meta_info.txt') as f:
        keys = [line.split()[0] for line in f]
    assert keys and all(k.startswith('gravel_') for k in keys), keys
    assert any(f'({len(keys)} of {2 * len(keys)} with detail under 0.009 left out)' in line for line in logs), logs

    with pytest.raises(PrepareError, match='too smooth to train on, or lower --min-detail'):
        prepare_data(str(tmp_path / 'flat'), files[1:], evals, preset, log=logs.append)
    assert not (tmp_path / 'flat').exists()  # nothing half-written
    negative = cli(['reproduce', '--train-dir', folder, '--min-detail', '-1', '--preset', 'tiny', '--out', 'neg'],
                   cwd=tmp_path, check=False)
    assert negative.returncode == 2 and len(negative.stderr.strip().splitlines()) == 1, negative.stderr
    assert '--min-detail -1' in negative.stderr and not (tmp_path / 'neg').exists()


def test_flat_photographs_pack_into_lmdb(tmp_path):
    """Sub-images that compress to almost nothing (a flat colour) still fit their LMDB: BasicSR sizes the map
    from its first image's PNG, which here was too small (MDB_MAP_FULL through `basicsr reproduce`)."""
    import lmdb
    import numpy as np

    from adflow_plugin.data.demo import write_lmdb
    folder = tmp_path / 'sub'
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    for i in range(8):  # sorted first: flat; then detailed ones, which do not compress
        cv2.imwrite(str(folder / f'a{i}.png'), np.full((256, 256, 3), 30 * i, np.uint8))
        cv2.imwrite(str(folder / f'b{i}.png'), rng.integers(0, 256, (256, 256, 3), np.uint8))
    write_lmdb(str(folder), str(tmp_path / 'GT.lmdb'))
    with lmdb.open(str(tmp_path / 'GT.lmdb'), readonly=True, lock=False) as env:
        assert env.stat()['entries'] == 16
