"""Validation of :class:`~adflow_plugin.models.adflow_model.AdFlowModel`: samples at every temperature, metrics per
temperature, and the discriminator's view of validation GT against samples.

Kept apart from the training step; the ``val`` options are documented on AdFlowModel.
"""
import os.path as osp

import torch
from basicsr.metrics import calculate_metric
from basicsr.utils import get_root_logger, imwrite, tensor2img
from tqdm import tqdm

from adflow_plugin import resume
from adflow_plugin.models.discriminator_health import discriminator_stats
from adflow_plugin.utils import as_list


def temperature_tag(t):
    return f't{float(t):g}'


class AdFlowValidation:
    """AdFlowModel's validation, a mixin placed before BasicSR's SRModel.

    It relies on the model's ``sample``, ``_test_net``, ``_save_g`` and ``real_noise`` / ``cri_nll`` /
    ``net_d``, and on BasicSR's best-metric bookkeeping.
    """

    def validation(self, dataloader, current_iter, tb_logger, save_img=False):
        """BasicSR's validation, leaving the global random states as it found them: a run validated at other
        iterations (or resumed) draws the same training noise, crops and flips."""
        with resume.preserved_rng():
            super().validation(dataloader, current_iter, tb_logger, save_img)

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        dataset_name = dataloader.dataset.opt['name']
        val_opt = self.opt['val']
        temperatures = [float(t) for t in as_list(val_opt.get('temperature', 1.0))]
        num_samples = int(val_opt.get('num_samples', 1))
        base_seed = int(val_opt.get('seed', 0))
        metrics_opt = val_opt.get('metrics') or {}
        multi_t = len(temperatures) > 1

        def metric_name(name, t):
            return f'{name}_{temperature_tag(t)}' if multi_t else name

        names = [metric_name(n, t) for t in temperatures for n in metrics_opt]
        if metrics_opt:
            self.metric_results = {n: 0 for n in names}
            self._initialize_best_metric_results(dataset_name)
            record = self.best_metric_results[dataset_name]
            for t in temperatures:
                for n, o in metrics_opt.items():
                    better = o.get('better', 'higher')
                    record.setdefault(metric_name(n, t), dict(
                        better=better, val=float('-inf') if better == 'higher' else float('inf'), iter=-1))
        pbar = tqdm(total=len(dataloader), unit='image') if val_opt.get('pbar', False) else None
        d_outputs = {t: ([], []) for t in temperatures}  # the discriminator's view: (real, fake) per T

        count = 0
        for idx, val_data in enumerate(dataloader):
            img_name = osp.splitext(osp.basename(val_data['lq_path'][0]))[0]
            self.feed_data(val_data)
            lq_img = tensor2img([self.lq.detach().cpu()])
            gt_img = tensor2img([self.gt.detach().cpu()]) if hasattr(self, 'gt') else None
            with torch.no_grad():  # the embedding once per image, for every temperature and sample
                cond = self._test_net().condition(self.lq, amp=self.val_amp)
            for t in temperatures:
                srs = self.sample(self.lq, t, num_samples, seed=base_seed + 1000 * idx, cond=cond)
                sr_imgs = [tensor2img([s.detach().cpu()]) for s in srs]
                self.output = srs[0]
                if hasattr(self, 'gt'):
                    self._collect_d_outputs(d_outputs[t], self.gt, srs[0])
                if save_img:
                    for k, sr_img in enumerate(sr_imgs):
                        imwrite(sr_img, self._image_path(img_name, dataset_name, t, k, num_samples, current_iter))
                for name, opt_ in metrics_opt.items():
                    data = dict(img=sr_imgs[0], lq=lq_img)
                    if gt_img is not None:
                        data['img2'] = gt_img
                    if num_samples > 1:
                        data['samples'] = sr_imgs
                    if 'scale' not in opt_:
                        data['scale'] = self.opt['scale']
                    self.metric_results[metric_name(name, t)] += calculate_metric(data, opt_)
            if hasattr(self, 'gt'):
                del self.gt
            del self.lq
            count += 1
            if pbar:
                pbar.update(1)
                pbar.set_description(f'Test {img_name}')
        if pbar:
            pbar.close()

        if metrics_opt:
            for name in self.metric_results:
                self.metric_results[name] /= max(count, 1)
                self._update_best_metric_result(dataset_name, name, self.metric_results[name], current_iter)
            self._log_validation_metric_values(current_iter, dataset_name, tb_logger)
            self._save_best(dataset_name, current_iter)
        self._log_d_validation(d_outputs, dataset_name, current_iter, tb_logger, multi_t)

    # ------------------------------------------------------------------ discriminator in validation
    @torch.no_grad()
    def _collect_d_outputs(self, outputs, gt, sr):
        """D (eval mode) on up to 2x2 central ``input_size`` tiles of the validation GT and of its sample."""
        net_d = getattr(self, 'net_d', None)
        size = getattr(self.get_bare_model(net_d), 'input_size', None) if net_d is not None else None
        if size is None or gt.shape[2] < size or gt.shape[3] < size or sr.shape[2:] != gt.shape[2:]:
            return
        rows, cols = min(2, gt.shape[2] // size), min(2, gt.shape[3] // size)
        top, left = (gt.shape[2] - rows * size) // 2, (gt.shape[3] - cols * size) // 2

        def tiles(img):
            return torch.cat([img[:, :, top + i * size:top + (i + 1) * size, left + j * size:left + (j + 1) * size]
                              for i in range(rows) for j in range(cols)])

        real = tiles(gt.to(self.device))
        if self.real_noise and self.cri_nll is not None:
            # seeded, and without moving the training's random state
            with torch.random.fork_rng(devices=[self.device] if self.device.type == 'cuda' else []):
                torch.manual_seed(int(self.opt['val'].get('seed', 0)))
                real = self.cri_nll.dequantize(real)
        was_training = net_d.training
        net_d.eval()
        outputs[0].append(net_d(real).flatten().cpu())
        outputs[1].append(net_d(tiles(sr.to(self.device))).flatten().cpu())
        net_d.train(was_training)

    def _log_d_validation(self, d_outputs, dataset_name, current_iter, tb_logger, multi_t):
        """Log the discriminator's relativistic accuracy and gap on validation GT vs samples (eval mode)."""
        for t, (real, fake) in d_outputs.items():
            if not real:
                continue
            stats = discriminator_stats(torch.cat(real), torch.cat(fake))
            tag = f'_{temperature_tag(t)}' if multi_t else ''
            values = {f'{k}{tag}': float(v) for k, v in stats.items() if k != 'd_out_std'}
            get_root_logger().info(f'Validation {dataset_name} discriminator (T={t:g}, {len(torch.cat(real))} '
                                   'tiles each):' + ''.join(f'\t # {k}: {v:.4f}' for k, v in values.items()))
            if tb_logger:
                for k, v in values.items():
                    tb_logger.add_scalar(f'metrics/{dataset_name}/{k}', v, current_iter)

    def _image_path(self, img_name, dataset_name, t, k, num_samples, current_iter):
        tag = temperature_tag(t) + (f'_s{k}' if num_samples > 1 else '')
        if self.opt['is_train']:
            return osp.join(self.opt['path']['visualization'], img_name, f'{img_name}_{tag}_{current_iter}.png')
        suffix = self.opt['val'].get('suffix') or self.opt['name']
        return osp.join(self.opt['path']['visualization'], dataset_name, f'{img_name}_{tag}_{suffix}.png')

    def _save_best(self, dataset_name, current_iter):
        saved = getattr(self, '_saved_state', None)
        if self.opt['is_train'] and saved is not None and saved['iter'] == current_iter:
            # BasicSR validates after saving: write this iteration's training state again, so that it holds
            # this validation's best-metric table (before net_g_best, which a resume must not replace)
            self.save_training_state(saved['epoch'], current_iter, rng=saved['rng'])
        best = self.opt['val'].get('best_metric')
        if not best or not self.opt['is_train']:
            return
        record = self.best_metric_results[dataset_name].get(best)
        if record is None:
            raise KeyError(f'val.best_metric {best!r} is not a validation metric; choose one of '
                           f'{sorted(self.best_metric_results[dataset_name])}')
        if record['iter'] == current_iter:
            get_root_logger().info(f'New best {best} = {record["val"]:.4f} at iter {current_iter}: saving net_g_best')
            self._save_g('best')
