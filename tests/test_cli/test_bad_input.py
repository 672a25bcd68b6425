"""Bad input through the real ``basicsr`` command: each case runs the command in a subprocess and checks the
exit status, that the problem is named in one line without a traceback, and that nothing new was left in
the case's folder (or, where the command succeeds or is interrupted, what it must have written).

Every case has its own folder under a module temporary folder, with its inputs; the subprocesses start
together in a thread pool (each spends most of its time importing torch), and each test checks one.
"""
import os
import os.path as osp
import random
import resource
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.archs.rrdbnet_arch import RRDBNet
from PIL import Image

from adflow_plugin.archs.adflow_arch import AdFlowNet
from adflow_plugin.data.demo import VAL_PHOTOS, read_photo
from adflow_plugin.data.prepare import prepare_datasets
from tests.conftest import TINY_G, cli_command, in_process_model, tiny_flow_options, write_options
from tests.test_cli.test_compare import write_result

SCALE = 4


@dataclass
class Outcome:
    """A finished command: its process, the case folder's listing before and after, and case data."""
    proc: subprocess.CompletedProcess
    before: set
    after: set
    data: dict = field(default_factory=dict)

    @property
    def output(self):
        return self.proc.stdout + self.proc.stderr


def listing(folder):
    return {osp.relpath(osp.join(d, n), folder) for d, dirs, files in os.walk(folder) for n in dirs + files}


def env():
    return dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')


def run(args, cwd, preexec_fn=None):
    before = listing(cwd)
    proc = subprocess.run(cli_command(args), cwd=cwd, capture_output=True, text=True, timeout=600, env=env(),
                          preexec_fn=preexec_fn)
    return Outcome(proc, before, listing(cwd))


def assert_refused(outcome, expected, code=2):
    """Exit status ``code``, the problem named in exactly one line (no traceback), nothing new left behind."""
    out = outcome.output
    assert 'Traceback' not in out, out
    assert outcome.proc.returncode == code, out
    lines = outcome.proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], out
    assert outcome.after == outcome.before, f'left behind: {sorted(outcome.after - outcome.before)}'


# ---------------------------------------------------------------------------------------------------- inputs
def tiny_flow(seed=0):
    torch.manual_seed(seed)
    net = AdFlowNet(scale=SCALE, **{k: v for k, v in TINY_G.items() if k != 'type'})
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # make zero-initialised layers non-zero, so that the output depends on the input
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return net.eval()


def make_inputs(root, demo):
    """Checkpoints, images and options shared (read-only) by the cases."""
    os.makedirs(root)
    flow = tiny_flow()
    torch.save({'params': flow.state_dict(), 'params_ema': flow.state_dict()}, osp.join(root, 'flow.pth'))
    data = open(osp.join(root, 'flow.pth'), 'rb').read()
    with open(osp.join(root, 'corrupt.pth'), 'wb') as f:
        f.write(data[:len(data) // 2])  # a download cut short
    torch.manual_seed(0)
    esrgan = RRDBNet(3, 3, scale=4, num_feat=8, num_block=1, num_grow_ch=4)
    torch.save({'params': esrgan.state_dict(), 'params_ema': esrgan.state_dict()}, osp.join(root, 'esrgan.pth'))
    photo = read_photo(VAL_PHOTOS[0])
    cv2.imwrite(osp.join(root, 'small.png'), photo[40:56, 60:76])
    cv2.imwrite(osp.join(root, 'noisy.png'), np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    ok, jpg = cv2.imencode('.jpg', photo[:96, :96], [cv2.IMWRITE_JPEG_QUALITY, 95])
    with open(osp.join(root, 'truncated.jpg'), 'wb') as f:
        f.write(jpg.tobytes()[:len(jpg) // 2])
    return dict(root=root, demo=demo, flow=flow, flow_ckpt=osp.join(root, 'flow.pth'),
                corrupt_ckpt=osp.join(root, 'corrupt.pth'), esrgan_ckpt=osp.join(root, 'esrgan.pth'),
                small=osp.join(root, 'small.png'), noisy=osp.join(root, 'noisy.png'),
                truncated=osp.join(root, 'truncated.jpg'), photo=photo)


def flow_options(inputs, folder, **extra):
    """An infer/flowcheck options file for the tiny flow."""
    opt = {'name': 'tiny', 'model_type': 'AdFlowModel', 'scale': SCALE, 'network_g': dict(TINY_G, scale=SCALE),
           'path': {'pretrain_network_g': inputs['flow_ckpt'], 'param_key_g': 'params_ema'}}
    for key, value in extra.items():
        opt.setdefault(key, {}).update(value) if isinstance(value, dict) else opt.update({key: value})
    path = osp.join(folder, 'flow.yml')
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f)
    return path


def train_options(inputs, folder, edit=None, name='bad', **kwargs):
    opt = tiny_flow_options(inputs['demo'], name, scale=SCALE, total_iter=2, val=kwargs.pop('val', False), **kwargs)
    if edit:
        edit(opt)
    return write_options(folder, opt)


def eval_options(inputs, folder, edit=None, ckpt=None):
    """A ``basicsr test`` options file: the tiny flow on the demo validation set."""
    opt = tiny_flow_options(inputs['demo'], 'bad_test', scale=SCALE, val=True)
    opt['datasets'] = {'test_1': dict(opt['datasets']['val'], name='demo_test')}
    opt['path'] = {'pretrain_network_g': ckpt or inputs['flow_ckpt'], 'param_key_g': 'params_ema',
                   'strict_load_g': True}
    del opt['train'], opt['logger']
    opt['val'].pop('val_freq', None)
    if edit:
        edit(opt)
    return write_options(folder, opt)


# ---------------------------------------------------------------------------------------------------- cases
def _del(*keys):
    def edit(opt):
        node = opt
        for k in keys[:-1]:
            node = node[k]
        del node[keys[-1]]
    return edit


def _set(value, *keys):
    def edit(opt):
        node = opt
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return edit


# item 5: options that cannot start BasicSR's train/test pipeline
TRAIN_REFUSALS = {
    'missing_network_type': (_del('network_g', 'type'), 'network_g.type is missing'),
    'missing_scale': (_del('scale'), 'scale is missing'),
    'missing_dataroot_gt': (_del('datasets', 'train', 'dataroot_gt'), 'datasets.train.dataroot_gt is missing'),
    'batch_size_word': (_set('eight', 'datasets', 'train', 'batch_size_per_gpu'),
                        "datasets.train.batch_size_per_gpu must be a whole number, got 'eight'"),
    'unknown_network': (_set('AdFlowNett', 'network_g', 'type'),
                        "unknown network 'AdFlowNett'; did you mean 'AdFlowNet'"),
    'missing_data_folder': (_set('no/such/folder', 'datasets', 'train', 'dataroot_gt'),
                            'datasets.train.dataroot_gt: data folder no/such/folder does not exist'),
    'gt_size_not_divisible': (_set(30, 'datasets', 'train', 'gt_size'),
                              'datasets.train.gt_size 30 is not divisible by the scale 4'),
    # item 1: a temperature read from the options file
    'train_temperature_inf': (_set(float('inf'), 'train', 'temperature'), 'train.temperature must be finite'),
}


def case_train_refusal(inputs, folder, name):
    edit, _ = TRAIN_REFUSALS[name]
    return run(['train', '-opt', train_options(inputs, folder, edit)], folder)


def case_test_missing_checkpoint(inputs, folder):
    return run(['test', '-opt', eval_options(inputs, folder, ckpt='models/net_g_missing.pth')], folder)


def case_test_corrupt_checkpoint(inputs, folder):
    return run(['test', '-opt', eval_options(inputs, folder, ckpt=inputs['corrupt_ckpt'])], folder)


def case_test_wrong_architecture(inputs, folder):
    return run(['test', '-opt', eval_options(inputs, folder, ckpt=inputs['esrgan_ckpt'])], folder)


def case_test_val_temperature_nan(inputs, folder):
    return run(['test', '-opt', eval_options(inputs, folder, edit=_set([0.5, float('nan')], 'val', 'temperature'))],
               folder)


def case_force_yml_unknown_key(inputs, folder):  # item 6
    return run(['train', '-opt', train_options(inputs, folder), '--force_yml', 'train:total_iters=5'], folder)


def case_infer_temperature_nan(inputs, folder):  # item 1
    return run(['infer', '--model', flow_options(inputs, folder), '-i', inputs['small'], '-o', 'out', '-t', '0.5',
                'nan', '--no-progress'], folder)


def case_infer_temperature_inf(inputs, folder):  # item 1
    return run(['infer', '--model', flow_options(inputs, folder), '-i', inputs['small'], '-o', 'out', '-t', 'inf',
                '--no-progress'], folder)


def case_infer_truncated_jpeg(inputs, folder):  # item 2
    return run(['infer', '--model', flow_options(inputs, folder), '-i', inputs['truncated'], '-o', 'out',
                '--no-progress'], folder)


def case_infer_output_is_file(inputs, folder):  # item 8
    open(osp.join(folder, 'taken'), 'w').close()
    return run(['infer', '--model', flow_options(inputs, folder), '-i', inputs['small'], '-o', 'taken'], folder)


def case_infer_output_under_file(inputs, folder):  # item 8
    open(osp.join(folder, 'taken'), 'w').close()
    return run(['infer', '--model', flow_options(inputs, folder), '-i', inputs['small'], '-o', 'taken/sr'], folder)


def case_infer_output_cannot_be_created(inputs, folder):  # item 8: longer than any file system's name limit
    return run(['infer', '--model', flow_options(inputs, folder), '-i', inputs['small'], '-o', 'x' * 300], folder)


def case_compare_out_is_file(inputs, folder):  # item 8: a readable result, an output that cannot be a folder
    open(osp.join(folder, 'taken'), 'w').close()
    write_result(folder, 'AdFlow_x4', 4, {'DIV2K_val': {'lr_psnr': 45.0, 'lpips': 0.12}})
    return run(['compare', 'results/AdFlow_x4', '-o', 'taken'], folder)


def case_flowcheck_missing_checkpoint(inputs, folder):  # item 12
    opt = flow_options(inputs, folder, path={'pretrain_network_g': 'experiments/x/models/net_g_latest.pth'})
    return run(['flowcheck', '-opt', opt, '--hr-size', '32'], folder)


def case_infer_full_disk(inputs, folder):  # item 10: writes fail with EFBIG past 16 KiB, as on a full disk
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed (kept across exec)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))
    return run(['infer', '--model', flow_options(inputs, folder), '-i', inputs['noisy'], '-o', 'out', '-t', '0.8',
                '--no-progress'], folder, preexec_fn=limit)


def case_infer_formats(inputs, folder):  # items 3 and 4: gray + alpha, EXIF orientation
    photo = inputs['photo']
    gray = cv2.cvtColor(photo[60:72, 80:90], cv2.COLOR_BGR2GRAY)
    alpha = np.tile(np.linspace(0, 255, 10).round().astype(np.uint8), (12, 1))
    Image.fromarray(np.dstack([gray, alpha]), 'LA').save(osp.join(folder, 'la.png'))
    cv2.imwrite(osp.join(folder, 'l.png'), gray)
    im = Image.fromarray(np.ascontiguousarray(photo[100:112, 20:36, ::-1]))  # 16 wide, 12 high
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    im.save(osp.join(folder, 'exif.jpg'), quality=95, exif=exif)
    cv2.imwrite(osp.join(folder, 'exif_turned.png'), cv2.imread(osp.join(folder, 'exif.jpg'), cv2.IMREAD_COLOR))
    outcome = run(['infer', '--model', flow_options(inputs, folder), '-i', 'la.png', 'l.png', 'exif.jpg',
                   'exif_turned.png', '-o', 'out', '-t', '0', '--no-progress'], folder)
    outcome.data.update(alpha=alpha)
    return outcome


def case_infer_ctrl_c(inputs, folder):  # items 9 and 11: Ctrl-C two seconds into 100000 samples
    args = ['infer', '--model', flow_options(inputs, folder), '-i', inputs['small'], '-o', 'out', '--samples', 100000,
            '-t', '0.8', '--no-progress']
    before = listing(folder)
    proc = subprocess.Popen(cli_command(args), cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env(), start_new_session=True)
    out = osp.join(folder, 'out')
    deadline = time.time() + 300
    while not osp.isdir(out) and proc.poll() is None and time.time() < deadline:  # created just before sampling
        time.sleep(0.05)
    time.sleep(2)  # hundreds of samples written one by one; held until the end, none
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal signals the whole process group
    stdout, stderr = proc.communicate(timeout=300)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return Outcome(done, before, listing(folder))


def _prepare_sources(downloads, count, size, ext='.png', seed=0):
    folder = osp.join(downloads, 'DIV2K_valid_HR')
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        small = rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8)
        img = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(osp.join(folder, f'{801 + i:04d}{ext}'), img)
    return folder


def case_prepare_verify_swapped_lr(inputs, folder):  # item 13: a swap outside the default 20-image sample
    _prepare_sources(osp.join(folder, 'dl'), 24, 48)
    prepare_datasets(osp.join(folder, 'dl'), osp.join(folder, 'out'), sets=['DIV2K_val'], scales=[SCALE], workers=1,
                     log=lambda msg: None)
    lr_dir = osp.join(folder, 'out', 'DIV2K_val', f'LRbicx{SCALE}')
    names = sorted(os.listdir(lr_dir))
    sampled = set(random.Random(0).sample(names, 20))  # verify's own default sample
    a, b = [n for n in names if n not in sampled][:2]
    os.rename(osp.join(lr_dir, a), osp.join(lr_dir, 'swap'))
    os.rename(osp.join(lr_dir, b), osp.join(lr_dir, a))
    os.rename(osp.join(lr_dir, 'swap'), osp.join(lr_dir, b))
    outcome = run(['prepare-data', '--downloads', 'dl', '--out', 'out', '--sets', 'DIV2K_val', '--scales', SCALE,
                   '--workers', 1, '--verify'], folder)
    outcome.data.update(swapped=sorted([a, b]))
    return outcome


def case_prepare_changed_source_resumed(inputs, folder):  # item 13: same size, other content, run unfinished
    src = _prepare_sources(osp.join(folder, 'dl'), 3, 48, ext='.ppm')
    prepare_datasets(osp.join(folder, 'dl'), osp.join(folder, 'out'), sets=['DIV2K_val'], scales=[SCALE], workers=1,
                     log=lambda msg: None)
    os.remove(osp.join(folder, 'out', 'DIV2K_val', f'LRbicx{SCALE}', '0803.png'))  # as if killed before the end
    path = osp.join(src, '0801.ppm')
    size = osp.getsize(path)
    cv2.imwrite(path, 255 - cv2.imread(path))  # a corrected download: same size (PPM), other pixels
    assert osp.getsize(path) == size
    outcome = run(['prepare-data', '--downloads', 'dl', '--out', 'out', '--sets', 'DIV2K_val', '--scales', SCALE,
                   '--workers', 1], folder)
    outcome.data.update(source=cv2.imread(path))
    return outcome


def _prepare_signal(folder, sig, group):
    _prepare_sources(osp.join(folder, 'dl'), 12, 480)
    args = ['prepare-data', '--downloads', 'dl', '--out', 'out', '--sets', 'DIV2K_val', '--workers', 2]
    before = listing(folder)
    proc = subprocess.Popen(cli_command(args), cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env(), start_new_session=True)
    started = False
    for line in proc.stdout:  # the workers are being started once the set's work is announced
        if 'writing GT' in line:
            started = True
            break
    time.sleep(0.5)
    if group:
        os.killpg(proc.pid, sig)  # Ctrl-C in a terminal: the main process, its fork server and workers
    else:
        proc.send_signal(sig)  # kill PID, a job scheduler's stop
    stdout, stderr = proc.communicate(timeout=300)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return Outcome(done, before, listing(folder), dict(started=started))


def case_prepare_ctrl_c(inputs, folder):  # item 9
    return _prepare_signal(folder, signal.SIGINT, group=True)


def case_prepare_sigterm(inputs, folder):  # item 9
    return _prepare_signal(folder, signal.SIGTERM, group=False)


def case_auto_resume_damaged_state(inputs, folder):  # item 7
    opt = tiny_flow_options(inputs['demo'], 'resume', scale=SCALE, total_iter=2, val=False)
    model = in_process_model(opt, __import__('pathlib').Path(folder))
    for key in ('models', 'training_states'):
        os.makedirs(model.opt['path'][key], exist_ok=True)
    model.save(0, 1)
    model.save(0, 2)
    states = model.opt['path']['training_states']
    newest = osp.join(states, '2.state')
    data = open(newest, 'rb').read()
    with open(newest, 'wb') as f:
        f.write(data[:len(data) // 3])  # killed while writing, or a full disk
    outcome = run(['train', '-opt', write_options(folder, opt), '--auto_resume'], folder)
    outcome.data.update(states=states)
    return outcome


CASES = {f'train_{name}': (lambda inputs, folder, name=name: case_train_refusal(inputs, folder, name))
         for name in TRAIN_REFUSALS}
CASES.update({name[len('case_'):]: fn for name, fn in dict(globals()).items()
              if name.startswith('case_') and name != 'case_train_refusal'})


# the cases of the tests that are not parametrised by case name
TEST_CASES = {
    'test_force_yml_refuses_unknown_key': ['force_yml_unknown_key'],
    'test_full_disk_leaves_no_partial_png': ['infer_full_disk'],
    'test_gray_alpha_and_exif_orientation': ['infer_formats'],
    'test_ctrl_c_in_infer_keeps_finished_samples': ['infer_ctrl_c'],
    'test_verify_finds_a_swapped_lr_image': ['prepare_verify_swapped_lr'],
    'test_changed_source_of_same_size_is_noticed_on_resume': ['prepare_changed_source_resumed'],
    'test_auto_resume_skips_a_damaged_newest_state': ['auto_resume_damaged_state'],
}


def selected_cases(items):
    """The cases the selected tests of this module need (all of them in a full run)."""
    names = set()
    for item in items:
        if item.module is None or item.module.__name__ != __name__:
            continue
        params = getattr(getattr(item, 'callspec', None), 'params', {})
        if item.originalname == 'test_train_refuses_bad_options':
            names.add(f'train_{params["name"]}')
        elif 'name' in params:
            names.add(params['name'])
        else:
            names.update(TEST_CASES[item.originalname])
    return names


@pytest.fixture(scope='module')
def outcomes(request, demo_data, tmp_path_factory):
    """The selected cases, run concurrently (their subprocesses spend most of their time importing torch)."""
    root = tmp_path_factory.mktemp('bad_input')
    inputs = make_inputs(str(root / 'inputs'), demo_data)
    names = sorted(selected_cases(request.session.items))
    folders = {}
    for name in names:
        folders[name] = str(root / name)
        os.makedirs(folders[name])
    with ThreadPoolExecutor(max(2, min(4, os.cpu_count() or 2))) as pool:
        futures = {name: pool.submit(CASES[name], inputs, folders[name]) for name in names}
        results = {}
        for name, future in futures.items():
            try:
                results[name] = future.result()
            except Exception as e:  # reported by the case's own test
                results[name] = e
    results['_folders'] = folders
    results['_inputs'] = inputs
    return results


def outcome_of(outcomes, name):
    result = outcomes[name]
    if isinstance(result, Exception):
        raise result
    return result


# ---------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize('name', sorted(TRAIN_REFUSALS))
def test_train_refuses_bad_options(outcomes, name):
    """Item 5 (and item 1 for train.temperature): one line, nothing under experiments/."""
    assert_refused(outcome_of(outcomes, f'train_{name}'), TRAIN_REFUSALS[name][1])


@pytest.mark.parametrize('name, expected', [
    ('test_missing_checkpoint', 'path.pretrain_network_g: checkpoint models/net_g_missing.pth does not exist'),
    ('test_corrupt_checkpoint', 'corrupt.pth with torch.load(weights_only=True)'),
    ('test_wrong_architecture', 'esrgan.pth does not fit network_g (AdFlowNet)'),
    ('test_val_temperature_nan', 'val.temperature must be finite, got nan'),
])
def test_test_refuses_bad_options(outcomes, name, expected):
    """Item 5 (checkpoints) and item 1 (val.temperature): one line, nothing under results/."""
    assert_refused(outcome_of(outcomes, name), expected)


def test_force_yml_refuses_unknown_key(outcomes):
    """Item 6: the nearest existing key is named."""
    assert_refused(outcome_of(outcomes, 'force_yml_unknown_key'),
                   "train has no key 'total_iters'; --force_yml only changes existing keys; did you mean "
                   'train:total_iter?')


@pytest.mark.parametrize('name, expected', [
    ('infer_temperature_nan', '--temperature must be finite, got nan'),
    ('infer_temperature_inf', '--temperature must be finite, got inf'),
    ('infer_truncated_jpeg', 'truncated.jpg: truncated JPEG (no end-of-image marker)'),
    ('infer_output_is_file', '--output taken is a file, not a folder'),
    ('infer_output_under_file', 'cannot create the --output folder taken/sr: taken is a file'),
    ('infer_output_cannot_be_created', 'is longer than 255 bytes'),
    ('compare_out_is_file', '-o taken is a file, not a folder'),
    ('flowcheck_missing_checkpoint', 'net_g_latest.pth (path.pretrain_network_g) not found'),
])
def test_infer_compare_flowcheck_refuse(outcomes, name, expected):
    """Items 1, 2, 8 and 12."""
    assert_refused(outcome_of(outcomes, name), expected)


def test_full_disk_leaves_no_partial_png(outcomes):
    """Item 10: the failed write is named in one line; no ``.png.partial``, no output folder left."""
    assert_refused(outcome_of(outcomes, 'infer_full_disk'), 'could not write out/noisy_x4_t0.8_s0.png: File too large')


def test_gray_alpha_and_exif_orientation(outcomes):
    """Items 3 and 4: a grayscale + alpha PNG comes out grayscale + alpha; a JPEG's EXIF orientation is applied."""
    o = outcome_of(outcomes, 'infer_formats')
    assert o.proc.returncode == 0 and 'Traceback' not in o.output, o.output
    out = osp.join(outcomes['_folders']['infer_formats'], 'out')
    la = Image.open(osp.join(out, 'la_x4_t0_s0.png'))
    assert la.mode == 'LA' and la.size == (40, 48)
    la = np.asarray(la)
    gray_only = cv2.imread(osp.join(out, 'l_x4_t0_s0.png'), cv2.IMREAD_UNCHANGED)
    assert gray_only.ndim == 2 and np.array_equal(la[:, :, 0], gray_only)  # the same gray path, no chroma
    expected = cv2.resize(o.data['alpha'].astype(np.float32) / 255, (40, 48), interpolation=cv2.INTER_CUBIC)
    assert np.abs(la[:, :, 1].astype(float) - np.clip(expected, 0, 1) * 255).max() <= 1
    turned = cv2.imread(osp.join(out, 'exif_x4_t0_s0.png'), cv2.IMREAD_UNCHANGED)
    reference = cv2.imread(osp.join(out, 'exif_turned_x4_t0_s0.png'), cv2.IMREAD_UNCHANGED)
    assert turned.shape == (64, 48, 3)  # 16 x 12 stored, 12 x 16 displayed
    assert np.abs(turned.astype(int) - reference).max() <= 1


def test_ctrl_c_in_infer_keeps_finished_samples(outcomes):
    """Items 9 and 11: samples are on disk as they are made; Ctrl-C stops in one line with no partial file."""
    o = outcome_of(outcomes, 'infer_ctrl_c')
    assert o.proc.returncode == 130 and 'Traceback' not in o.output, o.output
    lines = o.proc.stderr.strip().splitlines()
    assert len(lines) == 1 and 'interrupted; the files written to out so far are complete' in lines[0], o.output
    out = osp.join(outcomes['_folders']['infer_ctrl_c'], 'out')
    written = sorted(os.listdir(out)) if osp.isdir(out) else []
    assert written, 'no sample was on disk two seconds into the run'
    assert not any(n.endswith('.partial') for n in written) and len(written) < 100000
    for name in written:
        assert cv2.imread(osp.join(outcomes['_folders']['infer_ctrl_c'], 'out', name)).shape == (64, 64, 3)


@pytest.mark.parametrize('name', ['prepare_ctrl_c', 'prepare_sigterm'])
def test_prepare_data_stops_in_one_line(outcomes, name):
    """Item 9: Ctrl-C (to the process group, workers included) and SIGTERM: one line, no traceback; the finished
    work stays for the next run to resume."""
    o = outcome_of(outcomes, name)
    assert o.data['started'], o.output
    assert o.proc.returncode == 130 and 'Traceback' not in o.output, o.output
    errors = [line for line in o.proc.stderr.splitlines() if 'basicsr' in line or 'Error' in line]
    assert errors == ['basicsr prepare-data: error: interrupted; run the same command again to resume'], o.output


def test_verify_finds_a_swapped_lr_image(outcomes):
    """Item 13: two LR files swapped outside verify's bicubic sample are caught by their checksums."""
    o = outcome_of(outcomes, 'prepare_verify_swapped_lr')
    first = o.data['swapped'][0]
    assert_refused(o, f'LRbicx4/{first} is not the file prepare-data wrote')


def test_changed_source_of_same_size_is_noticed_on_resume(outcomes):
    """Item 13: an unfinished set whose source changed (same size) is started over, not resumed with stale GT."""
    o = outcome_of(outcomes, 'prepare_changed_source_resumed')
    assert o.proc.returncode == 0 and 'Traceback' not in o.output, o.output
    notice = [line for line in o.output.splitlines() if 'starting over' in line]
    assert len(notice) == 1 and 'source image 0801.ppm changed' in notice[0], o.output
    gt = cv2.imread(osp.join(outcomes['_folders']['prepare_changed_source_resumed'], 'out', 'DIV2K_val', 'GT',
                             '0801.png'))
    assert np.array_equal(gt, o.data['source'])


def test_auto_resume_skips_a_damaged_newest_state(outcomes):
    """Item 7: the truncated 2.state is skipped, named with the reason; training resumes from 1.state."""
    o = outcome_of(outcomes, 'auto_resume_damaged_state')
    assert o.proc.returncode == 0 and 'Traceback' not in o.output, o.output
    notes = [line for line in o.output.splitlines() if 'auto_resume: skipped' in line]
    first = osp.join('experiments', 'resume', 'training_states', '1.state')
    assert len(notes) == 1 and '2.state (' in notes[0] and notes[0].endswith(f'resuming from {first}'), o.output
    state = torch.load(osp.join(o.data['states'], '2.state'), weights_only=True)  # written again, whole
    assert state['iter'] == 2
