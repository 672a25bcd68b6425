"""AdFlowModel: BaseFlow (NLL only) and AdFlow (NLL + adversarial) training in BasicSR's trainer.

Stage 1 (BaseFlow) has no ``network_d`` in its options; stage 2 (AdFlow) adds the discriminator and
``gan_opt`` and starts from a BaseFlow checkpoint through ``path.pretrain_network_g`` (paper Sec. 3.5).
"""
from collections import OrderedDict

import torch
import torch.distributed as dist
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from adflow_plugin import resume
from adflow_plugin.archs.flow_layers import ActNorm, amp_dtype
from adflow_plugin.models.adflow_validation import AdFlowValidation
from adflow_plugin.models.discriminator_health import (ChanceDiscriminatorMonitor, DeadDiscriminatorMonitor,
                                                        discriminator_stats)
from adflow_plugin.utils import as_list


@MODEL_REGISTRY.register()
class AdFlowModel(AdFlowValidation, SRModel):
    """Conditional-flow SR model (paper Sec. 3.3-3.5).

    Options beyond SRModel's (``train``):
        nll_opt: FlowNLLLoss options (the flow-based fidelity loss; its ``quant`` sets the dequantisation).
        gan_opt, network_d, optim_d: the adversarial stage (relativistic, as ESRGAN); absent in stage 1.
        pixel_opt, perceptual_opt: optional losses on the sample (off in the paper; for ablations).
        temperature: sampling temperature of the training samples the GAN sees. Default: 1.0.
        net_d_iters, net_d_init_iters: as BasicSR's SRGANModel. During the first net_d_init_iters the
            generator trains on the NLL alone while the discriminator warms up.
        fix_encoder_iters: keep the RRDB embedding fixed for this many iterations. Default: 0.
        grad_clip_norm: clip gradients (generator and discriminator) to this norm. Default: off.
        max_consecutive_skips: stop after this many consecutive skipped (non-finite) steps. Default: 100.
        amp: 'bf16' runs the RRDB embedding and the coupling, injector and split-prior networks under
            bfloat16 autocast; the flow's affine arithmetic, log-determinants, priors and the NLL stay
            float32 (``AdFlowNet.condition``). Default: off.
        real_noise: show the discriminator the dequantised HR (HR + the NLL's uniform noise) as its real
            images instead of the clean HR. Samples at T = 1 reproduce that noise, and a discriminator left
            to learn long enough tells clean from noisy (benchmarks/discriminator_noise.py), which would push
            G to denoise its samples against the NLL. Default: true (false: the clean HR, as ESRGAN).
        dead_d_patience: warn when the discriminator's outputs have not depended on its input for this
            many consecutive logged steps (print_freq); 0 disables. Default: 5.
        dead_d_std, dead_d_gap: the output spread and |real - fake gap| below which a logged step counts
            as dead. Default: 1e-3, 1e-3.
        stop_on_dead_d: stop the run (RuntimeError with the same message) instead of only warning.
            Default: false.
        chance_d_window, chance_d_accuracy: warn when the discriminator's balanced accuracy, averaged over
            the last ``chance_d_window`` logged steps, is at most ``chance_d_accuracy``: its outputs vary
            but do not separate real from fake. 0 disables. Default: 20, 0.55. Only a warning.
        d_batch: 'separate' (BasicSR's ESRGANModel: the discriminator sees the real and the fake images in
            two forward passes, so its BatchNorm normalises each set by its own statistics and any difference
            the two sets share across the batch, such as their overall noise or sharpness, is normalised
            away) or 'joint' (one forward pass over real and fake together: one set of statistics).
            Default: 'separate'.
    Logged at print_freq in stage 2 (see discriminator_health): d_acc_real, d_acc_fake, d_gap, d_out_std,
    and grad_norm_g_nll / grad_norm_g_gan, the gradient norms the two terms send to the generator.
    ``val``:
        temperature: one value or a list; metrics are named ``<metric>_t<T>`` when there are several.
        num_samples: samples per image (metrics see them as ``samples``; PSNR etc. use the first).
        seed: base seed of the validation samples (the same images get the same latents every time).
        best_metric: keep ``net_g_best.pth`` for the best value of this metric (its ``better`` option).
        amp: as ``train.amp``, for validation and ``basicsr test`` sampling. Default: off.
    """

    def __init__(self, opt):
        if not opt.get('dist') and isinstance(opt.get('num_gpu'), int) and opt['num_gpu'] > 1:
            # BasicSR would wrap the networks in DataParallel: its replicas initialise ActNorm from their part
            # of the batch only (and lose it), and it cannot gather the generator's output dict
            raise ValueError(f'num_gpu: {opt["num_gpu"]} without a launcher means DataParallel, which AdFlowModel '
                             f'does not support; use torchrun --nproc_per_node={opt["num_gpu"]} -m '
                             'adflow_plugin.train -opt FILE --launcher pytorch (or set num_gpu: 1)')
        self.skipped_steps = 0
        self.consecutive_skips = 0
        self.train_amp = amp_dtype((opt.get('train') or {}).get('amp'), 'train.amp')
        self.val_amp = amp_dtype((opt.get('val') or {}).get('amp'), 'val.amp')
        super().__init__(opt)

    # ------------------------------------------------------------------ set-up
    def init_training_settings(self):
        train_opt = self.opt['train']
        logger = get_root_logger()
        self.net_g.train()

        self.ema_decay = train_opt.get('ema_decay', 0)
        if self.ema_decay > 0:
            logger.info(f'Use Exponential Moving Average with decay: {self.ema_decay}')
            self.net_g_ema = build_network(self.opt['network_g']).to(self.device)
            load_path = self.opt['path'].get('pretrain_network_g', None)
            if load_path is not None:
                self.load_network(self.net_g_ema, load_path, self.opt['path'].get('strict_load_g', True), 'params_ema')
            else:
                self.model_ema(0)
            self.net_g_ema.eval()

        self.net_d = None
        if self.opt.get('network_d'):
            self.net_d = self.model_to_device(build_network(self.opt['network_d']))
            self.print_network(self.net_d)
            load_path = self.opt['path'].get('pretrain_network_d', None)
            if load_path is not None:
                param_key = self.opt['path'].get('param_key_d', 'params')
                self.load_network(self.net_d, load_path, self.opt['path'].get('strict_load_d', True), param_key)
            self.net_d.train()

        def loss(key):
            return build_loss(train_opt[key]).to(self.device) if train_opt.get(key) else None

        self.cri_nll = loss('nll_opt')
        self.cri_pix = loss('pixel_opt')
        self.cri_perceptual = loss('perceptual_opt')
        self.cri_gan = loss('gan_opt')
        if self.cri_nll is None and self.cri_pix is None:
            raise ValueError('AdFlowModel needs train.nll_opt (the flow NLL, e.g. {type: FlowNLLLoss}) '
                             'or train.pixel_opt')
        if (self.cri_gan is None) != (self.net_d is None):
            raise ValueError('the adversarial stage needs both network_d and train.gan_opt (stage 1, BaseFlow, '
                             'has neither)')
        if (self.cri_gan or self.cri_pix or self.cri_perceptual) and self.cri_nll is None:
            logger.warning('no nll_opt: the flow is trained without its likelihood')

        self.net_d_iters = train_opt.get('net_d_iters', 1)
        self.net_d_init_iters = train_opt.get('net_d_init_iters', 0)
        self.train_temperature = float(train_opt.get('temperature', 1.0))
        self.fix_encoder_iters = int(train_opt.get('fix_encoder_iters', 0))
        self.grad_clip_norm = train_opt.get('grad_clip_norm')
        self.max_consecutive_skips = int(train_opt.get('max_consecutive_skips', 100))
        self.real_noise = bool(train_opt.get('real_noise', True))
        self.stop_on_dead_d = bool(train_opt.get('stop_on_dead_d', False))
        self.d_batch = train_opt.get('d_batch', 'separate')
        if self.d_batch not in ('separate', 'joint'):
            raise ValueError(f"train.d_batch must be 'separate' or 'joint', got {self.d_batch!r}")
        self.dead_d_monitor = DeadDiscriminatorMonitor(train_opt.get('dead_d_patience', 5),
                                                       train_opt.get('dead_d_std', 1e-3),
                                                       train_opt.get('dead_d_gap', 1e-3))
        self.chance_d_monitor = ChanceDiscriminatorMonitor(train_opt.get('chance_d_window', 20),
                                                           train_opt.get('chance_d_accuracy', 0.55))

        self.setup_optimizers()
        self.setup_schedulers()

    def setup_optimizers(self):
        super().setup_optimizers()
        if self.net_d is not None:
            train_opt = self.opt['train']
            optim_type = train_opt['optim_d'].pop('type')
            self.optimizer_d = self.get_optimizer(optim_type, self.net_d.parameters(), **train_opt['optim_d'])
            self.optimizers.append(self.optimizer_d)

    # ------------------------------------------------------------------ EMA
    def model_ema(self, decay=0.999):
        """EMA of the parameters (BasicSR) plus verbatim copies of the buffers: ActNorm's ``initialized``
        flags and the fixed random rotations are state, not averages. An ActNorm that was just
        initialised from data is copied whole, so the EMA does not average its data-dependent
        parameters with the zeros they started from. ActNorm's state is read from its Python mirror
        (``is_initialized``), so the EMA update does not wait for the GPU."""
        net_g = self.get_bare_model(self.net_g)
        ema_modules = dict(self.net_g_ema.named_modules())
        actnorms = [(m, ema_modules[n]) for n, m in net_g.named_modules() if isinstance(m, ActNorm)]
        for module, ema_module in actnorms:
            if module.is_initialized and not ema_module.is_initialized:
                for p_ema, p in zip(ema_module.parameters(), module.parameters()):
                    p_ema.data.copy_(p.data)
                ema_module.set_initialized()
        super().model_ema(decay)
        ema_buffers = dict(self.net_g_ema.named_buffers())
        for name, buf in net_g.named_buffers():
            ema_buffers[name].data.copy_(buf.data)
        for module, ema_module in actnorms:  # the buffers were copied above; their mirrors follow
            ema_module.is_initialized = module.is_initialized

    # ------------------------------------------------------------------ training step
    def _all_ranks_finite(self, *tensors):
        """True only if every tensor is finite on every process (so all skip a step together under DDP).
        The flags are combined on the device: one host read (and one all_reduce) per decision."""
        flag = torch.stack([torch.isfinite(t).all() for t in tensors]).all().float().reshape(1)
        if self.opt['dist'] and dist.is_initialized():
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item() > 0)

    def _grad_norm(self, params):
        """Clip (if asked) and return the gradient norm, a tensor (a non-finite one means: skip)."""
        params = [p for p in params if p.grad is not None]
        max_norm = self.grad_clip_norm if self.grad_clip_norm else float('inf')
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm) if params else torch.zeros((), device=self.device)
        return norm.detach()

    def _step_snapshot(self):
        """What a step changes besides parameters and optimizer states, for :meth:`_skip_step` to put back: the
        discriminator's buffers (BatchNorm statistics move with every forward in training mode) and the
        ActNorm layers that initialise themselves from this step's batch."""
        snapshot = {'actnorm': {}}
        if self.net_d is not None:
            snapshot['d'] = {k: v.clone() for k, v in self.get_bare_model(self.net_d).named_buffers()}
        for name, module in self.get_bare_model(self.net_g).named_modules():
            if isinstance(module, ActNorm) and not module.is_initialized:  # its Python mirror: no GPU sync
                snapshot['actnorm'][name] = {k: v.clone() for k, v in module.state_dict().items()}
        return snapshot

    def _skip_step(self, snapshot, reason, current_iter, loss_dict):
        """A skipped step reaches nothing: no update of G or D (parameters, Adam states, BatchNorm statistics,
        ActNorm initialisation) and none of the EMA. The schedulers have already moved (BasicSR steps them
        before the training step), so the learning rate follows the iteration count."""
        self.optimizer_g.zero_grad(set_to_none=True)
        if self.net_d is not None:
            self.optimizer_d.zero_grad(set_to_none=True)
            buffers = dict(self.get_bare_model(self.net_d).named_buffers())
            for k, v in snapshot['d'].items():
                buffers[k].copy_(v)
        modules = dict(self.get_bare_model(self.net_g).named_modules())
        for name, state in snapshot['actnorm'].items():
            modules[name].load_state_dict(state)
        self.skipped_steps += 1
        self.consecutive_skips += 1
        loss_dict['skipped_steps'] = torch.tensor(float(self.skipped_steps), device=self.device)
        self.log_dict = self.reduce_loss_dict(loss_dict)
        logger = get_root_logger()
        logger.warning(f'iter {current_iter}: skipped a step with {reason} ({self.skipped_steps} skipped so far, '
                       f'{self.consecutive_skips} in a row)')
        if self.consecutive_skips >= self.max_consecutive_skips:
            raise RuntimeError(
                f'{self.consecutive_skips} consecutive training steps had non-finite losses or gradients; stopping. '
                'Lower the learning rate, set train.grad_clip_norm, check the data, or resume from an earlier '
                'checkpoint (train.max_consecutive_skips sets this limit).')

    def _freeze_encoder_grads(self, current_iter):
        if current_iter <= self.fix_encoder_iters:
            for p in self.get_bare_model(self.net_g).embed.parameters():
                p.grad = None if p.grad is None else torch.zeros_like(p.grad)

    def optimize_parameters(self, current_iter):
        loss_dict = OrderedDict()
        gan_stage = self.net_d is not None
        update_g_gan = gan_stage and current_iter % self.net_d_iters == 0 and current_iter > self.net_d_init_iters
        snapshot = self._step_snapshot()
        if gan_stage:
            for p in self.net_d.parameters():
                p.requires_grad = False

        self.optimizer_g.zero_grad()
        gt_in = self.cri_nll.dequantize(self.gt) if self.cri_nll else self.gt
        need_sample = gan_stage or self.cri_pix is not None or self.cri_perceptual is not None
        # one generator call: NLL of the HR and (if needed) a sample f^-1(z; x), DDP-safe
        out = self.net_g(self.lq, gt_in, sample=need_sample, temperature=self.train_temperature, amp=self.train_amp)
        self.output = out.get('sr')

        l_g_total = 0
        if self.cri_nll:
            l_nll = self.cri_nll(out['logp'], out['logdet'], out['shape'])
            l_g_total = l_g_total + l_nll
            loss_dict['l_g_nll'] = l_nll.detach()
        if self.output is not None and (not gan_stage or update_g_gan):
            if self.cri_pix:
                l_pix = self.cri_pix(self.output, self.gt)
                l_g_total = l_g_total + l_pix
                loss_dict['l_g_pix'] = l_pix.detach()
            if self.cri_perceptual:
                l_percep, l_style = self.cri_perceptual(self.output, self.gt)
                for name, value in (('l_g_percep', l_percep), ('l_g_style', l_style)):
                    if value is not None:
                        l_g_total = l_g_total + value
                        loss_dict[name] = value.detach()

        if not self._all_ranks_finite(l_g_total, *([] if self.output is None else [self.output])):
            # nothing reaches the discriminator (its BatchNorm statistics stay clean) or the weights
            return self._skip_step(snapshot, 'a non-finite NLL or sample', current_iter, loss_dict)

        # the discriminator's real images: the clean HR, or the same dequantised HR the NLL saw
        self.real_d = gt_in if gan_stage and self.real_noise else self.gt
        if update_g_gan:  # relativistic GAN loss, as ESRGAN
            real_d_pred, fake_g_pred = self._d_outputs(self.real_d, self.output)
            real_d_pred = real_d_pred.detach()
            l_g_real = self.cri_gan(real_d_pred - torch.mean(fake_g_pred), False, is_disc=False)
            l_g_fake = self.cri_gan(fake_g_pred - torch.mean(real_d_pred), True, is_disc=False)
            l_g_gan = (l_g_real + l_g_fake) / 2
            l_g_total = l_g_total + l_g_gan
            loss_dict['l_g_gan'] = l_g_gan.detach()
            if self._is_log_step(current_iter) and self.cri_nll:
                self._term_grad_norms(loss_dict, l_nll, l_g_gan)

        l_g_total.backward()
        self._freeze_encoder_grads(current_iter)
        norm = self._grad_norm(self.net_g.parameters())
        loss_dict['grad_norm_g'] = norm  # stacked with the losses under DDP
        if not self._all_ranks_finite(norm, l_g_total):
            return self._skip_step(snapshot, 'a non-finite generator loss or gradient', current_iter, loss_dict)
        if gan_stage and not self._optimize_d(current_iter, loss_dict):
            return self._skip_step(snapshot, 'a non-finite discriminator loss or gradient', current_iter, loss_dict)

        # a clean step: G, D and the EMA move together (G's step waits for D's gradients; D judged the
        # detached sample, so the order does not change either update)
        self.optimizer_g.step()
        if gan_stage:
            self.optimizer_d.step()
        self.consecutive_skips = 0
        loss_dict['skipped_steps'] = torch.tensor(float(self.skipped_steps), device=self.device)
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def _is_log_step(self, current_iter):
        return current_iter % int(self.opt.get('logger', {}).get('print_freq', 100)) == 0

    def _term_grad_norms(self, loss_dict, l_nll, l_g_gan):
        """The gradient norms the NLL and the GAN term (each with its weight) send to the generator
        (two extra backward passes, so only on logging steps)."""
        params = [p for p in self.get_bare_model(self.net_g).parameters() if p.requires_grad]
        for name, term in (('grad_norm_g_nll', l_nll), ('grad_norm_g_gan', l_g_gan)):
            if not term.requires_grad:  # the term does not reach the generator at all
                loss_dict[name] = torch.zeros((), device=self.device)
                continue
            grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
            squares = [g.detach().float().pow(2).sum() for g in grads if g is not None]
            loss_dict[name] = torch.stack(squares).sum().sqrt()

    def _d_outputs(self, real, fake):
        """D's outputs on ``real`` and on ``fake``: two forward passes, or one over both (``train.d_batch``)."""
        if self.d_batch == 'joint':
            return self.net_d(torch.cat([real, fake])).split([real.shape[0], fake.shape[0]])
        return self.net_d(real), self.net_d(fake)

    def _optimize_d(self, current_iter, loss_dict):
        """The discriminator's gradients; returns whether its loss and gradients are finite on every process
        (the caller then steps both optimizers, or skips the whole step)."""
        for p in self.net_d.parameters():
            p.requires_grad = True
        self.optimizer_d.zero_grad()
        fake = self.output.detach()
        if self.d_batch == 'joint':  # one forward and one backward pass over real and fake together
            real_d_pred, fake_d_pred = self._d_outputs(self.real_d, fake)
            l_d_real = self.cri_gan(real_d_pred - torch.mean(fake_d_pred.detach()), True, is_disc=True) * 0.5
            l_d_fake = self.cri_gan(fake_d_pred - torch.mean(real_d_pred.detach()), False, is_disc=True) * 0.5
            (l_d_real + l_d_fake).backward()
        else:  # real and fake backwarded separately, as ESRGANModel (DDP + BatchNorm in-place issue)
            fake_d_pred = self.net_d(fake).detach()
            real_d_pred = self.net_d(self.real_d)
            l_d_real = self.cri_gan(real_d_pred - torch.mean(fake_d_pred), True, is_disc=True) * 0.5
            l_d_real.backward()
            fake_d_pred = self.net_d(fake)
            l_d_fake = self.cri_gan(fake_d_pred - torch.mean(real_d_pred.detach()), False, is_disc=True) * 0.5
            l_d_fake.backward()
        norm = self._grad_norm(self.net_d.parameters())
        loss_dict['l_d_real'] = l_d_real.detach()
        loss_dict['l_d_fake'] = l_d_fake.detach()
        loss_dict['out_d_real'] = torch.mean(real_d_pred.detach())
        loss_dict['out_d_fake'] = torch.mean(fake_d_pred.detach())
        if self._is_log_step(current_iter):  # host reads: only when BasicSR prints the log
            stats = discriminator_stats(real_d_pred, fake_d_pred)  # before this step's update, as the losses
            loss_dict.update(stats)
            self._check_d_health(stats, current_iter)
        return self._all_ranks_finite(norm, l_d_real + l_d_fake)

    def _check_d_health(self, stats, current_iter):
        """The two health monitors on one logged step: a constant D (warns, or stops the run with
        ``stop_on_dead_d``) and a D at chance (warns)."""
        if self.dead_d_monitor.patience <= 0 and self.chance_d_monitor.window <= 0:
            return
        # dead only if dead on every process, so that all stop together; the accuracy and gap are averaged
        dead = self.dead_d_monitor.looks_dead(stats).float().reshape(1)
        mean = torch.stack([(stats['d_acc_real'] + stats['d_acc_fake']) / 2, stats['d_gap']]).float()
        if self.opt['dist'] and dist.is_initialized():
            dist.all_reduce(dead, op=dist.ReduceOp.MIN)
            dist.all_reduce(mean)
            mean /= dist.get_world_size()
        dead_flag, accuracy, gap = torch.cat([dead, mean]).tolist()  # one host read per logged step
        logger = get_root_logger()
        message = self.dead_d_monitor.update(dead_flag > 0, stats, current_iter)
        if message is not None:
            if self.stop_on_dead_d:
                logger.error(message)
                raise RuntimeError(message)
            logger.warning(message)
        message = self.chance_d_monitor.update(accuracy, gap, current_iter)
        if message is not None:
            logger.warning(message)

    # ------------------------------------------------------------------ inference
    def _test_net(self):
        return self.net_g_ema if hasattr(self, 'net_g_ema') else self.get_bare_model(self.net_g)

    @torch.no_grad()
    def sample(self, lq, temperature, num_samples=1, seed=None, cond=None):
        """``num_samples`` SR samples of ``lq`` at ``temperature`` (the embedding computed once).

        ``cond``: the test network's ``condition(lq)`` to reuse (e.g. across temperatures); computed here
        (with ``val.amp``) if not given. At temperature 0 every latent is its mode, so the one output is
        decoded once and repeated.
        """
        net = self._test_net()
        was_training = net.training
        net.eval()
        if cond is None:
            cond = net.condition(lq, amp=self.val_amp)
        draws = min(num_samples, 1) if float(temperature) == 0 else num_samples
        outs = [net.decode(temperature=temperature, cond=cond, seed=None if seed is None else seed + i)
                for i in range(draws)]
        if draws < num_samples:
            outs = outs * num_samples
        net.train(was_training)
        return outs

    def test(self):
        val_opt = self.opt.get('val', {})
        temperature = as_list(val_opt.get('temperature', 1.0))[0]
        self.output = self.sample(self.lq, temperature, 1, val_opt.get('seed', 0))[0]

    # ------------------------------------------------------------------ checkpoints
    def _save_g(self, current_iter):
        if hasattr(self, 'net_g_ema'):
            self.save_network([self.net_g, self.net_g_ema], 'net_g', current_iter, param_key=['params', 'params_ema'])
        else:
            self.save_network(self.net_g, 'net_g', current_iter)

    def save(self, epoch, current_iter):
        self._save_g(current_iter)
        if self.net_d is not None:
            self.save_network(self.net_d, 'net_d', current_iter)
        self._saved_state = dict(epoch=epoch, iter=current_iter, rng=resume.rng_state())
        self.save_training_state(epoch, current_iter, rng=self._saved_state['rng'])
