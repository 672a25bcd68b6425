"""Result folders as ``basicsr test`` writes them (flow samples, ESRGAN, GT) for small studies."""
import os
import os.path as osp

import cv2
import numpy as np
import pytest

SCALE = 4
IMAGES = ('0801', 'img_2')  # an underscore in a name must not confuse the matching


def write_results(root, lr_size=(20, 16), images=IMAGES, seed=0):
    """LR images and three methods' SR images for them; returns the folders."""
    rng = np.random.default_rng(seed)
    dirs = {k: osp.join(str(root), k) for k in ('lr', 'flow', 'esrgan', 'gt')}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    w, h = lr_size
    for name in images:
        gt = rng.integers(0, 256, (h * SCALE, w * SCALE, 3), dtype=np.uint8)
        cv2.imwrite(osp.join(dirs['gt'], f'{name}.png'), gt)
        cv2.imwrite(osp.join(dirs['lr'], f'{name}.png'), cv2.resize(gt, (w, h), interpolation=cv2.INTER_AREA))
        for t in (0.8, 1.0):
            for s in (0, 1):
                img = rng.integers(0, 256, gt.shape, dtype=np.uint8)
                cv2.imwrite(osp.join(dirs['flow'], f'{name}_t{t:g}_s{s}_test_AdFlow_x4.png'), img)
        cv2.imwrite(osp.join(dirs['esrgan'], f'{name}_test_ESRGAN_x4.png'),
                    rng.integers(0, 256, gt.shape, dtype=np.uint8))
    return dirs


@pytest.fixture
def results(tmp_path):
    return write_results(tmp_path / 'results')


def method_args(dirs, t='1'):
    return ['--method', f'AdFlow={dirs["flow"]}:t={t}', '--method', f'ESRGAN={dirs["esrgan"]}',
            '--method', f'GT={dirs["gt"]}']


def make_study(tmp_path, participants=4, crops_per_image=1, crop_size=32, seed=3):
    """A study of 3 methods (3 pairs) on 2 images: participants x (2 * crops_per_image * 3) trials."""
    from adflow_plugin.apps.study.create import create_study, parse_method
    dirs = write_results(tmp_path / 'results')
    methods = [parse_method(s) for s in (f'AdFlow={dirs["flow"]}:t=1', f'ESRGAN={dirs["esrgan"]}',
                                         f'GT={dirs["gt"]}')]
    study = str(tmp_path / 'study')
    create_study(study, methods, dirs['lr'], crop_size=crop_size, crops_per_image=crops_per_image,
                 participants=participants, seed=seed)
    return study


class ThreadServer:
    """The study's real app under waitress in a thread of the test process, on a free port of 127.0.0.1."""

    def __init__(self, study, port=0):
        import threading

        from waitress import create_server

        from adflow_plugin.apps.study.server import create_app
        self.server = create_server(create_app(study), host='127.0.0.1', port=port, threads=4)
        self.url = f'http://127.0.0.1:{self.server.effective_port}'
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        from waitress import wasyncore
        while not self.stop.is_set():  # short loops, so that close() ends it from the serving thread
            wasyncore.loop(timeout=0.05, map=self.server._map, count=1)
        self.server.task_dispatcher.shutdown()
        wasyncore.close_all(self.server._map)

    def close(self):
        self.stop.set()
        self.thread.join(10)


@pytest.fixture(scope='module')
def served_study(tmp_path_factory):
    """(study folder, base URL, tokens) of a study served for the tests of one module."""
    from adflow_plugin.apps.study.create import load_study
    study = make_study(tmp_path_factory.mktemp('served'))
    server = ThreadServer(study)
    try:
        yield study, server.url, list(load_study(study)['participants'])
    finally:
        server.close()
