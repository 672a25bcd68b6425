"""``basicsr prepare-data``: DF2K LMDBs and test folders, restarts, kills, bad input, and training from it.

Every set is small: generated images plus photographs shipped with scikit-image, sub-images of
144 px every 96 px (multiples of 48, like the recipe's 480/240) so each LMDB holds tens of keys.
"""
import glob
import os
import os.path as osp
import re
import shutil
import signal
import subprocess
import time
from importlib.resources import files

import cv2
import numpy as np
import pytest
import yaml

from adflow_plugin.cli import main as cli_main
from adflow_plugin.data import image_ops, lmdb_pack, prepare, recipe, sources
from adflow_plugin.data.prepare import prepare_datasets
from adflow_plugin.data.recipe import PrepareError
from adflow_plugin.data.verify import verify_datasets
from adflow_plugin.utils.matlab_resize import imresize_uint8
from tests.conftest import cli_command

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SKIMAGE = str(files('skimage') / 'data')
CROP = ['--crop-size', '144', '--step', '96']
SMALL = dict(crop_size=144, step=96)


def synth(h, w, seed=0):
    """A textured colour image: smooth random colours plus grain."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8), (w, h),
                      interpolation=cv2.INTER_CUBIC)
    return cv2.add(base, rng.integers(0, 40, (h, w, 3), dtype=np.uint8))


def make_downloads(root):
    """The download layout with 4 training and 3 test images (grayscale, RGBA, 16-bit among them)."""
    d = osp.join(root, 'datasets', 'downloads')
    for f in ('DIV2K_train_HR', 'Flickr2K/Flickr2K_HR', 'DIV2K_valid_HR', 'BSD100/HR', 'Urban100'):
        os.makedirs(osp.join(d, f))
    shutil.copy(osp.join(SKIMAGE, 'astronaut.png'), osp.join(d, 'DIV2K_train_HR', '0001.png'))
    shutil.copy(osp.join(SKIMAGE, 'coffee.png'), osp.join(d, 'DIV2K_train_HR', '0002.png'))
    cv2.imwrite(osp.join(d, 'Flickr2K/Flickr2K_HR', '000001.png'), synth(200, 300))
    shutil.copy(osp.join(SKIMAGE, 'camera.png'), osp.join(d, 'Flickr2K/Flickr2K_HR', '000002.png'))  # grayscale
    shutil.copy(osp.join(SKIMAGE, 'chelsea.png'), osp.join(d, 'DIV2K_valid_HR', '0801.png'))
    cv2.imwrite(osp.join(d, 'BSD100/HR', '3096.png'), cv2.cvtColor(synth(150, 200, 1), cv2.COLOR_BGR2BGRA))
    cv2.imwrite(osp.join(d, 'Urban100', 'img_001.png'), synth(100, 150, 2).astype(np.uint16) * 257)
    with open(osp.join(d, 'Urban100', 'readme.txt'), 'w') as f:
        f.write('not an image')
    return d


def lmdb_keys(path):
    return [k for k, _ in lmdb_pack.read_meta_info(path)]


def snapshot(root):
    """{path: mtime} of every file under root/datasets except the downloads and the lock."""
    out = {}
    for p in glob.glob(osp.join(root, 'datasets', '**', '*'), recursive=True):
        if osp.isfile(p) and '/downloads/' not in p and not p.endswith(prepare.LOCK_FILE):
            out[p] = os.stat(p).st_mtime_ns
    return out


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
    """All four sets at 4x, 6x and 8x, prepared through the command (in this process, 2 workers)."""
    root = str(tmp_path_factory.mktemp('prepare'))
    make_downloads(root)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        start = time.time()
        assert cli_main(['prepare-data', '--workers', '2'] + CROP) == 0
        print(f'prepare-data: {time.time() - start:.1f} s')
    finally:
        os.chdir(cwd)
    return root


def test_sizes_and_positions():
    assert recipe.TRAIN_HR_MULTIPLE == 48
    assert [recipe.hr_multiple([s]) for s in (4, 6, 8)] == [8, 48, 16]
    assert recipe.hr_multiple([4, 8]) == 16 and recipe.hr_multiple([4, 6, 8]) == 48
    # BasicSR's extract_subimages placement, thresh_size 0: every step, then one crop flush with the end
    assert image_ops.subimage_positions(1392, 480, 240) == [0, 240, 480, 720, 912]
    assert image_ops.subimage_positions(960, 480, 240) == [0, 240, 480]
    assert image_ops.subimage_positions(479, 480, 240) == []
    # a DIV2K-sized image: every position is a multiple of every scale after the crop to 48
    h, w = 1356 // 48 * 48, 2040 // 48 * 48
    for p in image_ops.subimage_positions(h, 480, 240) + image_ops.subimage_positions(w, 480, 240):
        assert p % 24 == 0


def test_layout_and_outputs(prepared):
    d = osp.join(prepared, 'datasets')
    paths = prepare.output_paths(d)
    hr_keys = lmdb_keys(paths['DF2K']['gt'])
    # 0001, 0002 and 000001; 000002, the last of the two Flickr2K images, is held out (at most half of them)
    assert len(hr_keys) == 25 + 24 + 6 and hr_keys[0] == '000001_s001' and '0002_s024' in hr_keys
    assert not any(k.startswith('000002_') for k in hr_keys)
    for s in (4, 6, 8):
        meta = lmdb_pack.read_meta_info(paths['DF2K'][f'lq_x{s}'])
        assert [k for k, _ in meta] == hr_keys
        assert {shape for _, shape in meta} == {(144 // s, 144 // s, 3)}
    assert not glob.glob(osp.join(d, 'DF2K', '*_sub')), 'sub-image folders are removed once packed'
    assert not glob.glob(osp.join(d, '**', '*.partial.lmdb'), recursive=True)
    # test sets: one GT folder for every scale, cropped to 48, LR exactly GT/s and bicubic(GT)
    for name, stem, size in (('DIV2K_val', '0801', (288, 432)), ('BSD100', '3096', (144, 192)),
                             ('Urban100', 'img_001', (96, 144))):
        gt = cv2.imread(osp.join(paths[name]['gt'], f'{stem}.png'), cv2.IMREAD_UNCHANGED)
        assert gt.shape == size + (3, ) and gt.dtype == np.uint8
        for s in (4, 6, 8):
            lr = cv2.imread(osp.join(paths[name][f'lq_x{s}'], f'{stem}.png'), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(lr, imresize_uint8(gt, 1 / s))
    # grayscale replicated, alpha dropped, 16-bit converted: the same pixels as an 8-bit colour read
    gt = cv2.imread(osp.join(paths['Urban100']['gt'], 'img_001.png'))
    np.testing.assert_array_equal(gt, synth(100, 150, 2)[:96, :144])


def test_holdout_slice_is_written_and_not_trained_on(prepared):
    """The last Flickr2K image (of two: at most half) is in DF2K_holdout as GT + LR, and in no DF2K LMDB."""
    paths = prepare.output_paths(osp.join(prepared, 'datasets'))
    assert sorted(os.listdir(paths['DF2K_holdout']['gt'])) == ['000002.png']
    gt = cv2.imread(osp.join(paths['DF2K_holdout']['gt'], '000002.png'), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(gt, cv2.imread(osp.join(SKIMAGE, 'camera.png'))[:480, :480])  # cropped to 48
    for s in (4, 6, 8):
        lr = cv2.imread(osp.join(paths['DF2K_holdout'][f'lq_x{s}'], '000002.png'), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(lr, imresize_uint8(gt, 1 / s))
    for key in ('gt', 'lq_x4', 'lq_x6', 'lq_x8'):
        assert not [k for k in lmdb_keys(paths['DF2K'][key]) if k.startswith('000002_')], key


def test_split_holdout_takes_the_last_flickr2k_images():
    spec = sources.TRAIN_SETS['DF2K']
    div2k = sources.Source('DF2K', spec[0], 'd', {f'{i:04d}': f'd/{i:04d}.png' for i in range(1, 801)})
    flickr = sources.Source('DF2K', spec[1], 'f', {f'{i:06d}': f'f/{i:06d}.png' for i in range(2650, 0, -1)})
    train, held = sources.split_holdout([div2k, flickr])
    assert sorted(held.images) == [f'{i:06d}' for i in range(2621, 2651)] and held.set_name == 'DF2K_holdout'
    assert len(train[0].images) == 800 and len(train[1].images) == 2620
    assert not set(train[1].images) & set(held.images)
    assert sources.split_holdout([div2k, flickr], 0)[1] is None
    with pytest.raises(PrepareError, match='--holdout'):
        sources.split_holdout([div2k, flickr], -1)


def test_shipped_adflow_options_validate_on_the_holdout(prepared, tmp_path, monkeypatch):
    """train_AdFlow_x4.yml's validation (its dataset and metrics; LPIPS with a random backbone, a tiny
    generator) runs on the prepared held-out slice and keeps net_g_best.pth by LPIPS."""
    from basicsr.data import build_dataloader, build_dataset

    from tests.conftest import in_process_model, tiny_flow_options
    with open(osp.join(REPO, 'options', 'train_AdFlow_x4.yml')) as f:
        shipped = yaml.safe_load(f)
    assert shipped['datasets']['val']['dataroot_gt'] == 'datasets/DF2K_holdout/GT'
    assert shipped['val']['best_metric'] == 'lpips'
    opt = tiny_flow_options({'train': {'gt_lmdb': 'unused', 'lq_x4_lmdb': 'unused'}}, 'holdout_val', stage=2,
                            val=False)
    opt['datasets']['val'] = shipped['datasets']['val']
    opt['val'] = shipped['val']
    opt['val']['metrics']['lpips']['random_backbone'] = True  # no AlexNet weights here
    monkeypatch.chdir(prepared)  # the options' dataroots are relative to the repository root
    model = in_process_model(opt, tmp_path)
    os.makedirs(model.opt['path']['models'])
    val_opt = model.opt['datasets']['val']
    loader = build_dataloader(build_dataset(val_opt), val_opt, num_gpu=0, dist=False, sampler=None, seed=0)
    assert len(loader) == 1
    model.validation(loader, 5, None, False)
    assert set(model.metric_results) == {'psnr', 'lr_psnr', 'lpips'}
    assert model.best_metric_results['DF2K_holdout']['lpips']['iter'] == 5
    assert osp.isfile(osp.join(model.opt['path']['models'], 'net_g_best.pth'))


def test_lmdb_subimages_are_crops_of_the_whole_image_lr(prepared):
    """HR key s00k and LR key s00k cover the same region; LR sub = crop of bicubic(whole cropped HR)."""
    import lmdb
    d = osp.join(prepared, 'datasets', 'DF2K')
    hr = cv2.imread(osp.join(SKIMAGE, 'astronaut.png'))[:480, :480]
    lr = imresize_uint8(hr, 1 / 6)
    # astronaut: positions 0, 96, 192, 288, 336 on both sides; key s007 is row 1, column 1 (96, 96)
    for name, img, y, size in (('DF2K_HR_sub', hr, 96, 144), ('DF2K_LRbicx6_sub', lr, 16, 24)):
        env = lmdb.open(osp.join(d, name + '.lmdb'), readonly=True, lock=False)
        with env.begin() as txn:
            sub = cv2.imdecode(np.frombuffer(txn.get(b'0001_s007'), np.uint8), cv2.IMREAD_UNCHANGED)
        env.close()
        np.testing.assert_array_equal(sub, img[y:y + size, y:y + size])


def test_rerun_does_no_work_and_verifies(prepared, capsys, monkeypatch):
    before = snapshot(prepared)
    monkeypatch.chdir(prepared)
    capsys.readouterr()
    assert cli_main(['prepare-data', '--workers', '2', '--verify'] + CROP) == 0
    out = capsys.readouterr().out
    assert 'nothing to do, every output under datasets is complete (0 images processed)' in out
    for name in sources.SET_NAMES:
        assert f'{name}: complete' in out
    assert 'DF2K_LRbicx8_sub.lmdb: keys = HR keys, all (18,18,3) = HR/8; 20 samples: max |LR - bicubic(HR)| = 0' \
        in out
    assert 'Urban100/LRbicx6: names and shapes pair with GT/6' in out
    assert snapshot(prepared) == before, 're-run rewrote files'


def test_train_from_lmdb(prepared, cli, tmp_path):
    """A few iterations of BasicSR's stock RRDBNet (SRModel) read from the prepared LMDBs."""
    opt = {
        'name': 'prepare_data_RRDB_x4', 'model_type': 'SRModel', 'scale': 4, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'train': {
            'name': 'DF2K', 'type': 'PairedImageDataset', 'dataroot_gt': 'datasets/DF2K/DF2K_HR_sub.lmdb',
            'dataroot_lq': 'datasets/DF2K/DF2K_LRbicx4_sub.lmdb', 'filename_tmpl': '{}',
            'io_backend': {'type': 'lmdb'}, 'gt_size': 48, 'use_hflip': True, 'use_rot': True,
            'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 1, 'prefetch_mode': None}},
        'network_g': {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1,
                      'num_grow_ch': 4},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 2e-4, 'weight_decay': 0, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5}, 'total_iter': 3,
                  'warmup_iter': -1, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 100, 'use_tb_logger': False,
                   'wandb': {'project': None, 'resume_id': None}},
    }
    path = tmp_path / 'train_prepared_x4.yml'
    path.write_text(yaml.safe_dump(opt))
    cli(['train', '-opt', path], cwd=prepared)
    logs = glob.glob(osp.join(prepared, 'experiments', opt['name'], 'train_*.log'))
    text = open(logs[0]).read()
    assert 'Number of train images: 55' in text and re.search(r'iter:\s+3,', text) and 'l_pix' in text
    assert osp.isfile(osp.join(prepared, 'experiments', opt['name'], 'models', 'net_g_latest.pth'))


def test_kill_and_resume(tmp_path):
    """SIGKILL mid-way, then the same command completes, writes what was missing and verifies."""
    d = osp.join(tmp_path, 'datasets', 'downloads')
    for sub in ('DIV2K_train_HR', 'Flickr2K/Flickr2K_HR'):
        os.makedirs(osp.join(d, sub))
    img = synth(336, 336, 3)
    n = 16
    for i in range(n):
        folder, name = ('DIV2K_train_HR', f'{i + 1:04d}') if i < n // 2 else ('Flickr2K/Flickr2K_HR', f'{i:06d}')
        cv2.imwrite(osp.join(d, folder, name + '.png'), np.roll(img, 7 * i, axis=1))
    argv = ['prepare-data', '--sets', 'DF2K', '--workers', '2', '--holdout', '0'] + CROP
    # the real command in its own process, as a user runs it
    proc = subprocess.Popen(cli_command(argv), cwd=str(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = osp.join(tmp_path, 'datasets', 'DF2K', 'DF2K_LRbicx8_sub', prepare.DONE_FILE)
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if osp.isfile(log) and len(open(log).readlines()) >= 3:
                break
            time.sleep(0.01)
        assert proc.poll() is None, f'prepare-data ended (exit code {proc.returncode}) before it could be killed'
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    finished = len(prepare._read_done(osp.dirname(log)))  # the x8 log is written last for each image
    assert 3 <= finished < n
    out = osp.join(tmp_path, 'datasets')
    assert not glob.glob(osp.join(out, 'DF2K', '*_sub.lmdb')), 'a killed run left an LMDB that looks complete'
    summary = prepare_datasets(d, out, sets=['DF2K'], workers=2, log=lambda m: None, holdout=0, **SMALL)
    assert summary == {'images': n - finished, 'lmdbs': 4}  # exactly the images the killed run had not logged
    verify_datasets(out, sets=['DF2K'], samples=5, log=lambda m: None)
    assert len(lmdb_keys(osp.join(out, 'DF2K', 'DF2K_HR_sub.lmdb'))) == n * 9


def test_failed_check_never_leaves_a_complete_looking_lmdb(tmp_path, monkeypatch):
    """An LMDB is written under .partial.lmdb and renamed only after its check passes."""
    d = osp.join(tmp_path, 'downloads')
    os.makedirs(osp.join(d, 'DIV2K_train_HR'))
    os.makedirs(osp.join(d, 'Flickr2K_HR'))
    cv2.imwrite(osp.join(d, 'DIV2K_train_HR', '0001.png'), synth(192, 192))
    cv2.imwrite(osp.join(d, 'Flickr2K_HR', '000001.png'), synth(144, 240, 1))
    out = osp.join(tmp_path, 'out')
    real = lmdb_pack.check_lmdb

    def fail_on_partial(path, *args, **kwargs):
        if path.endswith('.partial.lmdb'):
            raise PrepareError(f'{path}: simulated damage')
        return real(path, *args, **kwargs)

    monkeypatch.setattr(lmdb_pack, 'check_lmdb', fail_on_partial)
    with pytest.raises(PrepareError, match='simulated damage'):
        prepare_datasets(d, out, sets=['DF2K'], scales=[4], workers=1, log=lambda m: None, **SMALL)
    assert glob.glob(osp.join(out, 'DF2K', '*.partial.lmdb'))
    assert not glob.glob(osp.join(out, 'DF2K', '*_sub.lmdb'))
    monkeypatch.setattr(lmdb_pack, 'check_lmdb', real)
    summary = prepare_datasets(d, out, sets=['DF2K'], scales=[4], workers=1, log=lambda m: None, **SMALL)
    assert summary == {'images': 0, 'lmdbs': 2}  # the sub-images were done: only packing is redone
    assert not glob.glob(osp.join(out, 'DF2K', '*.partial.lmdb'))
    # a scale added later reuses the HR LMDB and pairs with it
    summary = prepare_datasets(d, out, sets=['DF2K'], scales=[4, 8], workers=1, log=lambda m: None, **SMALL)
    assert summary == {'images': 2, 'lmdbs': 1}
    verify_datasets(out, sets=['DF2K'], scales=[4, 8], log=lambda m: None)


def test_read_image_conversions_and_damage(tmp_path):
    img = synth(20, 30)
    cases = {
        'gray.png': (cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), 'grayscale image replicated to 3 channels'),
        'rgba.png': (cv2.cvtColor(img, cv2.COLOR_BGR2BGRA), 'alpha channel dropped'),
        'deep.png': (img.astype(np.uint16) * 257, '16-bit image converted to 8 bits'),
        'gray16.png': (cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257, 'grayscale'),
    }
    for name, (data, note) in cases.items():
        cv2.imwrite(str(tmp_path / name), data)
        out, notes = image_ops.read_image(str(tmp_path / name))
        assert out.shape == (20, 30, 3) and out.dtype == np.uint8
        assert any(note in n and name in n for n in notes), notes
    np.testing.assert_array_equal(image_ops.read_image(str(tmp_path / 'deep.png'))[0], img)
    cv2.imwrite(str(tmp_path / 'a.png'), img)
    cv2.imwrite(str(tmp_path / 'a.jpg'), img)
    for ext in ('png', 'jpg'):
        data = open(tmp_path / f'a.{ext}', 'rb').read()
        (tmp_path / f'cut.{ext}').write_bytes(data[:len(data) // 2])
        with pytest.raises(PrepareError, match=f'cut.{ext}: truncated'):
            image_ops.read_image(str(tmp_path / f'cut.{ext}'))
    (tmp_path / 'text.png').write_text('hello')
    with pytest.raises(PrepareError, match='text.png: not a readable image'):
        image_ops.read_image(str(tmp_path / 'text.png'))
    (tmp_path / 'empty.png').write_bytes(b'')
    with pytest.raises(PrepareError, match='empty.png: empty file'):
        image_ops.read_image(str(tmp_path / 'empty.png'))


def test_accepted_download_layouts(tmp_path):
    """Images directly in the folder, in HR/ (EDSR's benchmark.tar) or as SelfExSR's image_SRF_k/*_HR.png."""
    img = synth(48, 48)
    for layout, files_ in (('direct', ['a.png', 'b.jpg']), ('HR', ['HR/a.png', 'HR/b.png', 'LR_bicubic/X4/ax4.png']),
                           ('srf', ['image_SRF_2/img_001_SRF_2_HR.png', 'image_SRF_2/img_001_SRF_2_LR.png',
                                    'image_SRF_4/img_001_SRF_4_HR.png'])):
        for f in files_:
            os.makedirs(osp.dirname(osp.join(tmp_path, layout, f)), exist_ok=True)
            cv2.imwrite(osp.join(tmp_path, layout, f), img)
    assert sorted(sources.find_source_images(osp.join(tmp_path, 'HR'))[0]) == ['a', 'b']
    found = sources.find_source_images(osp.join(tmp_path, 'srf'))[0]
    assert list(found) == ['img_001'] and found['img_001'].endswith('image_SRF_2/img_001_SRF_2_HR.png')
    cv2.imwrite(osp.join(tmp_path, 'direct', 'a.jpg'), img)
    with pytest.raises(PrepareError, match=r'a.jpg and .*a.png have the same name|a.png and .*a.jpg have the same'):
        sources.find_source_images(osp.join(tmp_path, 'direct'))


def _train_downloads(tmp_path, sizes=((192, 240), )):
    d = osp.join(tmp_path, 'downloads')
    os.makedirs(osp.join(d, 'DIV2K_train_HR'))
    os.makedirs(osp.join(d, 'Flickr2K', 'Flickr2K_HR'))
    for i, (h, w) in enumerate(sizes):
        cv2.imwrite(osp.join(d, 'DIV2K_train_HR', f'{i + 1:04d}.png'), synth(h, w, i))
    cv2.imwrite(osp.join(d, 'Flickr2K', 'Flickr2K_HR', '000001.png'), synth(144, 144, 9))
    return d


def _run(d, out, **kwargs):
    kwargs = dict(dict(sets=['DF2K'], scales=[4], workers=1, log=lambda m: None, **SMALL), **kwargs)
    return prepare_datasets(d, out, **kwargs)


def test_bad_input_errors(tmp_path):
    d = _train_downloads(tmp_path)
    out = osp.join(tmp_path, 'out')
    with pytest.raises(PrepareError, match=r'DIV2K_val: folder not found: .*DIV2K_valid_HR \(put the folder'):
        _run(d, out, sets=['DIV2K_val'])
    os.makedirs(osp.join(d, 'DIV2K_valid_HR'))
    with pytest.raises(PrepareError, match='DIV2K_valid_HR holds no images'):
        _run(d, out, sets=['DIV2K_val'])
    # an image smaller than the sub-image (training) or than the GT multiple (test)
    cv2.imwrite(osp.join(d, 'DIV2K_train_HR', '0002.png'), synth(100, 400))
    with pytest.raises(PrepareError, match=r'0002.png: 400x100 image \(384x96 after cropping to a multiple of 48\) '
                       r'is smaller than the 144x144 sub-image'):
        _run(d, out)
    os.remove(osp.join(d, 'DIV2K_train_HR', '0002.png'))
    cv2.imwrite(osp.join(d, 'DIV2K_valid_HR', '0801.png'), synth(40, 400))
    with pytest.raises(PrepareError, match='0801.png: 400x40 image is smaller than 48 px'):
        _run(d, out, sets=['DIV2K_val'], scales=[4, 6])
    # undecodable file with an image name: the run stops naming it; the earlier run's partial
    # folder (other scales, other source) is started over, not refused
    (tmp_path / 'downloads' / 'DIV2K_valid_HR' / '0801.png').write_text('not a png')
    logs = []
    with pytest.raises(PrepareError, match='0801.png: not a readable image'):
        _run(d, out, sets=['DIV2K_val'], log=logs.append)
    assert any('DIV2K_val: starting over' in m and 'gt_multiple 48 -> 8' in m for m in logs), logs


def test_output_folder_with_other_data(tmp_path):
    d = _train_downloads(tmp_path)
    out = osp.join(tmp_path, 'out')
    os.makedirs(osp.join(out, 'DF2K'))
    (tmp_path / 'out' / 'DF2K' / 'mine.txt').write_text('x')
    with pytest.raises(PrepareError, match=r'DF2K already holds files not written by prepare-data \(e.g. mine.txt\)'):
        _run(d, out)
    os.remove(osp.join(out, 'DF2K', 'mine.txt'))
    _run(d, out)
    with pytest.raises(PrepareError, match=r'DF2K already holds data prepared differently \(crop_size 144 -> 96; '
                       r'step 96 -> 48\)'):
        _run(d, out, crop_size=96, step=48)
    cv2.imwrite(osp.join(d, 'DIV2K_train_HR', '0009.png'), synth(192, 192, 5))
    with pytest.raises(PrepareError, match='source images differ'):
        _run(d, out)


def test_premade_lr_folder(tmp_path):
    """DIV2K's official LR naming (0001x4.png) pairs with HR; names and sizes are checked."""
    d = _train_downloads(tmp_path, sizes=((204, 252), (156, 300)))  # multiples of 12, not of 48, like DIV2K
    lr_dir = osp.join(d, 'DIV2K_train_LR_bicubic', 'X4')
    os.makedirs(lr_dir)
    for i in (1, 2):
        hr = cv2.imread(osp.join(d, 'DIV2K_train_HR', f'{i:04d}.png'))
        cv2.imwrite(osp.join(lr_dir, f'{i:04d}x4.png'), imresize_uint8(hr, 1 / 4))  # from the whole image
    out = osp.join(tmp_path, 'out')
    assert _run(d, out, lr_dirs=[(4, lr_dir)]) == {'images': 3, 'lmdbs': 2}
    verify_datasets(out, sets=['DF2K'], scales=[4], log=lambda m: None)  # within 1 grey level away from borders
    # a name without partner, a wrong size
    shutil.move(osp.join(lr_dir, '0002x4.png'), osp.join(lr_dir, '0003x4.png'))
    with pytest.raises(PrepareError, match=r'X4 does not pair with HR folder .*DIV2K_train_HR: 1 HR images without '
                       r'LR \(e.g. 0002\), 1 LR images without HR \(e.g. 0003x4.png\)'):
        _run(d, osp.join(tmp_path, 'out2'), lr_dirs=[(4, lr_dir)])
    cv2.imwrite(osp.join(lr_dir, '0002x4.png'), synth(38, 75))
    os.remove(osp.join(lr_dir, '0003x4.png'))
    with pytest.raises(PrepareError, match=r'0002x4.png: LR is 75x38, but HR .*0002.png is 300x156: expected '
                       r'exactly HR/4'):
        _run(d, osp.join(tmp_path, 'out3'), lr_dirs=[(4, lr_dir)])
    # the right size but not the bicubic of its HR: caught before the LMDB gets its final name
    d = _train_downloads(tmp_path / 'other', sizes=((156, 300), ))
    lr_dir = osp.join(d, 'X4')
    os.makedirs(lr_dir)
    cv2.imwrite(osp.join(lr_dir, '0001x4.png'), synth(39, 75))
    with pytest.raises(PrepareError, match=r'DF2K_LRbicx4_sub.partial.lmdb: 0001_s0\d\d is not bicubic\(HR\)/4'):
        _run(d, osp.join(tmp_path, 'out4'), lr_dirs=[(4, lr_dir)], crop_size=48, step=48)
    assert not osp.exists(osp.join(tmp_path, 'out4', 'DF2K', 'DF2K_LRbicx4_sub.lmdb'))


def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli_main(['prepare-data', '--sets', 'BSD100']) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('basicsr prepare-data: error: BSD100: folder not found: datasets/downloads/BSD100')
    assert '\n' not in err
    with pytest.raises(SystemExit):
        cli_main(['prepare-data', '--lr-dir', 'X4'])
    assert 'expected SCALE:FOLDER' in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli_main(['prepare-data', '--help'])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for words in ('Recipe:', 'make_lmdb_from_imgs', 'multiple of', '48 = lcm(4, 6, 8, 16)', 'DF2K_LRbicx{4,6,8}_sub',
                  '--workers', '--verify', '--lr-dir'):
        assert words in text


def test_options_point_into_the_layout():
    """Every dataroot in the shipped options files is an output of prepare-data (or the demo set)."""
    known = {p for d in prepare.output_paths('datasets').values() for p in d.values()}
    for path in glob.glob(osp.join(REPO, 'options', '*.yml')):
        with open(path) as f:
            opt = yaml.safe_load(f)
        for phase in (opt.get('datasets') or {}).values():
            for key in ('dataroot_gt', 'dataroot_lq'):
                root = phase.get(key) if isinstance(phase, dict) else None
                if root:
                    assert root in known or root.startswith('datasets/demo/'), f'{path}: {key} {root}'


def test_data_speed_benchmark_runs(capsys):
    """benchmarks/data_speed.py end to end on a tiny set: both rates printed, the same crops."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('data_speed', osp.join(REPO, 'benchmarks', 'data_speed.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(['--images', '2', '--samples', '16', '--batch-size', '4', '--workers', '0'])
    out = capsys.readouterr().out
    assert re.search(r'LMDB +: +[\d.]+ images/s', out) and re.search(r'PNG folders : +[\d.]+ images/s', out)
    assert 'same crops: yes' in out
