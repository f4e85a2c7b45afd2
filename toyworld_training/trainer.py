"""Pretrain the embedded toy text-to-video model on synthetic spec-v1 clips. Resumable.

    python -m cav_core.toyworld.train_toy --work runs/toy --minutes 60      # run / continue
    python -m cav_core.toyworld.train_toy --work runs/toy --export cav_core/toyworld/model
    python -m cav_core.toyworld.train_toy --work runs/toy --extend-video 4000 --image-every 4
    python -m cav_core.toyworld.train_toy --work runs/toy --extend-decoder 1500
    python -m cav_core.toyworld.train_toy --work runs/toy --extend-terminal 1000

A finished model can be trained further (--extend-video): the video stage reopens with a
fresh warm-up and cosine schedule, optionally interleaving image batches (temporal layers
bypassed) the way ModelScope trained jointly on images and videos; every sitting is
recorded in the checkpoint and exported to training.json. --direction-aux, --video-t-min,
--high-noise-weight and --direction-contrast make direction words steer the motion; with
--restart-diffusion (a new UNet and text encoder on a finished run's VAE and latents) they
made the shipped model (docs/TOY_MODEL.md has the figures and the commands).
--v-zero-snr (v-prediction on a zero-terminal-SNR schedule, kept by later sittings and
exported as the model's scheduler config) and --position-aux (a frame-index probe) aim at
what v3 lacked: its start noise, not the caption, picked which way along an axis the
object moved. As a 3000-step extension of v3 they did not change that; --extend-terminal
(a sitting at pure noise only) then did, and --extend-video sittings repaired the rest.

Stages, in order (each resumes at its last checkpoint):
  vae    AutoencoderKL on single frames (MSE + tiny KL), then its latent scaling factor
  data   encode a fixed set of pretraining clips to latents once (cached on disk)
  image  UNet + text encoder on single frames, temporal layers bypassed: appearance first,
         the way ModelScope grew out of an image model
  video  everything on 16-frame clips: motion words become meaningful
  decoder  the VAE decoder alone, encoder frozen, so the latent space the UNet learned
         stays put while small shapes are drawn sharper
  terminal (an extension only) UNet + text encoder at the last timestep of a v-prediction,
         zero-terminal-SNR model: pure noise in, the caption's mean clip out
What makes a tiny conditional model learn fast on 2 cores (docs/TOY_MODEL.md): 8x8 latents,
a trainable text encoder, caption dropout (for classifier-free guidance), warm-up to a
high learning rate, min-SNR loss weighting, and an EMA of the weights that is exported.
Every step's randomness derives from (seed, stage, step), so a resumed run draws exactly
what an uninterrupted one would.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import model_config, spec
from .clips import random_pretraining_clip

STAGES = ("vae", "data", "image", "video", "decoder", "terminal")
PIPELINE = STAGES[:5]  # a first run goes through these; "terminal" is an extension sitting only
DEFAULTS = dict(vae_steps=1500, vae_batch=64, vae_lr=1e-3, n_clips=8000,
                image_steps=1500, image_batch=64, video_steps=6000, video_batch=8,
                lr=6e-4, warmup=200, ema_decay=0.998, cfg_dropout=0.1, min_snr=5.0, seed=1234,
                decoder_steps=1500, decoder_lr=5e-4, terminal_lr=1e-3)


def _rng(seed: int, stage: str, step: int, sitting: int = 0) -> np.random.Generator:
    # Sitting 0 keeps the original stream; an extension (--extend-video) draws fresh batches.
    key = [seed, STAGES.index(stage), step] + ([sitting] if sitting else [])
    return np.random.default_rng(key)


def loss_weights(alphas_cumprod: torch.Tensor, min_snr: float, high_noise_weight: float = 0.0,
                 prediction: str = "epsilon") -> torch.Tensor:
    """Per-sample weights of the eps (or v) loss: min-SNR (low noise counts less), and
    optionally 1/SNR capped at ``high_noise_weight``. The eps loss weighs an error in the clean
    video by SNR, ~0.01 above t = 900, where the layout (and so the motion) is decided; the
    second factor turns those steps into an x0 loss, so a prediction from near-pure noise has
    to follow the caption rather than the noise.

    A v error weighs an x0 error by SNR + 1; the same x0 weights (min(SNR, min_snr), and with
    ``high_noise_weight`` at least 1 at high noise) are divided by that. At zero terminal SNR
    the 1/SNR cap has nothing to cap, so any ``high_noise_weight`` > 0 means the full floor."""
    snr = alphas_cumprod / (1 - alphas_cumprod)
    if prediction == "v_prediction":
        floor = 1.0 if high_noise_weight > 0 else 0.0
        return torch.clamp(snr, min=floor, max=min_snr) / (snr + 1)
    w = torch.clamp(snr, max=min_snr) / snr
    if high_noise_weight > 0:
        w = w * torch.clamp(1 / snr, min=1.0, max=high_noise_weight)
    return w


class Trainer:
    def __init__(self, work: Path, cfg: dict):
        self.work, self.cfg = work, cfg
        work.mkdir(parents=True, exist_ok=True)
        self.c = self._fresh_components()
        self.state = {"stage": "vae", "step": 0}
        self.history: list[dict] = []
        self._heads: dict[str, torch.nn.Module | None] = {}  # training-only probes, saved with the optimizer
        self.stop = False

    @property
    def noise_schedule(self):
        """The diffusers scheduler the model trains for (and ships with): its alphas and target."""
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_config({k: v for k, v in self.c.scheduler_config.items() if not k.startswith("_")})

    @property
    def pure_noise_at_last_step(self) -> bool:
        """Whether the model trains v-prediction on a zero-terminal-SNR schedule (--v-zero-snr),
        the only objective whose last timestep is pure noise with a well-defined target."""
        cfg = self.c.scheduler_config
        return cfg.get("prediction_type") == "v_prediction" and bool(cfg.get("rescale_betas_zero_snr"))

    def _fresh_components(self):
        """The toy architecture with the recipe seed's random weights."""
        from ..model import build_t2v

        tok = model_config.build_tokenizer()
        return build_t2v(model_config.UNET_CONFIG, model_config.text_config(tok), model_config.VAE_CONFIG,
                         model_config.SCHEDULER_CONFIG, tok, seed=self.cfg["seed"], name="cav-toy-t2v").base

    # ------------------------------------------------------------------ checkpoints
    @property
    def ckpt(self) -> Path:
        return self.work / "checkpoint.pt"

    def save(self, opt=None, ema=None) -> None:
        if self.history:
            self.history[-1]["to"] = dict(self.state)
        blob = {"state": dict(self.state), "cfg": dict(self.cfg),
                "unet": self.c.unet.state_dict(), "text": self.c.text_encoder.state_dict(),
                "vae": self.c.vae.state_dict(), "scaling_factor": float(self.c.vae.config.scaling_factor),
                "scheduler": json.dumps(dict(self.c.scheduler_config)),
                "history": json.dumps(self.history)}
        if opt is not None:
            blob["opt"] = opt.state_dict()
        if ema is not None:
            blob["ema"] = [p.detach().clone() for p in ema]
        for name, head in self._heads.items():
            if opt is not None and head is not None:
                blob[name] = head.state_dict()
        tmp = self.ckpt.with_suffix(".tmp")
        torch.save(blob, tmp)
        os.replace(tmp, self.ckpt)

    def load(self) -> dict | None:
        if not self.ckpt.exists():
            return None
        blob = torch.load(self.ckpt, weights_only=True)
        self.state = blob["state"]
        self.history = json.loads(blob.get("history", "[]"))
        if self.state.get("sitting"):
            # An extension keeps the recipe of the run it extends (that is what training.json records).
            self.cfg = dict(blob["cfg"])
        self.c.unet.load_state_dict(blob["unet"])
        self.c.text_encoder.load_state_dict(blob["text"])
        self.c.vae.load_state_dict(blob["vae"])
        self.c.vae.register_to_config(scaling_factor=blob["scaling_factor"])
        if "scheduler" in blob:  # older checkpoints all trained for ModelScope's (the default)
            self.c = dataclasses.replace(self.c, scheduler_config=json.loads(blob["scheduler"]))
        return blob

    def log(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        with open(self.work / "train.log", "a") as f:
            f.write(line + "\n")

    # ------------------------------------------------------------------ stages
    def _frames(self, rng: np.random.Generator, n: int) -> torch.Tensor:
        clips = [random_pretraining_clip(rng).frames for _ in range((n + 3) // 4)]
        frames = np.concatenate([c[rng.choice(spec.NUM_FRAMES, 4, replace=False)] for c in clips])[:n]
        return torch.from_numpy(frames).permute(0, 3, 1, 2) * 2 - 1

    def run_vae(self, blob, deadline: float) -> None:
        vae = self.c.vae
        vae.train().requires_grad_(True)
        opt = torch.optim.AdamW(vae.parameters(), lr=self.cfg["vae_lr"], weight_decay=0.0)
        if blob and blob["state"]["stage"] == "vae" and "opt" in blob:
            opt.load_state_dict(blob["opt"])
        while self.state["step"] < self.cfg["vae_steps"] and not self._out_of_time(deadline):
            step = self.state["step"]
            x = self._frames(_rng(self.cfg["seed"], "vae", step), self.cfg["vae_batch"])
            post = vae.encode(x).latent_dist
            z = post.sample(generator=torch.Generator().manual_seed(step))
            rec = vae.decode(z).sample
            loss = F.mse_loss(rec, x) + 1e-6 * post.kl().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            self.state["step"] += 1
            if self.state["step"] % 100 == 0:
                self.log(f"vae step {self.state['step']}/{self.cfg['vae_steps']} loss {loss.item():.5f}")
                self.save(opt)
        vae.eval().requires_grad_(False)
        if self.state["step"] < self.cfg["vae_steps"]:
            self.save(opt)
        else:
            with torch.no_grad():
                x = self._frames(_rng(self.cfg["seed"], "vae", 10**6), 1024)
                z = vae.encode(x).latent_dist.mean
            vae.register_to_config(scaling_factor=float(1.0 / z.std()))
            self.log(f"vae done; scaling factor {vae.config.scaling_factor:.4f}")
            self.state = {"stage": "data", "step": 0}
            self.save()

    def _next_state(self, stage: str) -> dict:
        """The state at the start of ``stage``; a sitting keeps its number and recipe (a
        restarted one goes on from its image stage to its video stage)."""
        keep = {k: v for k, v in self.state.items() if k not in ("stage", "step", "total", "cut_short")}
        if stage == "video" and "video_total" in keep:
            keep["total"] = keep["video_total"]
        return {"stage": stage, "step": 0, **keep}

    def run_decoder(self, blob, deadline: float) -> None:
        """Sharpen the VAE decoder with the encoder frozen: the latent space the UNet learned
        stays the same, only how latents are drawn gets better (small shapes' corners)."""
        vae = self.c.vae
        total = int(self.state.get("total", self.cfg.get("decoder_steps", 0)))
        dec = list(vae.post_quant_conv.parameters()) + list(vae.decoder.parameters())
        vae.requires_grad_(False)
        for p in dec:
            p.requires_grad_(True)
        vae.decoder.train()
        lr = self.cfg.get("decoder_lr", DEFAULTS["decoder_lr"])
        opt = torch.optim.AdamW(dec, lr=lr, weight_decay=0.0)
        if blob and blob["state"]["stage"] == "decoder" and "opt" in blob:
            opt.load_state_dict(blob["opt"])
        sitting = int(self.state.get("sitting", 0))
        while self.state["step"] < total and not self._out_of_time(deadline):
            step = self.state["step"]
            x = self._frames(_rng(self.cfg["seed"], "decoder", step, sitting), self.cfg["vae_batch"])
            with torch.no_grad():
                z = vae.encode(x).latent_dist.sample(generator=torch.Generator().manual_seed(step))
            rec = vae.decode(z).sample
            loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x)
            for group in opt.param_groups:
                group["lr"] = lr * (0.5 * (1 + math.cos(math.pi * step / total)) * 0.9 + 0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            self.state["step"] += 1
            if self.state["step"] % 100 == 0:
                self.log(f"decoder step {self.state['step']}/{total} loss {loss.item():.5f}")
                self.save(opt)
        vae.eval().requires_grad_(False)
        self._end_extension("decoder", total, opt)

    def _end_extension(self, stage: str, total: int, opt) -> None:
        """A finished extension sitting leaves the run "done"; one cut short keeps its
        optimizer in the checkpoint, to resume where it stopped."""
        if self.state["step"] >= total:
            self.state = self._next_state("done")
            self.log(f"{stage} done")
            self.save()
        else:
            self.save(opt)

    def run_terminal(self, blob, deadline: float) -> None:
        """Teach the caption the sign of the motion where nothing else can give it: at the
        terminal timestep of a zero-terminal-SNR model the input is pure noise and the v
        target is minus the clean clip, so the best prediction is the caption's mean clip.

        Which way along its axis the object goes is worth ~5% of that loss (measured: 0.46
        with the right direction word against 0.49 knowing only the axis), too little to be
        learned from batches spread over all timesteps and caption forms: v3 and a
        3000-step v-prediction sitting on it never learned it. Here every batch is full
        captions of moving clips (``with_still``: of all clips) at t = T - 1, at a constant
        rate and without EMA (the sign is picked up abruptly, after ~600 steps; an average
        would lag it). It leaves the lower timesteps worse off: follow it with --extend-video
        sittings (docs/EXPERIMENTS.md §5).

        With ``opening_frames`` N, every other step trains on the clips' first N frames only.
        Over a whole clip, what a direction word must change is antisymmetric in time (for
        "right", the left of the frame early and the right late), while what the caption adds
        through cross-attention is to first order the same in every frame, so the gradient
        toward a word-dependent estimate starts near zero. Within the opening frames the
        direction is a static offset (a clip moving right starts on the left), which the
        caption learns at first order. Measured on a fresh UNet with a frozen text encoder
        that keeps the words apart: the word took hold after ~600 steps instead of ~800, with
        twice the effect at step 900 (docs/EXPERIMENTS.md §5)."""
        if not self.pure_noise_at_last_step:
            raise SystemExit("--extend-terminal needs a model trained with --v-zero-snr: on ModelScope's schedule "
                             "the noise at the last timestep still holds the clip, so there is no pure-noise step to teach")
        data = torch.load(self.data_path, weights_only=True)
        latents, caps = data["latents"], json.loads(data["captions"])
        pool = self._terminal_pool(caps)
        schedule = self.noise_schedule
        t_last = len(schedule.alphas_cumprod) - 1
        unet, text = self.c.unet, self.c.text_encoder
        opening = int(self.state.get("opening_frames", 0))
        params = self._start_training()
        lr = float(self.cfg.get("terminal_lr", DEFAULTS["terminal_lr"]))
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
        if blob and blob["state"]["stage"] == "terminal" and "opt" in blob:
            opt.load_state_dict(blob["opt"])
        total, sitting = int(self.state["total"]), int(self.state.get("sitting", 0))
        losses: list[float] = []
        while self.state["step"] < total and not self._out_of_time(deadline):
            step = self.state["step"]
            rng = _rng(self.cfg["seed"], "terminal", step, sitting)
            g = torch.Generator().manual_seed(int(rng.integers(2**31)))
            idx = rng.choice(pool, size=self.cfg["video_batch"])
            x0 = latents[idx].float()
            noise = torch.randn(x0.shape, generator=g)
            if opening and step % 2 == 0:
                x0, noise = x0[:, :, :opening], noise[:, :, :opening]
            t = torch.full((len(idx),), t_last)
            torch.manual_seed(int(torch.randint(2**31, (1,), generator=g)))  # temporal-conv dropout
            states, _ = self._encode([caps[i]["full"] for i in idx])
            pred = unet(schedule.add_noise(x0, noise, t), t, encoder_hidden_states=states).sample
            loss = F.mse_loss(pred, schedule.get_velocity(x0, noise, t))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(loss.item())
            self.state["step"] += 1
            if self.state["step"] % 50 == 0:
                self.log(f"terminal step {self.state['step']}/{total} loss {np.mean(losses[-50:]):.4f}")
            if self.state["step"] % 200 == 0:
                self.save(opt)
        unet.eval().requires_grad_(False)
        text.eval().requires_grad_(False)
        self._end_extension("terminal", total, opt)

    def _terminal_pool(self, caps: list[dict]) -> np.ndarray:
        """The cached clips a terminal sitting draws from: the moving ones, or with
        ``with_still`` all of them. On moving clips alone "still" gets no pure-noise estimate of
        its own. Measured on the in-budget pilot: 300 such steps made a one-step sample of still
        prompts drift as little as v5's, but did not stop the drift over 25 steps. On the second
        in-budget run 500 steps with ``with_still`` left the direction words without a sign; 900
        steps teach it with or without still clips, and neither pool keeps still prompts still
        after the video sittings (docs/EXPERIMENTS.md §5)."""
        moving = self._clips(caps, "--extend-terminal")
        return np.arange(len(caps)) if self.state.get("with_still") else moving

    def _clips(self, caps: list[dict], option: str, still: bool = False) -> np.ndarray:
        """Indices of the cached clips whose full caption names a direction other than still
        (``still``: whose caption is still); ``option`` names the option that needs them."""
        s = list(spec.DIRECTIONS).index("still")
        labels = [self._direction_label(c["full"]) for c in caps]
        found = np.array([i for i, lab in enumerate(labels) if (lab == s if still else lab not in (-100, s))])
        if not len(found):
            raise SystemExit(f"{option}: no clip in {self.data_path} {'is still' if still else 'moves'}; "
                             "encode more clips (--n-clips)")
        return found

    @property
    def data_path(self) -> Path:
        return self.work / "latents.pt"

    def run_data(self) -> None:
        n = self.cfg["n_clips"]
        rng = _rng(self.cfg["seed"], "data", 0)
        lat, caps = [], []
        sf = self.c.vae.config.scaling_factor
        t0 = time.time()
        for start in range(0, n, 32):
            clips = [random_pretraining_clip(rng) for _ in range(min(32, n - start))]
            x = torch.from_numpy(np.stack([c.frames for c in clips])) * 2 - 1  # B F H W C
            b = x.shape[0]
            x = x.reshape(-1, *x.shape[2:]).permute(0, 3, 1, 2)
            with torch.no_grad():
                z = self.c.vae.encode(x).latent_dist.mean * sf
            lat.append(z.reshape(b, spec.NUM_FRAMES, *z.shape[1:]).permute(0, 2, 1, 3, 4).half())
            caps += [c.captions for c in clips]
            if start % 1024 == 0:
                self.log(f"data {start}/{n} clips encoded ({time.time() - t0:.0f}s)")
        torch.save({"latents": torch.cat(lat), "captions": json.dumps(caps)}, self.data_path)
        self.state = {"stage": "image", "step": 0}
        self.save()

    def _out_of_time(self, deadline: float) -> bool:
        return self.stop or time.time() > deadline

    def _caption(self, rng: np.random.Generator, caps: dict, weights: tuple[float, float, float]) -> str:
        u = rng.random()
        if u < self.cfg["cfg_dropout"]:
            return ""
        p_full, p_unnamed, _ = weights
        u = rng.random()
        return caps["full"] if u < p_full else caps["motion_unnamed"] if u < p_full + p_unnamed else caps["appearance"]

    def _encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token states (what the UNet cross-attends to) and the pooled EOS state."""
        tok = self.c.tokenizer(prompts, padding="max_length", max_length=self.c.tokenizer.model_max_length,
                               truncation=True, return_tensors="pt")
        out = self.c.text_encoder(tok.input_ids)
        return out[0], out[1]

    @staticmethod
    def _direction_label(prompt: str) -> int:
        """Index of the caption's direction word in spec.DIRECTIONS, or -100 (ignored) when
        the caption names none."""
        words = prompt.split()
        if "moving" in words and words.index("moving") + 1 < len(words):
            word = words[words.index("moving") + 1]
            if word in spec.DIRECTIONS:
                return list(spec.DIRECTIONS).index(word)
        return -100

    @classmethod
    def wrong_direction(cls, prompt: str, rng: np.random.Generator) -> str | None:
        """``prompt`` with its direction word swapped for another one, or None if it names none."""
        names = list(spec.DIRECTIONS)
        label = cls._direction_label(prompt)
        if label < 0:
            return None
        other = names[(label + 1 + int(rng.integers(len(names) - 1))) % len(names)]
        return prompt.replace(f"moving {names[label]} ", f"moving {other} ", 1)

    def _contrast_loss(self, rng: np.random.Generator, unet, xt, t, target, w, per_sample, prompts) -> torch.Tensor:
        """Hinge on the same noisy clip with another direction word: at high noise (where
        the caption must decide the motion) the wrong word should predict worse by a
        margin. The plain loss barely rewards reading the direction word at all; this
        asks for it directly. Only full captions with a direction take part."""
        rows, wrong = [], []
        for i, p in enumerate(prompts):
            other = self.wrong_direction(p, rng)
            if other is not None and int(t[i]) >= 600:
                rows.append(i)
                wrong.append(other)
        if not rows:
            return per_sample.new_zeros(())
        idx = torch.tensor(rows)
        states, _ = self._encode(wrong)
        pred = unet(xt[idx], t[idx], encoder_hidden_states=states).sample
        wrong_loss = w[idx] * ((pred - target[idx]) ** 2).mean(dim=(1, 2, 3, 4))
        right_loss = per_sample[idx]
        return F.relu(right_loss + 0.2 * right_loss.detach() - wrong_loss).mean()

    def _start_training(self) -> list[torch.nn.Parameter]:
        """Put the UNet, and the text encoder unless this sitting freezes it, in training mode;
        returns what the sitting's optimizer trains."""
        frozen_text = bool(self.state.get("freeze_text"))
        self.c.unet.train().requires_grad_(True)
        self.c.text_encoder.train(not frozen_text).requires_grad_(not frozen_text)
        return list(self.c.unet.parameters()) + ([] if frozen_text else list(self.c.text_encoder.parameters()))

    def pretrain_text(self, steps: int, batch: int = 64) -> list[float]:
        """Teach a fresh text encoder to tell the caption's words apart before any diffusion
        step: linear heads read color, shape, direction and background back from the pooled
        and the mean token state. Trained along with a fresh UNet instead, the encoder merged
        "left" and "right" (their states 0.4-2.4% apart) before the UNet could use them; after
        400 of these steps (seconds) they are ~90% apart, and frozen from then on they stay so,
        as a real model's CLIP does (docs/EXPERIMENTS.md §5). Returns the head losses."""
        data = torch.load(self.data_path, weights_only=True)
        caps = json.loads(data["captions"])
        vocab = [list(spec.COLORS), list(spec.SHAPES), list(spec.DIRECTIONS), list(spec.BACKGROUNDS)]

        def labels(prompt: str) -> list[int]:
            w = prompt.split()
            return [vocab[0].index(w[1]), vocab[1].index(w[2]), self._direction_label(prompt), vocab[3].index(w[-2])]

        text = self.c.text_encoder
        width = text.config.hidden_size
        heads = torch.nn.ModuleList([torch.nn.Linear(width, len(v)) for v in vocab])
        text.train().requires_grad_(True)
        opt = torch.optim.AdamW(list(text.parameters()) + list(heads.parameters()), lr=1e-3)
        rng = np.random.default_rng([self.cfg["seed"], len(STAGES)])  # a stream no stage uses
        losses = []
        for step in range(steps):
            forms = rng.choice(["full", "motion_unnamed", "appearance"], size=batch, p=[0.7, 0.1, 0.2])
            prompts = [caps[i][f] for i, f in zip(rng.integers(len(caps), size=batch), forms)]
            target = torch.tensor([labels(p) for p in prompts])
            states, pooled = self._encode(prompts)
            loss = sum(F.cross_entropy(head(feat), target[:, j])  # -100: no direction named
                       for feat in (pooled, states.mean(1)) for j, head in enumerate(heads))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if (step + 1) % 100 == 0:
                self.log(f"text pretraining step {step + 1}/{steps} head loss {np.mean(losses[-100:]):.4f}")
        self.log(f"text pretraining: {steps} steps, head loss {np.mean(losses[:10]):.4f} -> {np.mean(losses[-10:]):.4f}")
        text.eval().requires_grad_(False)
        return losses

    def run_diffusion(self, stage: str, blob, deadline: float) -> None:
        from ..layers import bypass_temporal

        data = torch.load(self.data_path, weights_only=True)
        schedule = self.noise_schedule
        prediction = schedule.config.prediction_type
        alphas_cumprod = schedule.alphas_cumprod
        latents, caps = data["latents"], json.loads(data["captions"])
        unet, text = self.c.unet, self.c.text_encoder
        params = self._start_training()
        # Optional auxiliary probe (extension sittings): a linear head reads the direction
        # word back from the pooled text state, so the text encoder keeps direction words
        # apart. Without it, single frames (image batches) and a UNet that cannot yet use
        # them let "left" and "right" collapse to almost the same features. Not exported.
        aux = float(self.state.get("direction_aux", 0.0))
        head = torch.nn.Linear(text.config.hidden_size, len(spec.DIRECTIONS)) if aux else None
        # Optional frame-position probe: linear heads read each frame's index back from the
        # mid and second up block of a video batch. UNet3DConditionModel has no temporal
        # position embedding; a frame learns where it stands in the clip only through the
        # temporal convolutions' zero padding, and moving left rather than right needs that
        # (v3's features told the first half of a clip from the second in at most 65% of frames).
        pos = float(self.state.get("position_aux", 0.0))
        probed = [unet.mid_block, unet.up_blocks[1]] if pos else []
        widths = [unet.config.block_out_channels[-1], unet.config.block_out_channels[-2]]  # mid, up_blocks[1]
        pos_heads = torch.nn.ModuleList([torch.nn.Linear(w, spec.NUM_FRAMES) for w in widths]) if pos else None
        seen: list[torch.Tensor] = []
        hooks = [m.register_forward_hook(lambda _m, _i, out: seen.append(out)) for m in probed]
        trained = params + (list(head.parameters()) if head is not None else []) \
            + (list(pos_heads.parameters()) if pos_heads is not None else [])
        opt = torch.optim.AdamW(trained, lr=self.cfg["lr"], weight_decay=1e-2)
        ema = [p.detach().clone() for p in params]
        if blob and blob["state"]["stage"] == stage and "opt" in blob:
            opt.load_state_dict(blob["opt"])
            ema = blob["ema"]
            if head is not None and "aux_head" in blob:
                head.load_state_dict(blob["aux_head"])
            if pos_heads is not None and "pos_heads" in blob:
                pos_heads.load_state_dict(blob["pos_heads"])
        self._heads = {"aux_head": head, "pos_heads": pos_heads}
        total = int(self.state.get("total", self.cfg[f"{stage}_steps"]))
        sitting = int(self.state.get("sitting", 0))
        every = int(self.state.get("image_every", self.cfg.get("image_every", 0))) if stage == "video" else 0
        # Terminal rows: the last K rows of every video batch are moving clips, full captions,
        # at the last timestep (what --extend-terminal trains, mixed in from the start rather
        # than in a sitting of its own that leaves the lower timesteps worse off).
        k_terminal = int(self.state.get("terminal_rows", 0)) if stage == "video" else 0
        if k_terminal and not self.pure_noise_at_last_step:
            raise SystemExit("--terminal-rows needs --v-zero-snr: on ModelScope's schedule the last timestep is not pure noise")
        moving = self._clips(caps, "--terminal-rows") if k_terminal else None
        # Still rows: the first K rows of every video batch are still clips with full captions,
        # at the batch's timesteps. Drawn uniformly, "moving still" is 1 caption in 13 and the
        # 8-to-1 moving majority pulls still prompts into a drift over the sampling steps.
        k_still_rows = int(self.state.get("still_rows", 0)) if stage == "video" else 0
        still_clips = self._clips(caps, "--still-rows", still=True) if k_still_rows else None
        losses, image_losses, aux_losses, pos_losses = [], [], [], []
        t0, n_run = time.time(), 0
        while self.state["step"] < total and not self._out_of_time(deadline):
            step = self.state["step"]
            rng = _rng(self.cfg["seed"], stage, step, sitting)
            g = torch.Generator().manual_seed(int(rng.integers(2**31)))
            image = stage == "image" or (every > 0 and step % every == every - 1)
            k_t = 0 if image else k_terminal
            k_s = 0 if image else k_still_rows
            weights = (0.2, 0.2, 0.6) if image else (0.7, 0.1, 0.2)
            if image and self.state.get("image_captions") == "no-direction":
                weights = (0.0, 0.3, 0.7)  # a single frame shows no direction: don't name one
            if image:
                idx = rng.integers(len(latents), size=self.cfg["image_batch"])
                fr = rng.integers(spec.NUM_FRAMES, size=len(idx))
                x0 = latents[idx, :, fr][:, :, None].float()
            else:
                idx = rng.integers(len(latents), size=self.cfg["video_batch"])
                if k_t:
                    idx[-k_t:] = rng.choice(moving, size=k_t)
                if k_s:
                    idx[:k_s] = rng.choice(still_clips, size=k_s)
                x0 = latents[idx].float()
            prompts = [self._caption(rng, caps[i], weights) for i in idx]
            if k_t:
                prompts[-k_t:] = [caps[i]["full"] for i in idx[-k_t:]]
            if k_s:
                prompts[:k_s] = [caps[i]["full"] for i in idx[:k_s]]
            noise = torch.randn(x0.shape, generator=g)
            # Motion is decided at high noise, where it is least visible in the eps loss: an
            # extension may draw its video batches' timesteps from [video_t_min, T) only.
            t_min = 0 if image else int(self.state.get("video_t_min", 0))
            t = torch.randint(t_min, len(alphas_cumprod), (x0.shape[0],), generator=g)
            if k_t:
                t[-k_t:] = len(alphas_cumprod) - 1
            ac = alphas_cumprod[t].view(-1, 1, 1, 1, 1)
            xt = schedule.add_noise(x0, noise, t)
            target = noise if prediction == "epsilon" else schedule.get_velocity(x0, noise, t)
            # UNet3D's temporal convs use dropout: seed it from this step so a resumed run
            # draws the masks an uninterrupted one would.
            torch.manual_seed(int(torch.randint(2**31, (1,), generator=g)))
            states, pooled = self._encode(prompts)
            seen.clear()
            with bypass_temporal(unet, enabled=image):
                pred = unet(xt, t, encoder_hidden_states=states).sample
            probe = seen[:len(probed)]  # the contrast pass below runs the hooks again
            w = loss_weights(ac.flatten(), self.cfg["min_snr"],
                             0.0 if image else float(self.state.get("high_noise_weight", 0.0)), prediction)
            if k_t:
                w[-k_t:] = 1.0  # min-SNR weighting gives the zero-SNR step no weight of its own
            per_sample = w * ((pred - target) ** 2).mean(dim=(1, 2, 3, 4))
            diffusion_loss = per_sample.mean()
            loss = diffusion_loss
            contrast = float(self.state.get("direction_contrast", 0.0)) if not image else 0.0
            if contrast:
                loss = loss + contrast * self._contrast_loss(rng, unet, xt, t, target, w, per_sample, prompts)
            if pos_heads is not None and not image:
                frames = x0.shape[2]
                pos_loss = sum(F.cross_entropy(h(f.reshape(x0.shape[0], frames, f.shape[1], -1).mean(-1))
                                               .flatten(0, 1), torch.arange(frames).repeat(x0.shape[0]))
                               for h, f in zip(pos_heads, probe)) / len(probe)
                pos_losses.append(pos_loss.item())
                loss = loss + pos * pos_loss
            if head is not None:
                labels = torch.tensor([self._direction_label(p) for p in prompts])
                if (labels >= 0).any():
                    aux_loss = F.cross_entropy(head(pooled), labels, ignore_index=-100)
                    aux_losses.append(aux_loss.item())
                    loss = loss + aux * aux_loss
            lr = self.cfg["lr"] * min(1.0, (step + 1) / self.cfg["warmup"])
            lr *= 0.5 * (1 + math.cos(math.pi * min(1.0, step / total))) * 0.9 + 0.1
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            decay = min(self.cfg["ema_decay"], (1 + step) / (10 + step))
            with torch.no_grad():
                torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
            # Interleaved image batches are logged apart so the video loss stays comparable.
            (image_losses if image and stage == "video" else losses).append(diffusion_loss.item())
            self.state["step"] += 1
            n_run += 1
            if self.state["step"] % 50 == 0:
                rate = (time.time() - t0) / n_run
                extra = f" image loss {np.mean(image_losses[-10:]):.4f}" if image_losses else ""
                extra += f" direction-probe loss {np.mean(aux_losses[-50:]):.3f}" if aux_losses else ""
                extra += f" position-probe loss {np.mean(pos_losses[-50:]):.3f}" if pos_losses else ""
                # An image-only sitting (--image-every 1) has no video loss to show.
                shown = f" loss {np.mean(losses[-50:]):.4f}" if losses else ""
                self.log(f"{stage} step {self.state['step']}/{total}{shown}{extra} "
                         f"lr {lr:.2e} {rate:.2f}s/step")
            if self.state["step"] % 200 == 0:
                self.save(opt, ema)
        if self.state["step"] >= total:
            # The EMA weights are the model from here on.
            with torch.no_grad():
                for p, e in zip(params, ema):
                    p.copy_(e)
            nxt = PIPELINE.index(stage) + 1
            if PIPELINE[nxt] == "decoder" and (self.state.get("sitting") or not self.cfg.get("decoder_steps")):
                nxt += 1  # an extension sitting (or an older recipe) does only what it was asked
            self.state = self._next_state(PIPELINE[nxt] if nxt < len(PIPELINE) else "done")
            self.log(f"{stage} done")
            self.save()
        else:
            self.save(opt, ema)
        for hook in hooks:
            hook.remove()
        unet.eval().requires_grad_(False)
        text.eval().requires_grad_(False)

    def ema_weights_into_model(self, blob) -> None:
        """While a diffusion stage is unfinished, export its EMA weights (the better model)."""
        if blob and "ema" in blob and blob["state"]["stage"] in ("image", "video"):
            params = list(self.c.unet.parameters()) + list(self.c.text_encoder.parameters())
            with torch.no_grad():
                for p, e in zip(params, blob["ema"]):
                    p.copy_(e)

    def run(self, minutes: float, extend: tuple[str, int] | None = None, image_every: int = 0,
            argv: list[str] | None = None, direction_aux: float = 0.0, video_t_min: int = 0,
            high_noise_weight: float = 0.0, direction_contrast: float = 0.0, video_steps: int = 0,
            v_zero_snr: bool = False, position_aux: float = 0.0, terminal_rows: int = 0, still_rows: int = 0,
            opening_frames: int = 0, text_pretrain: int = 0, freeze_text: bool = False,
            with_still: bool = False) -> None:
        deadline = time.time() + minutes * 60
        blob = self.load()
        if extend:
            stage, steps = extend
            if self.state.get("sitting") and self.state["stage"] != "done" and blob and "ema" in blob:
                # Cutting an unfinished extension short: its EMA weights are where it got to.
                self.ema_weights_into_model(blob)
                self.log(f"sitting {self.state['sitting']} cut short at {self.state['stage']} step {self.state['step']}")
                self.state = {"stage": "done", "step": 0, "sitting": self.state["sitting"], "cut_short": True}
                self.save()
            if self.state["stage"] != "done":
                raise SystemExit(f"--extend-{stage}: the run in {self.work} is at stage {self.state['stage']}; "
                                 "finish it first (run again without --extend-...)")
            recipe = {"image_every": image_every, "direction_aux": direction_aux, "video_t_min": video_t_min,
                      "high_noise_weight": high_noise_weight, "direction_contrast": direction_contrast,
                      "image_captions": "no-direction", "position_aux": position_aux}
            if terminal_rows:
                recipe["terminal_rows"] = terminal_rows
            if still_rows:
                recipe["still_rows"] = still_rows
            if v_zero_snr and stage in ("video", "image"):
                # The objective stays with the weights: later sittings keep it (the checkpoint
                # and the exported scheduler config record it).
                self.c = dataclasses.replace(self.c, scheduler_config={**model_config.SCHEDULER_CONFIG,
                                                                       **model_config.V_ZERO_SNR})
                recipe["objective"] = "v_prediction, zero terminal SNR"
            self.state = {"stage": stage, "step": 0, "total": steps, "sitting": len(self.history) + 1,
                          **(recipe if stage in ("video", "image") else {})}
            if stage == "terminal" and opening_frames:
                self.state["opening_frames"] = opening_frames
            if stage == "terminal" and with_still:
                self.state["with_still"] = True
            if freeze_text or text_pretrain:
                # Read by _start_training in every loop, so it is set once for any stage.
                self.state["freeze_text"] = True
            self.cfg = dict(blob["cfg"])
            if stage == "image":
                # --restart-diffusion: new UNet and text encoder from random weights, on the
                # finished run's VAE and cached latents (the slow, settled part).
                steps_video = video_steps if video_steps else self.cfg["video_steps"]
                self.state["video_total"] = int(steps_video)
                fresh = self._fresh_components()
                self.c.unet.load_state_dict(fresh.unet.state_dict())
                self.c.text_encoder.load_state_dict(fresh.text_encoder.state_dict())
                self.log(f"sitting {self.state['sitting']}: UNet and text encoder restarted from random weights")
                if text_pretrain:
                    self.state["text_pretrain"] = int(text_pretrain)
                    self.pretrain_text(int(text_pretrain))
            blob = None  # a fresh optimizer and EMA, started from the finished weights
        if self.state["stage"] != "done":
            self.history.append({"argv": list(argv or []), "from": dict(self.state), "to": dict(self.state),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        self.log(f"resuming at stage {self.state['stage']} step {self.state['step']}" if self.ckpt.exists() else "starting")
        while self.state["stage"] != "done" and not self._out_of_time(deadline):
            stage = self.state["stage"]
            if stage == "vae":
                self.run_vae(blob, deadline)
            elif stage == "data":
                self.run_data()
            elif stage == "decoder":
                self.run_decoder(blob, deadline)
            elif stage == "terminal":
                self.run_terminal(blob, deadline)
            else:
                self.run_diffusion(stage, blob, deadline)
            blob = None if self.state["stage"] != stage else blob
        self.log(f"stopped at stage {self.state['stage']} step {self.state['step']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("runs/toy"), help="checkpoint folder (resumed if present)")
    ap.add_argument("--minutes", type=float, default=120.0, help="stop (with a checkpoint) after this long")
    ap.add_argument("--export", type=Path, help="write the model folder from the checkpoint and exit")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    ap.add_argument("--extend-video", type=int, default=0, metavar="STEPS",
                    help="train a finished model STEPS more video steps (fresh warm-up and schedule)")
    ap.add_argument("--extend-decoder", type=int, default=0, metavar="STEPS",
                    help="sharpen a finished model's VAE decoder STEPS steps (encoder and latents unchanged)")
    ap.add_argument("--extend-terminal", type=int, default=0, metavar="STEPS",
                    help="train a finished --v-zero-snr model STEPS steps at the last timestep only (pure noise), "
                         "full captions of moving clips: the caption learns which way the object goes")
    ap.add_argument("--restart-diffusion", type=int, nargs=2, default=None, metavar=("IMAGE", "VIDEO"),
                    help="keep a finished run's VAE and cached latents, restart the UNet and text encoder from "
                         "random weights and train IMAGE image then VIDEO video steps with the recipe options below")
    ap.add_argument("--direction-aux", type=float, default=0.0, metavar="W",
                    help="with --extend-video or --restart-diffusion: weight of a probe loss that keeps direction words apart in the text encoder")
    ap.add_argument("--video-t-min", type=int, default=0, metavar="T",
                    help="with --extend-video or --restart-diffusion: video batches draw timesteps from [T, 1000) (motion is set at high noise)")
    ap.add_argument("--high-noise-weight", type=float, default=0.0, metavar="W",
                    help="with --extend-video or --restart-diffusion: weigh video batches' loss by 1/SNR capped at W (an x0 loss at high noise)")
    ap.add_argument("--direction-contrast", type=float, default=0.0, metavar="W",
                    help="with --extend-video or --restart-diffusion: weight of a hinge asking a wrong direction word to predict worse at high noise")
    ap.add_argument("--position-aux", type=float, default=0.0, metavar="W",
                    help="with --extend-video or --restart-diffusion: weight of a probe loss that reads each frame's "
                         "index back from the UNet's features, so frames know where they stand in the clip")
    ap.add_argument("--terminal-rows", type=int, default=0, metavar="K",
                    help="with --v-zero-snr: the last K rows of every video batch are moving clips with full "
                         "captions at the last timestep (pure noise), so the words decide the motion from the start")
    ap.add_argument("--still-rows", type=int, default=0, metavar="K",
                    help="with --extend-video or --restart-diffusion: the first K rows of every video batch are "
                         "still clips with full captions (drawn uniformly, 1 row in 9 is still), so 'still' prompts "
                         "learn to hold the object in place. Measured: 2 took still prompts from 13%% to 100%% "
                         "staying still on the in-budget run (docs/EXPERIMENTS.md)")
    ap.add_argument("--opening-frames", type=int, default=0, metavar="N",
                    help="with --extend-terminal: every other step trains on the clips' first N frames, where the "
                         "direction is a static offset the caption can learn first (4 works; see docs/EXPERIMENTS.md)")
    ap.add_argument("--with-still", action="store_true",
                    help="with --extend-terminal: draw from all clips, still ones included (by default moving "
                         "clips only), so 'still' captions keep a motionless estimate at pure noise. Measured: 900 steps teach "
                         "the direction sign with it or without it (500 did not); it did not keep still prompts still (docs/EXPERIMENTS.md)")
    ap.add_argument("--text-pretrain", type=int, default=0, metavar="STEPS",
                    help="with --restart-diffusion: first train the fresh text encoder STEPS steps to tell the "
                         "caption's words apart (400 takes seconds), then keep it frozen for the sitting")
    ap.add_argument("--freeze-text", action="store_true",
                    help="with --restart-diffusion, --extend-video or --extend-terminal: leave the text encoder as it is (a pretrained "
                         "one keeps the direction words apart only while it is not trained along)")
    ap.add_argument("--v-zero-snr", action="store_true",
                    help="with --extend-video or --restart-diffusion: from this sitting on, train (and ship) "
                         "v-prediction on a zero-terminal-SNR schedule, so the start noise cannot choose the motion")
    ap.add_argument("--image-every", type=int, default=0, metavar="K",
                    help="with --extend-video or --restart-diffusion: every K-th step is an image batch (temporal layers bypassed)")
    for k, v in DEFAULTS.items():
        ap.add_argument(f"--{k.replace('_', '-')}", type=type(v), default=v)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = {k: getattr(args, k) for k in DEFAULTS}
    trainer = Trainer(args.work, cfg)
    if args.export:
        from ..model import save_t2v

        blob = trainer.load()
        if blob is None:
            print(f"no checkpoint in {args.work}", file=sys.stderr)
            return 2
        trainer.ema_weights_into_model(blob)
        save_t2v(trainer.c, args.export)
        meta = {"spec_version": spec.SPEC_VERSION, "trained": trainer.state, "config": blob["cfg"],
                "command": "python -m cav_core.toyworld.train_toy " + " ".join(
                    f"--{k.replace('_', '-')} {v}" for k, v in blob["cfg"].items()),
                "sittings": trainer.history}
        (args.export / "training.json").write_text(json.dumps(meta, indent=2))
        print(f"wrote {args.export} (stage {trainer.state['stage']} step {trainer.state['step']})")
        return 0

    def on_signal(signum, frame):  # checkpoint and exit cleanly on Ctrl-C / kill
        trainer.stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if sum(map(bool, (args.extend_video, args.extend_decoder, args.extend_terminal, args.restart_diffusion))) > 1:
        ap.error("--extend-video, --extend-decoder, --extend-terminal and --restart-diffusion are separate sittings; give one")
    if args.v_zero_snr and not (args.extend_video or args.restart_diffusion):
        ap.error("--v-zero-snr changes the objective of a sitting: give it with --extend-video or --restart-diffusion")
    if args.terminal_rows and not (args.extend_video or args.restart_diffusion):
        ap.error("--terminal-rows is part of a video sitting's recipe: give it with --extend-video or --restart-diffusion")
    if not 0 <= args.terminal_rows <= args.video_batch:
        ap.error(f"--terminal-rows {args.terminal_rows}: give 0 to {args.video_batch} (the rows of a video batch, --video-batch)")
    if args.still_rows and not (args.extend_video or args.restart_diffusion):
        ap.error("--still-rows is part of a video sitting's recipe: give it with --extend-video or --restart-diffusion")
    if not 0 <= args.still_rows + args.terminal_rows <= args.video_batch:
        ap.error(f"--still-rows {args.still_rows} with --terminal-rows {args.terminal_rows}: together give 0 to "
                 f"{args.video_batch} (the rows of a video batch, --video-batch)")
    if args.text_pretrain and not args.restart_diffusion:
        ap.error("--text-pretrain trains a fresh text encoder: give it with --restart-diffusion")
    if args.freeze_text and not (args.extend_video or args.extend_terminal or args.restart_diffusion):
        ap.error("--freeze-text is part of a sitting: give it with --extend-video, --extend-terminal or --restart-diffusion")
    if args.direction_aux and (args.freeze_text or args.text_pretrain):
        ap.error("--direction-aux trains the text encoder, which --freeze-text/--text-pretrain keep frozen: drop one")
    if args.with_still and not args.extend_terminal:
        ap.error("--with-still is part of a terminal sitting: give it with --extend-terminal")
    if args.opening_frames and not args.extend_terminal:
        ap.error("--opening-frames is part of a terminal sitting: give it with --extend-terminal")
    if not 0 <= args.opening_frames < spec.NUM_FRAMES:
        ap.error(f"--opening-frames {args.opening_frames}: give 1 to {spec.NUM_FRAMES - 1} (fewer than a clip's "
                 f"{spec.NUM_FRAMES} frames), or 0 for whole clips only")
    extend = ("video", args.extend_video) if args.extend_video else ("decoder", args.extend_decoder) if args.extend_decoder \
        else ("terminal", args.extend_terminal) if args.extend_terminal \
        else ("image", args.restart_diffusion[0]) if args.restart_diffusion else None
    trainer.run(args.minutes, extend=extend, image_every=args.image_every, direction_aux=args.direction_aux,
                video_t_min=args.video_t_min, high_noise_weight=args.high_noise_weight,
                direction_contrast=args.direction_contrast, v_zero_snr=args.v_zero_snr,
                position_aux=args.position_aux, terminal_rows=args.terminal_rows, still_rows=args.still_rows, opening_frames=args.opening_frames,
                text_pretrain=args.text_pretrain, freeze_text=args.freeze_text, with_still=args.with_still,
                video_steps=args.restart_diffusion[1] if args.restart_diffusion else 0, argv=list(argv if argv is not None else sys.argv[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
