"""``basicsr compare``: BasicSR test logs -> markdown table and PNG figures.

One result folder comes from a real ``basicsr test`` run (a tiny random RRDBNet on two demo photos, with
LR-PSNR in its NTIRE variant and LPIPS with a RANDOM backbone, since no AlexNet weights can be downloaded
here); the other is a log written in BasicSR's format for a flow model validated at two temperatures.
"""
import os
import os.path as osp

import cv2
import pytest
import torch
import yaml

from adflow_plugin.apps.compare import CompareError, compare, load_result, parse_log, split_temperature
from adflow_plugin.data.demo import VAL_PHOTOS, read_photo, val_hr
from adflow_plugin.utils.matlab_resize import imresize_uint8


def _block(dataset, metrics, when='2026-01-01 10:00:00,000', it='x'):
    lines = [f'{when} INFO: Validation {dataset}']
    lines += [f'\t # {k}: {v:.4f}\tBest: {v:.4f} @ {it} iter' for k, v in metrics.items()]
    return '\n'.join(lines) + '\n\n'


def _options_dump(name, scale, k=None):
    """What BasicSR's test_pipeline logs through ``dict2str(opt)``."""
    net = '    type: AdFlowNet\n' + (f'    K: {k}\n' if k is not None else '')
    return (f'2026-01-01 10:00:00,000 INFO: \n  name: {name}\n  model_type: AdFlowModel\n  scale: {scale}\n'
            f'  network_g:[\n{net}  ]\n  val:[\n    metrics:[\n      lr_psnr:[\n        type: calculate_lr_psnr\n'
            '      ]\n    ]\n  ]\n  is_train: False\n\n')


def write_result(root, name, scale, blocks, k=None, stamp='20260101_100000'):
    """A results/<name> folder with a BasicSR-format test log: ``blocks`` = {dataset: {metric: value}}."""
    folder = osp.join(str(root), 'results', name)
    os.makedirs(folder, exist_ok=True)
    text = _options_dump(name, scale, k) + ''.join(_block(d, m, it=name) for d, m in blocks.items())
    path = osp.join(folder, f'test_{name}_{stamp}.log')
    with open(path, 'w') as f:
        f.write(text)
    return folder


def _assert_png(path):
    assert osp.isfile(path), path
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    assert img is not None and img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img.std() > 0  # something is drawn


@pytest.fixture(scope='module')
def real_result(tmp_path_factory):
    """``basicsr test`` of a tiny random RRDBNet (x4) on two photos: psnr, lr_psnr (NTIRE variant), lpips."""
    from tests.conftest import run_cli  # a module-scoped fixture cannot use the `cli` fixture
    work = tmp_path_factory.mktemp('compare_real')
    for split in ('GT', 'LRbicx4'):
        (work / 'val' / split).mkdir(parents=True)
    for photo in VAL_PHOTOS:
        hr = val_hr(read_photo(photo))
        name = osp.splitext(photo)[0] + '.png'
        cv2.imwrite(str(work / 'val' / 'GT' / name), hr)
        cv2.imwrite(str(work / 'val' / 'LRbicx4' / name), imresize_uint8(hr, 1 / 4))
    from basicsr.archs.rrdbnet_arch import RRDBNet
    torch.manual_seed(0)
    net = RRDBNet(3, 3, scale=4, num_feat=8, num_block=1, num_grow_ch=4)
    torch.save({'params': net.state_dict()}, work / 'net_g.pth')
    opt = {
        'name': 'ESRGAN_x4', 'model_type': 'SRModel', 'scale': 4, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'test_1': {'name': 'demo_val', 'type': 'PairedImageDataset', 'dataroot_gt': 'val/GT',
                                'dataroot_lq': 'val/LRbicx4', 'io_backend': {'type': 'disk'}}},
        'network_g': {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1,
                      'num_grow_ch': 4},
        'path': {'pretrain_network_g': 'net_g.pth', 'param_key_g': 'params', 'strict_load_g': True},
        'val': {'save_img': False, 'suffix': None, 'metrics': {
            'psnr': {'type': 'calculate_psnr', 'crop_border': 4},
            # stock SRModel does not pass the LR: the NTIRE variant needs only GT and the scale
            'lr_psnr': {'type': 'calculate_lr_psnr', 'variant': 'ntire', 'scale': 4},
            'lpips': {'type': 'calculate_lpips', 'random_backbone': True}}},
    }
    (work / 'test.yml').write_text(yaml.safe_dump(opt))
    run_cli(['test', '-opt', 'test.yml'], cwd=work, timeout=300)
    return work


def test_real_log_is_parsed(real_result):
    r = load_result(str(real_result / 'results' / 'ESRGAN_x4'))
    assert r.experiment == 'ESRGAN_x4' and r.scale == 4 and r.k is None
    assert set(r.values) == {'demo_val'}
    assert set(r.values['demo_val']) == {'psnr', 'lr_psnr', 'lpips'}
    assert 0 < r.values['demo_val']['lr_psnr'] < 100
    assert r.options['network_g']['num_block'] == 1


def test_compare_two_result_folders(real_result, cli):
    write_result(real_result, 'AdFlow_x4_K16', 4, {
        'demo_val': {'psnr': 25.0, 'lr_psnr_t0.9': 49.5, 'lr_psnr_t1.0': 47.25, 'lpips_t0.9': 0.21,
                     'lpips_t1.0': 0.19}})
    proc = cli(['compare', 'results/ESRGAN_x4', 'results/AdFlow_x4_K16', '--label', 'AdFlow_x4_K16=AdFlow',
                '--k', 'ESRGAN_x4=L1', '-o', 'cmp'], cwd=real_result)
    out = real_result / 'cmp'
    table = (out / 'comparison.md').read_text()
    assert table in proc.stdout
    assert '## lr_psnr ↑' in table and '## lpips ↓' in table and '## psnr ↑' in table
    assert '| Method | demo_val |' in table
    assert '| AdFlow (τ=0.9) | **49.50** |' in table
    assert '| AdFlow (τ=1.0) | 47.25 |' in table
    assert '| ESRGAN_x4 |' in table
    assert '`AdFlow_x4_K16`, 4x, K=16' in table and '`ESRGAN_x4`, 4x, K=L1' in table
    for png in ('lr_psnr_vs_lpips.png', 'k_sweep.png'):
        _assert_png(str(out / png))


def test_table2_layout_scales_labels_and_k(tmp_path):
    """Experiments at two scales share a label: columns become '<scale>x <dataset>', like Table 2."""
    dirs = [
        write_result(tmp_path, 'ESRGAN_x4', 4, {'DIV2K': {'lr_psnr': 39.0, 'lpips': 0.115},
                                                 'BSD100': {'lr_psnr': 37.7, 'lpips': 0.161}}),
        write_result(tmp_path, 'ESRGAN_x8', 8, {'DIV2K': {'lr_psnr': 31.3, 'lpips': 0.28}}),
        write_result(tmp_path, 'AdFlow_x4', 4, {'DIV2K': {'lr_psnr': 45.2, 'lpips': 0.11},
                                                 'BSD100': {'lr_psnr': 45.6, 'lpips': 0.17}}, k=16),
        write_result(tmp_path, 'AdFlow_x8', 8, {'DIV2K': {'lr_psnr': 46.0, 'lpips': 0.25}}, k=8),
    ]
    labels = {'ESRGAN_x4': 'ESRGAN', 'ESRGAN_x8': 'ESRGAN', 'AdFlow_x4': 'AdFlow', 'AdFlow_x8': 'AdFlow'}
    out = compare(dirs, str(tmp_path / 'out'), labels=labels, k_option='network_g.K')
    table = out['markdown']
    assert '| Method | 4x DIV2K | 4x BSD100 | 8x DIV2K |' in table
    assert '| ESRGAN | 39.00 | 37.70 | 31.30 |' in table
    assert '| AdFlow | **45.20** | **45.60** | **46.00** |' in table
    assert '| AdFlow | **0.1100** | 0.1700 | **0.2500** |' in table  # lower LPIPS is better
    assert [r.k for r in out['results']] == [None, None, 16, 8]
    for path in out['files'][1:]:
        _assert_png(path)


def test_train_log_last_block_wins_and_k_from_name(tmp_path):
    folder = tmp_path / 'experiments' / 'AdFlow_x8_K4'
    folder.mkdir(parents=True)
    text = (_options_dump('AdFlow_x8_K4', 8) + _block('DIV2K', {'lpips': 0.4, 'lr_psnr': 30.0}, it='1000') +
            '2026-01-01 11:00:00,000 INFO: [AdFlo..][epoch:  1, iter:   2,000, lr:(1.000e-05,)] nll: -1.2\n' +
            _block('DIV2K', {'lpips': 0.3, 'lr_psnr': 41.0}, when='2026-01-01 12:00:00,000', it='2000'))
    (folder / 'train_AdFlow_x8_K4_20260101_100000.log').write_text(text)
    r = load_result(str(folder))
    assert r.values == {'DIV2K': {'lpips': 0.3, 'lr_psnr': 41.0}}
    assert r.k == 4 and r.scale == 8


def test_newest_test_log_is_read(tmp_path):
    write_result(tmp_path, 'M', 4, {'DIV2K': {'psnr': 20.0}}, stamp='20260101_100000')
    folder = write_result(tmp_path, 'M', 4, {'DIV2K': {'psnr': 21.0}}, stamp='20260102_100000')
    assert load_result(folder).values['DIV2K']['psnr'] == 21.0


def test_parse_log_options_dump(tmp_path):
    path = tmp_path / 'x.log'
    path.write_text(_options_dump('AdFlow', 6, k=2) + _block('Urban100', {'lr_psnr_t1.0': 36.0}))
    options, values = parse_log(str(path))
    assert options['name'] == 'AdFlow' and options['scale'] == 6 and options['network_g'] == {
        'type': 'AdFlowNet', 'K': 2}
    assert options['val']['metrics']['lr_psnr']['type'] == 'calculate_lr_psnr' and options['is_train'] is False
    assert values == {'Urban100': {'lr_psnr_t1.0': 36.0}}


def test_better_key_in_the_options_sets_the_direction(tmp_path):
    folder = tmp_path / 'results' / 'M'
    folder.mkdir(parents=True)
    dump = _options_dump('M', 4).replace('        type: calculate_lr_psnr\n', '        type: calculate_lr_psnr\n'
                                         '        better: lower\n')
    (folder / 'test_M_20260101_100000.log').write_text(dump + _block('DIV2K', {'lr_psnr': 30.0}))
    other = write_result(tmp_path, 'N', 4, {'DIV2K': {'lr_psnr': 40.0}})
    table = compare([str(folder), other], str(tmp_path / 'out'))['markdown']
    assert '## lr_psnr ↓' in table and '| M | **30.00** |' in table


def test_split_temperature():
    assert split_temperature('lr_psnr_t0.9') == ('lr_psnr', 0.9)
    assert split_temperature('lpips_t1') == ('lpips', 1.0)
    assert split_temperature('lr_psnr') == ('lr_psnr', None)
    assert split_temperature('psnr_test') == ('psnr_test', None)


def test_conflicting_results_are_reported(tmp_path):
    a = write_result(tmp_path, 'A', 4, {'DIV2K': {'psnr': 20.0}})
    b = write_result(tmp_path, 'B', 4, {'DIV2K': {'psnr': 21.0}})
    with pytest.raises(CompareError, match='two results for X on DIV2K'):
        compare([a, b], str(tmp_path / 'out'), labels={'A': 'X', 'B': 'X'})


def test_missing_figure_metrics_are_skipped_not_fatal(tmp_path):
    a = write_result(tmp_path, 'A', 4, {'DIV2K': {'psnr': 20.0}})
    out = compare([a], str(tmp_path / 'out'))
    assert out['files'] == [str(tmp_path / 'out' / 'comparison.md')]
    assert len(out['skipped']) == 2


def test_cli_error_is_one_line(tmp_path, cli):
    proc = cli(['compare', 'results/nothing'], cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == 'basicsr compare: error: results/nothing: no such result folder or log file'


@pytest.mark.parametrize('extra, message', [
    (['--label', 'A'], '--label expects NAME=VALUE'),
    (['--k', 'A=deep'], 'integer or L1'),
    (['--label', 'B=b'], 'unknown experiment(s): B'),
    (['--metrics', 'lpips'], 'metric(s) lpips not in any log'),
])
def test_cli_errors_in_process(tmp_path, capsys, extra, message):
    from adflow_plugin.cli import main
    a = write_result(tmp_path, 'A', 4, {'DIV2K': {'psnr': 20.0}})
    assert main(['compare', a, '-o', str(tmp_path / 'out')] + extra) == 2
    err = capsys.readouterr().err
    assert err.startswith('basicsr compare: error: ') and message in err and err.count('\n') == 1


def test_folder_without_log(tmp_path):
    with pytest.raises(CompareError, match='no BasicSR log'):
        load_result(str(tmp_path))
