"""The Trainer: the model being trained, its checkpoint (every sitting recorded), and the
run that opens a sitting and goes through the stages until done or out of time."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

from typing import TYPE_CHECKING

import torch

from cav_core.toyworld import model_config

from .diffusion import run_diffusion
from .recipe import REMOVED_OPTIONS
from .stages import pretrain_text, run_data, run_decoder, run_terminal, run_vae

if TYPE_CHECKING:
    from diffusers import DDPMScheduler

    from cav_core.model import T2VComponents


class Trainer:
    def __init__(self, work: Path, cfg: dict):
        self.work, self.cfg = work, cfg
        work.mkdir(parents=True, exist_ok=True)
        self.c = self.fresh_components()
        self.state: dict = {"stage": "vae", "step": 0}
        self.history: list[dict] = []
        self.heads: dict[str, torch.nn.Module | None] = {}  # training-only probes, saved with the optimizer
        self.stop = False

    @property
    def noise_schedule(self) -> DDPMScheduler:
        """The diffusers scheduler the model trains for (and ships with): its alphas and target."""
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_config({k: v for k, v in self.c.scheduler_config.items() if not k.startswith("_")})

    @property
    def pure_noise_at_last_step(self) -> bool:
        """Whether the model trains v-prediction on a zero-terminal-SNR schedule (--v-zero-snr),
        the only objective whose last timestep is pure noise with a well-defined target."""
        cfg = self.c.scheduler_config
        return cfg.get("prediction_type") == "v_prediction" and bool(cfg.get("rescale_betas_zero_snr"))

    def fresh_components(self) -> T2VComponents:
        """The toy architecture with the recipe seed's random weights."""
        from cav_core.model import build_t2v

        tok = model_config.build_tokenizer()
        return build_t2v(model_config.UNET_CONFIG, model_config.text_config(tok), model_config.VAE_CONFIG,
                         model_config.SCHEDULER_CONFIG, tok, seed=self.cfg["seed"], name="cav-toy-t2v").base

    # ------------------------------------------------------------------ checkpoints
    @property
    def ckpt(self) -> Path:
        return self.work / "checkpoint.pt"

    @property
    def data_path(self) -> Path:
        return self.work / "latents.pt"

    def save(self, opt: torch.optim.Optimizer | None = None, ema: list[torch.Tensor] | None = None) -> None:
        if self.history:
            self.history[-1]["to"] = dict(self.state)
        blob = {"state": dict(self.state), "cfg": dict(self.cfg),
                "unet": self.c.unet.state_dict(), "text": self.c.text_encoder.state_dict(),
                "vae": self.c.vae.state_dict(), "scaling_factor": float(self.c.vae.config.scaling_factor),
                "scheduler": json.dumps(dict(self.c.scheduler_config)),
                "history": json.dumps(self.history)}
        if opt is not None:
            blob["opt"] = opt.state_dict()
            blob.update({name: head.state_dict() for name, head in self.heads.items() if head is not None})
        if ema is not None:
            blob["ema"] = [p.detach().clone() for p in ema]
        tmp = self.ckpt.with_suffix(".tmp")
        torch.save(blob, tmp)
        os.replace(tmp, self.ckpt)

    def load(self) -> dict | None:
        if not self.ckpt.exists():
            return None
        blob = torch.load(self.ckpt, weights_only=True)
        self.state = blob["state"]
        removed = [k for k in REMOVED_OPTIONS if self.state.get(k)] if self.state["stage"] != "done" else []
        if removed:
            raise SystemExit(f"{self.ckpt}: its unfinished sitting uses --{removed[0].replace('_', '-')}, which this "
                             "trainer no longer has; finish the sitting with the trainer that started it "
                             "(git log -- cav_core/toyworld/train_toy.py)")
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

    def ema_weights_into_model(self, blob: dict | None) -> None:
        """While a diffusion stage is unfinished, export its EMA weights (the better model)."""
        if blob and "ema" in blob and blob["state"]["stage"] in ("image", "video"):
            params = list(self.c.unet.parameters()) + list(self.c.text_encoder.parameters())
            with torch.no_grad():
                for p, e in zip(params, blob["ema"]):
                    p.copy_(e)

    def log(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        with open(self.work / "train.log", "a") as f:
            f.write(line + "\n")

    # ------------------------------------------------------------------ shared by the stages
    def out_of_time(self, deadline: float) -> bool:
        return self.stop or time.time() > deadline

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token states (what the UNet cross-attends to) and the pooled EOS state."""
        tok = self.c.tokenizer(prompts, padding="max_length", max_length=self.c.tokenizer.model_max_length,
                               truncation=True, return_tensors="pt")
        out = self.c.text_encoder(tok.input_ids)
        return out[0], out[1]

    def start_training(self) -> list[torch.nn.Parameter]:
        """Put the UNet, and the text encoder unless this sitting freezes it, in training mode;
        returns what the sitting's optimizer trains."""
        frozen_text = bool(self.state.get("freeze_text"))
        self.c.unet.train().requires_grad_(True)
        self.c.text_encoder.train(not frozen_text).requires_grad_(not frozen_text)
        return list(self.c.unet.parameters()) + ([] if frozen_text else list(self.c.text_encoder.parameters()))

    def stop_training(self) -> None:
        self.c.unet.eval().requires_grad_(False)
        self.c.text_encoder.eval().requires_grad_(False)

    def next_state(self, stage: str) -> dict:
        """The state at the start of ``stage``; a sitting keeps its number and recipe (a
        restarted one goes on from its image stage to its video stage)."""
        keep = {k: v for k, v in self.state.items() if k not in ("stage", "step", "total", "cut_short")}
        if stage == "video" and "video_total" in keep:
            keep["total"] = keep["video_total"]
        return {"stage": stage, "step": 0, **keep}

    def end_sitting(self, stage: str, total: int, opt: torch.optim.Optimizer) -> None:
        """A finished decoder or terminal stage leaves the run "done"; one cut short keeps its
        optimizer in the checkpoint, to resume where it stopped."""
        if self.state["step"] >= total:
            self.state = self.next_state("done")
            self.log(f"{stage} done")
            self.save()
        else:
            self.save(opt)

    # ------------------------------------------------------------------ sittings
    def _open_sitting(self, blob: dict | None, stage: str, steps: int, *,
                      image_every: int, high_noise_weight: float, position_aux: float, still_rows: int,
                      v_zero_snr: bool, opening_frames: int, text_pretrain: int, freeze_text: bool,
                      video_steps: int) -> None:
        """Start an extension sitting ("video", "terminal") or a restarted one ("image": a new
        UNet and text encoder) on a finished run; it is recorded in the checkpoint's history."""
        if self.state.get("sitting") and self.state["stage"] != "done" and blob and "ema" in blob:
            # Cutting an unfinished extension short: its EMA weights are where it got to.
            self.ema_weights_into_model(blob)
            self.log(f"sitting {self.state['sitting']} cut short at {self.state['stage']} step {self.state['step']}")
            self.state = {"stage": "done", "step": 0, "sitting": self.state["sitting"], "cut_short": True}
            self.save()
        if self.state["stage"] != "done":
            raise SystemExit(f"--extend-{stage}: the run in {self.work} is at stage {self.state['stage']}; "
                             "finish it first (run again without --extend-...)")
        recipe = {"image_every": image_every, "high_noise_weight": high_noise_weight,
                  "image_captions": "no-direction", "position_aux": position_aux}
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
        if freeze_text or text_pretrain:
            # Read by start_training in every stage, so it is set once for any stage.
            self.state["freeze_text"] = True
        if blob is not None:
            self.cfg = dict(blob["cfg"])
        if stage == "image":
            # --restart-diffusion: new UNet and text encoder from random weights, on the
            # finished run's VAE and cached latents (the slow, settled part).
            self.state["video_total"] = int(video_steps if video_steps else self.cfg["video_steps"])
            fresh = self.fresh_components()
            self.c.unet.load_state_dict(fresh.unet.state_dict())
            self.c.text_encoder.load_state_dict(fresh.text_encoder.state_dict())
            self.log(f"sitting {self.state['sitting']}: UNet and text encoder restarted from random weights")
            if text_pretrain:
                self.state["text_pretrain"] = int(text_pretrain)
                self.pretrain_text(int(text_pretrain))

    def pretrain_text(self, steps: int) -> list[float]:
        return pretrain_text(self, steps)

    def run(self, minutes: float, extend: tuple[str, int] | None = None, argv: list[str] | None = None, *,
            image_every: int = 0, high_noise_weight: float = 0.0, position_aux: float = 0.0, still_rows: int = 0,
            v_zero_snr: bool = False, opening_frames: int = 0, text_pretrain: int = 0, freeze_text: bool = False,
            video_steps: int = 0) -> None:
        """Train for at most ``minutes``: go on with the run in ``work``, or first open the
        sitting ``extend`` = (stage, steps) with the recipe options given."""
        deadline = time.time() + minutes * 60
        blob = self.load()
        if extend:
            self._open_sitting(blob, *extend, image_every=image_every, high_noise_weight=high_noise_weight,
                               position_aux=position_aux, still_rows=still_rows, v_zero_snr=v_zero_snr,
                               opening_frames=opening_frames, text_pretrain=text_pretrain, freeze_text=freeze_text,
                               video_steps=video_steps)
            blob = None  # a fresh optimizer and EMA, started from the finished weights
        if self.state["stage"] != "done":
            self.history.append({"argv": list(argv or []), "from": dict(self.state), "to": dict(self.state),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        self.log(f"resuming at stage {self.state['stage']} step {self.state['step']}" if self.ckpt.exists() else "starting")
        while self.state["stage"] != "done" and not self.out_of_time(deadline):
            stage = self.state["stage"]
            if stage == "vae":
                run_vae(self, blob, deadline)
            elif stage == "data":
                run_data(self)
            elif stage in ("decoder", "terminal"):
                (run_decoder if stage == "decoder" else run_terminal)(self, blob, deadline)
            else:
                run_diffusion(self, stage, blob, deadline)
            blob = None if self.state["stage"] != stage else blob
        self.log(f"stopped at stage {self.state['stage']} step {self.state['step']}")
