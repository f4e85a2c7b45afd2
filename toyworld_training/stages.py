"""The stages other than the UNet's diffusion steps: the VAE, the latent cache, the decoder,
the text encoder's pretraining and the terminal sitting. Each takes the Trainer and, where it
resumes, the checkpoint it was loaded from."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from cav_core.toyworld import spec
from cav_core.toyworld.clips import random_pretraining_clip

from .batches import clips_of, direction_label, terminal_batch, vae_frames
from .recipe import DEFAULTS, STAGES
from .schedule import learning_rate, set_learning_rate, step_rng

if TYPE_CHECKING:
    from .trainer import Trainer


def _resumed_optimizer(opt: torch.optim.Optimizer, blob: dict | None, stage: str) -> None:
    if blob and blob["state"]["stage"] == stage and "opt" in blob:
        opt.load_state_dict(blob["opt"])


def _vae_step(tr: Trainer, opt: torch.optim.Optimizer, loss: torch.Tensor, stage: str, total: int) -> None:
    """One optimizer step of the VAE or decoder stage, counted; logged and checkpointed every 100."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    tr.state["step"] += 1
    if tr.state["step"] % 100 == 0:
        tr.log(f"{stage} step {tr.state['step']}/{total} loss {loss.item():.5f}")
        tr.save(opt)


def run_vae(tr: Trainer, blob: dict | None, deadline: float) -> None:
    """AutoencoderKL on single frames (MSE + tiny KL), then its latent scaling factor."""
    vae = tr.c.vae
    vae.train().requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=tr.cfg["vae_lr"], weight_decay=0.0)
    _resumed_optimizer(opt, blob, "vae")
    while tr.state["step"] < tr.cfg["vae_steps"] and not tr.out_of_time(deadline):
        step = tr.state["step"]
        x = vae_frames(step_rng(tr.cfg["seed"], "vae", step), tr.cfg["vae_batch"])
        post = vae.encode(x).latent_dist
        z = post.sample(generator=torch.Generator().manual_seed(step))
        rec = vae.decode(z).sample
        loss = F.mse_loss(rec, x) + 1e-6 * post.kl().mean()
        _vae_step(tr, opt, loss, "vae", tr.cfg["vae_steps"])
    vae.eval().requires_grad_(False)
    if tr.state["step"] < tr.cfg["vae_steps"]:
        tr.save(opt)
        return
    with torch.no_grad():
        x = vae_frames(step_rng(tr.cfg["seed"], "vae", 10**6), 1024)
        z = vae.encode(x).latent_dist.mean
    vae.register_to_config(scaling_factor=float(1.0 / z.std()))
    tr.log(f"vae done; scaling factor {vae.config.scaling_factor:.4f}")
    tr.state = {"stage": "data", "step": 0}
    tr.save()


def run_data(tr: Trainer) -> None:
    """Encode a fixed set of pretraining clips to latents once (cached on disk)."""
    n = tr.cfg["n_clips"]
    rng = step_rng(tr.cfg["seed"], "data", 0)
    lat, caps = [], []
    sf = tr.c.vae.config.scaling_factor
    t0 = time.time()
    for start in range(0, n, 32):
        clips = [random_pretraining_clip(rng) for _ in range(min(32, n - start))]
        x = torch.from_numpy(np.stack([c.frames for c in clips])) * 2 - 1  # B F H W C
        b = x.shape[0]
        x = x.reshape(-1, *x.shape[2:]).permute(0, 3, 1, 2)
        with torch.no_grad():
            z = tr.c.vae.encode(x).latent_dist.mean * sf
        lat.append(z.reshape(b, spec.NUM_FRAMES, *z.shape[1:]).permute(0, 2, 1, 3, 4).half())
        caps += [c.captions for c in clips]
        if start % 1024 == 0:
            tr.log(f"data {start}/{n} clips encoded ({time.time() - t0:.0f}s)")
    torch.save({"latents": torch.cat(lat), "captions": json.dumps(caps)}, tr.data_path)
    tr.state = {"stage": "image", "step": 0}
    tr.save()


def run_decoder(tr: Trainer, blob: dict | None, deadline: float) -> None:
    """Sharpen the VAE decoder with the encoder frozen: the latent space the UNet learned
    stays the same, only how latents are drawn gets better (small shapes' corners)."""
    vae = tr.c.vae
    total = int(tr.state.get("total", tr.cfg.get("decoder_steps", 0)))
    dec = list(vae.post_quant_conv.parameters()) + list(vae.decoder.parameters())
    vae.requires_grad_(False)
    for p in dec:
        p.requires_grad_(True)
    vae.decoder.train()
    lr = tr.cfg.get("decoder_lr", DEFAULTS["decoder_lr"])
    opt = torch.optim.AdamW(dec, lr=lr, weight_decay=0.0)
    _resumed_optimizer(opt, blob, "decoder")
    sitting = int(tr.state.get("sitting", 0))
    while tr.state["step"] < total and not tr.out_of_time(deadline):
        step = tr.state["step"]
        x = vae_frames(step_rng(tr.cfg["seed"], "decoder", step, sitting), tr.cfg["vae_batch"])
        with torch.no_grad():
            z = vae.encode(x).latent_dist.sample(generator=torch.Generator().manual_seed(step))
        rec = vae.decode(z).sample
        loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x)
        set_learning_rate(opt, learning_rate(lr, step, total))
        _vae_step(tr, opt, loss, "decoder", total)
    vae.eval().requires_grad_(False)
    tr.end_sitting("decoder", total, opt)


def pretrain_text(tr: Trainer, steps: int, batch: int = 64) -> list[float]:
    """Teach a fresh text encoder to tell the caption's words apart before any diffusion
    step (--text-pretrain): linear heads read color, shape, direction and background back
    from the pooled and the mean token state. Trained along with a fresh UNet instead, the
    encoder merged "left" and "right" before the UNet could use them; pretrained, then frozen,
    it keeps them apart, as a real model's CLIP does (docs/EXPERIMENTS.md §5). Returns the
    head losses."""
    data = torch.load(tr.data_path, weights_only=True)
    caps = json.loads(data["captions"])
    vocab = [list(spec.COLORS), list(spec.SHAPES), list(spec.DIRECTIONS), list(spec.BACKGROUNDS)]

    def labels(prompt: str) -> list[int]:
        w = prompt.split()
        return [vocab[0].index(w[1]), vocab[1].index(w[2]), direction_label(prompt), vocab[3].index(w[-2])]

    text = tr.c.text_encoder
    width = text.config.hidden_size
    heads = torch.nn.ModuleList([torch.nn.Linear(width, len(v)) for v in vocab])
    text.train().requires_grad_(True)
    opt = torch.optim.AdamW(list(text.parameters()) + list(heads.parameters()), lr=1e-3)
    rng = np.random.default_rng([tr.cfg["seed"], len(STAGES)])  # a stream no stage uses
    losses = []
    for step in range(steps):
        forms = rng.choice(["full", "motion_unnamed", "appearance"], size=batch, p=[0.7, 0.1, 0.2])
        prompts = [caps[i][f] for i, f in zip(rng.integers(len(caps), size=batch), forms)]
        target = torch.tensor([labels(p) for p in prompts])
        states, pooled = tr.encode(prompts)
        loss = sum(F.cross_entropy(head(feat), target[:, j])  # -100: no direction named
                   for feat in (pooled, states.mean(1)) for j, head in enumerate(heads))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if (step + 1) % 100 == 0:
            tr.log(f"text pretraining step {step + 1}/{steps} head loss {np.mean(losses[-100:]):.4f}")
    tr.log(f"text pretraining: {steps} steps, head loss {np.mean(losses[:10]):.4f} -> {np.mean(losses[-10:]):.4f}")
    text.eval().requires_grad_(False)
    return losses


def run_terminal(tr: Trainer, blob: dict | None, deadline: float) -> None:
    """Teach the caption the sign of the motion where nothing else can give it (--extend-terminal):
    at the terminal timestep of a zero-terminal-SNR model the input is pure noise and the v
    target is minus the clean clip, so the best prediction is the caption's mean clip.

    Which way along its axis the object goes is a small part of that loss, too little to be
    learned from batches spread over all timesteps and caption forms. Here every batch is
    full captions of moving clips at t = T - 1, at a constant rate and without EMA (the sign
    is picked up abruptly; an average would lag it). It leaves the lower timesteps worse off:
    --extend-video sittings follow it (docs/EXPERIMENTS.md §5).

    With ``opening_frames`` N, every other step trains on the clips' first N frames only.
    Over a whole clip, what a direction word must change is antisymmetric in time, while what
    the caption adds through cross-attention is to first order the same in every frame; within
    the opening frames the direction is a static offset (a clip moving right starts on the
    left), which the caption learns at first order (docs/EXPERIMENTS.md §5)."""
    if not tr.pure_noise_at_last_step:
        raise SystemExit("--extend-terminal needs a model trained with --v-zero-snr: on ModelScope's schedule "
                         "the noise at the last timestep still holds the clip, so there is no pure-noise step to teach")
    data = torch.load(tr.data_path, weights_only=True)
    latents, caps = data["latents"], json.loads(data["captions"])
    pool = clips_of(caps, "--extend-terminal", tr.data_path)
    schedule = tr.noise_schedule
    t_last = len(schedule.alphas_cumprod) - 1
    opening = int(tr.state.get("opening_frames", 0))
    params = tr.start_training()
    lr = float(tr.cfg.get("terminal_lr", DEFAULTS["terminal_lr"]))
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    _resumed_optimizer(opt, blob, "terminal")
    total, sitting = int(tr.state["total"]), int(tr.state.get("sitting", 0))
    losses: list[float] = []
    while tr.state["step"] < total and not tr.out_of_time(deadline):
        step = tr.state["step"]
        rng = step_rng(tr.cfg["seed"], "terminal", step, sitting)
        g = torch.Generator().manual_seed(int(rng.integers(2**31)))
        x0, noise, prompts = terminal_batch(rng, g, latents, caps, pool, tr.cfg["video_batch"], opening, step)
        t = torch.full((len(prompts),), t_last)
        torch.manual_seed(int(torch.randint(2**31, (1,), generator=g)))  # temporal-conv dropout
        states, _ = tr.encode(prompts)
        pred = tr.c.unet(schedule.add_noise(x0, noise, t), t, encoder_hidden_states=states).sample
        loss = F.mse_loss(pred, schedule.get_velocity(x0, noise, t))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        tr.state["step"] += 1
        if tr.state["step"] % 50 == 0:
            tr.log(f"terminal step {tr.state['step']}/{total} loss {np.mean(losses[-50:]):.4f}")
        if tr.state["step"] % 200 == 0:
            tr.save(opt)
    tr.stop_training()
    tr.end_sitting("terminal", total, opt)
