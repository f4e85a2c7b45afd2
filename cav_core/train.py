"""The one training loop, and the two stages of Customize-A-Video built on it.

Stage 1, :func:`train_appearance_absorber`: temporal layers bypassed, the reference
frames as an unordered set of single images (plus random patch crops), appearance
caption; trains an S-LoRA, textual-inversion tokens, or both.
Stage 2, :func:`train_temporal_lora`: the absorber merged in and frozen, temporal layers
active, the whole clip in order, full caption; trains a T-LoRA on temporal attention.

Both call :func:`run_training` with what trains, which latents, which text and whether
temporal layers are bypassed. Latents and (frozen) text embeddings are computed once per
run; only trainable textual-inversion rows send the text encoder through a step.
Randomness of step k derives from (seed, k) alone, so a resumed run draws exactly what
an uninterrupted one draws, and checkpoints (safetensors, nothing pickled) hold the
trainable tensors and AdamW state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import memory
from .adapter_files import AdapterFile
from .adapters import add_trainable_lora, check_fits, extract_lora
from .codec import decode_latents, encode_frames, text_embeddings
from .defaults import profile_for
from .device_guard import check_training_memory
from .errors import AdapterError, CavError, InputError, OutputError
from .fileutil import atomic_write, check_output_path, clean_stale_temps, os_error_message
from .gate import check_min_timestep
from .handle import ModelHandle, with_adapter
from .progress import Eta
from .rebackground import rebackground_skip_reason, rebackground_views
from .recolor import hue_rotated_views, recolor_skip_reason
from .sample import ProgressFn, check_seed, denoise, latent_size, seed_noise
from .snapshots import Snapshot, SnapshotDest, Snapshots, check_snapshot_every
from .textual_inversion import (TokenEmbeddings, default_init_word, encode_text, init_embeddings, placeholder_names,
                                tokenize, with_placeholders)


class TrainingError(CavError):
    """Training could not go on (e.g. the loss became non-finite)."""


# Every default of both stages is per model family, in cav_core/defaults.py.
CHECKPOINT_FILE = "checkpoint.safetensors"
#: Written into every checkpoint folder the tool creates. Only a folder holding it is ever
#: cleaned up, and then only the files the tool writes there (CHECKPOINT_FILE, its temp
#: files, the marker); a folder of the user's is never touched (docs/BAD_INPUTS.md).
CHECKPOINT_MARKER = ".cav-checkpoint"


# --------------------------------------------------------------------------- the loop

@dataclass
class TrainJob:
    """What one run trains and on what. ``batch(step, generator)`` returns ``(x0, cond)``."""

    stage: str
    unet: nn.Module
    param_groups: list[dict[str, Any]]
    batch: Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
    steps: int
    noise_config: dict[str, Any]
    seed: int = 0
    fingerprint: str = ""
    progress: ProgressFn | None = None
    checkpoint_dir: Path | None = None
    checkpoint_every: int | None = None  # None: the model's default (cav_core/defaults.py)
    resume: bool = False
    validate: Callable[[], torch.Tensor] | None = None
    validate_every: int = 0
    grad_checkpointing: bool | None = None  # None: on CUDA only
    min_timestep: int = 0  # train only on noise levels from here up (where layout and motion form)
    losses: list[float] = field(default_factory=list)
    weight_decay: float | None = None  # None: the model's default (cav_core/defaults.py)
    snapshots: Snapshots | None = None  # saves the adapter every N steps (cav_core/snapshots.py)
    ad_loss: float = 0.0  # weight of the appearance-debiased term (:func:`diffusion_loss`); 0: plain loss
    #: Another loss of the same step, added before the backward pass: ``extra_loss(step, generator)``
    #: after the main forward (the MotionDirector baseline's spatial path, cav_core/motiondirector.py).
    extra_loss: Callable[[int, torch.Generator], torch.Tensor] | None = None

    def __post_init__(self) -> None:
        d = profile_for(getattr(self.unet, "config", {}))
        self.checkpoint_every = int(d.resolve("train.checkpoint_every", self.checkpoint_every))
        self.weight_decay = float(d.resolve("train.weight_decay", self.weight_decay))


def _step_seed(seed: int, step: int) -> int:
    return (int(seed) * 1_000_003 + int(step)) % 2**63


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(_step_seed(seed, step))


def _seed_step_dropout(seed: int, step: int) -> None:
    """Seed the global RNG for one step: the UNet3D's temporal convolutions keep diffusers'
    dropout (p = 0.1) in training, and it draws from the global RNG, so without this the same
    seed trained a different LoRA each run (and a resumed run was not the run it continued).
    Mixed so that the masks do not replay the step generator's stream."""
    torch.manual_seed(_step_seed(seed, step) ^ 0x5DEECE66D)


@contextlib.contextmanager
def _checkpointed_blocks(unet: nn.Module, enabled: bool) -> Iterator[None]:
    """Activation checkpointing per UNet block (UNet3DConditionModel refuses diffusers' own switch)."""
    from torch.utils.checkpoint import checkpoint

    blocks = list(unet.down_blocks) + [unet.mid_block] + list(unet.up_blocks) if enabled else []
    for b in blocks:
        orig = b.forward
        b.forward = (lambda orig: lambda *a, **k: checkpoint(orig, *a, use_reentrant=False, **k))(orig)
    try:
        yield
    finally:
        for b in blocks:
            del b.forward


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed the global RNG for a block (LoRA initialisation) without disturbing the caller's."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def _trainable(job: TrainJob) -> list[torch.Tensor]:
    return [p for g in job.param_groups for p in g["params"]]


def _save_checkpoint(job: TrainJob, opt: torch.optim.Optimizer, step: int) -> None:
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for i, p in enumerate(_trainable(job)):
        tensors[f"param.{i}"] = p.detach().float().cpu().contiguous()
        for k, v in opt.state.get(p, {}).items():
            tensors[f"opt.{i}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    meta = {"step": str(step), "fingerprint": job.fingerprint, "stage": job.stage,
            "losses": json.dumps(job.losses)}
    make_checkpoint_dir(job.checkpoint_dir)
    atomic_write(job.checkpoint_dir / CHECKPOINT_FILE, lambda tmp: save_file(tensors, str(tmp), metadata=meta),
                 overwrite=True)


# --------------------------------------------------------------------------- checkpoint folders

def default_checkpoint_dir(out: str | os.PathLike) -> Path:
    """The automatic checkpoint folder of an output file: ``OUT.checkpoint`` next to it."""
    o = Path(out)
    return o.with_name(o.stem + ".checkpoint")


def is_tool_checkpoint_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a checkpoint folder this tool made (it holds the marker)."""
    return (Path(path) / CHECKPOINT_MARKER).is_file()


def make_checkpoint_dir(path: str | os.PathLike) -> bool:
    """Create the checkpoint folder with its marker, in one step (a folder of that name is
    either absent or complete and marked, even for a second process looking at the same
    moment); True if this call made it. An existing folder is left as it is."""
    p = Path(path)
    if p.is_dir():
        return False
    tmp = p.with_name(f".{p.name}.cav{os.getpid()}-new")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / CHECKPOINT_MARKER).write_text(json.dumps({"made_by": "customize-a-video", "files": [CHECKPOINT_FILE]}))
        try:
            os.rename(tmp, p)
            return True
        except OSError:
            if p.is_dir():  # another run made it a moment ago
                return False
            raise
    except OSError as e:
        raise OutputError(os_error_message(e, p)) from None
    finally:
        if tmp.exists():
            (tmp / CHECKPOINT_MARKER).unlink(missing_ok=True)
            tmp.rmdir()


def drop_checkpoint(path: str | os.PathLike) -> bool:
    """Remove a finished run's checkpoint folder: only if this tool made it (marker), and only
    the files the tool writes there; a folder still holding other files is kept. True if
    the folder is gone."""
    p = Path(path)
    if not is_tool_checkpoint_dir(p):
        return False
    (p / CHECKPOINT_FILE).unlink(missing_ok=True)
    clean_stale_temps(p / CHECKPOINT_FILE)
    (p / CHECKPOINT_MARKER).unlink(missing_ok=True)
    try:
        p.rmdir()
    except OSError:  # the user put files of theirs in it: keep them, and the folder
        return False
    return True


class CheckpointLock:
    """A checkpoint folder held by this process for one run (see :func:`claim_checkpoint_dir`)."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path, self._fd = path, fd

    def release(self) -> None:
        """Let go; a folder that got no checkpoint (the run failed before it) is removed."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if is_tool_checkpoint_dir(self.path) and not (self.path / CHECKPOINT_FILE).exists():
            drop_checkpoint(self.path)


def claim_checkpoint_dir(path: str | os.PathLike, default: bool) -> CheckpointLock | None:
    """Take the checkpoint folder ``path`` for one run; None while another run holds it.

    ``default``: the automatic ``OUT.checkpoint`` folder, which must be absent or made by
    this tool: a user's folder of that name is refused (:class:`InputError`), never
    used or cleaned up. A folder the user names (``--checkpoint-dir``) may be theirs."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"checkpoint folder {p} exists and is not a folder; pass another --checkpoint-dir")
    if default and p.exists() and not is_tool_checkpoint_dir(p):
        raise InputError(f"{p} already exists and was not made by this tool, so it is left untouched and not "
                         f"used for checkpoints; move it away, or pass --checkpoint-dir to keep checkpoints "
                         f"elsewhere (or choose another --out)")
    check_output_path(p / CHECKPOINT_FILE, 0, "checkpoint folder")
    if p.exists() and not is_tool_checkpoint_dir(p):
        return CheckpointLock(p, None)  # the user's own folder: no marker is put in it
    make_checkpoint_dir(p)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, runs on one output must not overlap
        return CheckpointLock(p, None)
    fd = os.open(p / CHECKPOINT_MARKER, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    clean_stale_temps(p / CHECKPOINT_FILE)  # left by a run killed while saving
    return CheckpointLock(p, fd)


def _read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as e:  # safetensors raises several types for damaged files
        raise InputError(f"checkpoint {path} is damaged ({type(e).__name__}); delete it to start over") from None


def _restore_checkpoint(job: TrainJob, opt: torch.optim.Optimizer) -> int:
    """Load the checkpoint of this very run, if any; returns the step to continue from."""
    path = job.checkpoint_dir / CHECKPOINT_FILE if job.checkpoint_dir else None
    if path is None or not path.exists():
        if job.resume:
            where = f"in {job.checkpoint_dir}" if job.checkpoint_dir else "(no checkpoint folder was given)"
            warnings.warn(f"--resume: there is no checkpoint {where}; starting fresh", stacklevel=3)
        return 0
    tensors, meta = _read_checkpoint(path)
    if meta.get("fingerprint") != job.fingerprint:
        raise InputError(f"checkpoint folder {job.checkpoint_dir} holds a different training run "
                         "(other frames, caption, model or settings); choose another folder")
    if not job.resume:
        raise InputError(f"checkpoint folder {job.checkpoint_dir} already holds this run at step "
                         f"{meta.get('step')}; resume it (--resume) or choose another folder")
    params = _trainable(job)
    with torch.no_grad():
        for i, p in enumerate(params):
            p.copy_(tensors[f"param.{i}"].to(p.device, p.dtype))
            state = {k.split(".", 2)[2]: v.to(p.device) for k, v in tensors.items() if k.startswith(f"opt.{i}.")}
            if state:
                if "step" in state:
                    state["step"] = state["step"].cpu()  # AdamW keeps its step count on the CPU
                opt.state[p] = state
    job.losses[:] = json.loads(meta.get("losses", "[]"))
    return int(meta["step"])


def noise_schedule(config: dict[str, Any]):
    """The training noise schedule (diffusers DDPMScheduler) of a model's scheduler config."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config({k: v for k, v in config.items() if not k.startswith("_")})


def noised(noise_sched: Any, x0: torch.Tensor, g: torch.Generator,
           min_timestep: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One training draw: ``(x_t, t, target)`` for clean latents ``x0``; noise, then one
    timestep per sample from ``min_timestep`` up, both from ``g``; the target is the noise
    or the velocity, as the model predicts."""
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(int(min_timestep), noise_sched.config.num_train_timesteps, (x0.shape[0],), generator=g)
    xt = noise_sched.add_noise(x0, noise, t)
    epsilon = noise_sched.config.prediction_type == "epsilon"
    return xt, t, noise if epsilon else noise_sched.get_velocity(x0, noise, t)


def run_training(job: TrainJob) -> list[float]:
    """Train ``job``'s parameters for ``job.steps`` steps (continuing a checkpoint if asked).

    ``progress(step, total, info)`` is called every step (info: loss, eta_s, stage and,
    at validation steps, preview frames); if it raises (a cancel), a checkpoint of the
    steps done so far is written before the exception goes on."""
    noise_sched = noise_schedule(job.noise_config)
    opt = torch.optim.AdamW(job.param_groups, weight_decay=job.weight_decay)
    params = _trainable(job)
    start = _restore_checkpoint(job, opt)
    unet = job.unet
    dev = next(unet.parameters()).device
    use_ckpt = job.grad_checkpointing if job.grad_checkpointing is not None else dev.type == "cuda"
    amp_dtype = next(unet.parameters()).dtype
    autocast = (torch.autocast(dev.type, dtype=amp_dtype) if dev.type == "cuda" and amp_dtype != torch.float32
                else contextlib.nullcontext())
    step = start
    eta, done_here = Eta(), 0
    saved = start if start > 0 else None  # step of this run's checkpoint on disk
    unet.train()
    try:
        cuda_ids = [torch.cuda.current_device() if dev.index is None else dev.index] if dev.type == "cuda" else []
        with _checkpointed_blocks(unet, use_ckpt), torch.random.fork_rng(devices=cuda_ids):
            for step in range(start, job.steps):
                _seed_step_dropout(job.seed, step)
                g = _step_generator(job.seed, step)
                x0, cond = job.batch(step, g)
                xt, t, target = noised(noise_sched, x0, g, job.min_timestep)
                with autocast:
                    pred = unet(xt.to(dev, amp_dtype), t.to(dev), encoder_hidden_states=cond.to(dev, amp_dtype)).sample
                loss = diffusion_loss(pred.float(), target.to(dev), job.ad_loss, g)
                if job.extra_loss is not None:
                    with autocast:
                        loss = loss + job.extra_loss(step, g)
                if not torch.isfinite(loss):
                    broken = _broken_inputs(unet, params, x0, cond)
                    if broken:
                        raise TrainingError(f"{job.stage}: the loss became {loss.item()} at step {step + 1}, "
                                            f"training stopped: {broken}; {_kept(job, saved)}")
                    raise TrainingError(f"{job.stage}: the loss became {loss.item()} at step {step + 1}, training "
                                        f"stopped; {_kept(job, saved)}. Lower the learning rate and train again "
                                        f"(other settings need another checkpoint folder)")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                job.losses.append(round(loss.item(), 6))
                done_here += 1
                # Before the checkpoint of the same step: a run killed between the two finds the
                # snapshot again when it resumes (cav_core/snapshots.py), none is skipped.
                shot = _take_snapshot(job, step + 1, params)
                if job.checkpoint_dir and (step + 1) % job.checkpoint_every == 0 and step + 1 < job.steps \
                        and _finite(params):  # never replace a good checkpoint by diverged weights
                    _save_checkpoint(job, opt, step + 1)
                    saved = step + 1
                info: dict[str, Any] = {"stage": job.stage, "loss": job.losses[-1],
                                        "eta_s": eta.seconds_left(done_here, job.steps - step - 1)}
                if shot is not None:
                    info["preview"] = shot  # the snapshot's validation sample: not drawn twice
                elif job.validate is not None and job.validate_every and (step + 1) % job.validate_every == 0:
                    unet.eval()
                    info["preview"] = job.validate()
                    unet.train()
                if job.progress is not None:
                    job.progress(step + 1, job.steps, info)
            step = job.steps
    except TrainingError:
        raise  # diverged: the last good checkpoint stays as it is
    except OutputError as e:  # a checkpoint could not be written (full disk...): the last good one stays
        raise OutputError(f"{e}; {_kept(job, saved)}") from None
    except BaseException as e:
        # A cancel (or Ctrl-C) keeps the steps already done: save them if this step finished.
        if job.checkpoint_dir and 0 < len(job.losses) and step > start and _finite(params):
            saved = start + done_here
            _save_checkpoint(job, opt, saved)
        if isinstance(e, torch.cuda.OutOfMemoryError):
            raise TrainingError(f"{job.stage}: out of GPU memory at step {step + 1}; {_kept(job, saved)}. Use fewer "
                                f"frames (or a smaller batch), close other programs using the GPU, and train "
                                f"again") from e
        raise
    finally:
        unet.eval()
    if not _finite(params):
        raise TrainingError(f"{job.stage}: the trained weights became NaN or infinite in the last step; "
                            f"{_kept(job, saved)}. Lower the learning rate and train again")
    if job.checkpoint_dir and job.steps > start:
        try:
            _save_checkpoint(job, opt, job.steps)
        except OutputError as e:  # the trained weights are still in memory: the caller may save them
            raise OutputError(f"{e}; {_kept(job, saved)}") from None
    return job.losses


def _take_snapshot(job: TrainJob, step: int, params: list[torch.Tensor]) -> torch.Tensor | None:
    """The snapshot hook at ``step``, if one is due (never of diverged weights); returns its
    validation sample, if it drew one."""
    if job.snapshots is None or not job.snapshots.due(step) or not _finite(params):
        return None
    job.unet.eval()
    try:
        return job.snapshots(step)
    finally:
        job.unet.train()


def appearance_debiased_loss(pred: torch.Tensor, target: torch.Tensor, generator: torch.Generator,
                             beta: float = 1.0) -> torch.Tensor:
    """MSE of prediction and target after ``beta`` times one anchor frame (drawn from
    ``generator``) is subtracted from every frame, and the rest scaled by sqrt(1 + beta^2).

    What all frames share (the reference's appearance) cancels against the anchor, so this
    loss sees the differences between frames, i.e. the motion: MotionDirector's
    appearance-debiased temporal loss (docs/DESIGN.md, "Peers"). ``pred``/``target``:
    (B, C, F, h, w)."""
    anchor = int(torch.randint(0, pred.shape[2], (1,), generator=generator))
    scale = math.sqrt(1.0 + beta * beta)
    p = scale * pred - beta * pred[:, :, anchor:anchor + 1]
    q = scale * target - beta * target[:, :, anchor:anchor + 1]
    return torch.nn.functional.mse_loss(p, q)


def diffusion_loss(pred: torch.Tensor, target: torch.Tensor, ad_loss: float = 0.0,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """The training loss of one step: MSE, plus ``ad_loss`` times
    :func:`appearance_debiased_loss`. At weight 0 it is the plain MSE itself, computed the
    same way and drawing nothing from ``generator`` (a run is bit-identical to one without
    the option)."""
    loss = torch.nn.functional.mse_loss(pred, target)
    if ad_loss:
        if generator is None:
            raise ValueError("the appearance-debiased loss draws its anchor frame from a generator; pass one")
        loss = loss + float(ad_loss) * appearance_debiased_loss(pred, target, generator)
    return loss


def _broken_inputs(unet: nn.Module, trainable: list[torch.Tensor], x0: torch.Tensor, cond: torch.Tensor) -> str:
    """Why a loss is non-finite when a lower learning rate cannot help: the model's own
    weights, or the latents / text embeddings it is given, are not finite ("" if they are)."""
    ids = {id(p) for p in trainable}
    for name, p in unet.named_parameters():
        if id(p) not in ids and not bool(torch.isfinite(p).all()):
            return (f"the model itself is broken: its weight {name} holds NaN or infinite values (before any "
                    f"training), so no learning rate can help; load an intact copy of the model (download it again)")
    if not bool(torch.isfinite(x0).all()):
        return ("the training latents hold NaN or infinite values: the model's VAE is broken (or the frames are); "
                "load an intact copy of the model")
    if not bool(torch.isfinite(cond).all()):
        return ("the text embeddings hold NaN or infinite values: the model's text encoder (or a textual-inversion "
                "absorber) is broken; load an intact copy")
    return ""


def _finite(params: list[torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in params)


def _kept(job: TrainJob, saved: int | None) -> str:
    """What is left of a stopped run, for its error message."""
    if job.checkpoint_dir is None:
        return "no checkpoint folder was given, so nothing was kept"
    if saved is None:
        return (f"no checkpoint was written yet (the first comes at step {job.checkpoint_every}), "
                f"{job.checkpoint_dir} holds nothing of this run")
    return f"the last good checkpoint (step {saved}) is kept in {job.checkpoint_dir}"


# --------------------------------------------------------------------------- inputs

def _prepare_frames(handle: ModelHandle, frames: torch.Tensor, height: int | None = None,
                    width: int | None = None) -> torch.Tensor:
    """Frames fit to ``height`` x ``width`` (default: the model's native size)."""
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[-1] != 3:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise InputError(f"reference frames must be a (F,H,W,3) tensor in 0..1, got {shape}")
    if frames.shape[0] < 1:
        raise InputError("reference frames are empty")
    height, width, _, _ = latent_size(handle.base, height, width)
    if tuple(frames.shape[1:3]) != (height, width):
        from .data import fit_frames

        frames = fit_frames(frames, (height, width))
    return frames.float().clamp(0, 1)


def _check_caption(caption: str, label: str) -> str:
    if not isinstance(caption, str) or not caption.strip():
        raise InputError(f"{label} is empty: describe the reference video, e.g. 'a dog on a beach'")
    return caption.strip()


def _check_steps(steps: int) -> int:
    if not isinstance(steps, int) or not 1 <= steps <= 100_000:
        raise InputError(f"training steps must be an integer in 1..100000, got {steps!r}")
    return steps


def _check_lr(lr: float, label: str) -> float:
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or not 0 < lr <= 1:
        raise InputError(f"{label} must be in (0, 1], got {lr!r}")
    return float(lr)


def _fingerprint(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, torch.Tensor):
            h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:20]


def _check_snapshots(every: int, steps: int, dest: SnapshotDest | None) -> int:
    every = check_snapshot_every(every, steps)
    if every and dest is None:
        raise InputError("snapshot_every is set but there is no snapshot destination (snapshot_to): give the "
                         "output file the snapshots go next to")
    return every


def _train_with_snapshots(job: TrainJob, result: Callable[..., AdapterFile], every: int,
                          dest: SnapshotDest | None, run_id: str, **kw: Any) -> AdapterFile:
    """Run ``job`` with a snapshot every ``every`` steps (0: none; cav_core/snapshots.py), then
    the final adapter ``result(losses)``, whose info lists the snapshots taken."""
    if every:
        job.snapshots = Snapshots(every, job.steps, dest, lambda extra: result(job.losses, extra), run_id, **kw)
    adapter = result(run_training(job))
    if job.snapshots is not None:
        job.snapshots.finish()
        adapter.info["snapshots"] = job.snapshots.records()
    return adapter


def _snapshot_info(snapshot: dict | None) -> dict:
    """A snapshot's adapter info holds the final file's info plus this (cav_core/snapshots.py)."""
    return {"snapshot": snapshot} if snapshot is not None else {}


def _as_dir(path: str | os.PathLike | None) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"checkpoint folder {p} exists and is not a folder")
    # Checked now, made (with its marker) at the first checkpoint: a run that fails before
    # that leaves no empty folder behind.
    check_output_path(p / CHECKPOINT_FILE, 0, "checkpoint folder")
    return p


# --------------------------------------------------------------------------- stage 1

def train_appearance_absorber(handle: ModelHandle, frames: torch.Tensor, caption: str, kind: str = "both",
                              steps: int | None = None, rank: int | None = None, num_tokens: int | None = None,
                              init_word: str | None = None, crop_range: tuple[float, float] | None = None,
                              lora_lr: float | None = None, ti_lr: float | None = None, seed: int = 0,
                              progress: ProgressFn | None = None, checkpoint_dir: str | os.PathLike | None = None,
                              resume: bool = False, alpha: float | None = None,
                              batch_size: int | None = None, height: int | None = None,
                              width: int | None = None, snapshot_every: int = 0,
                              snapshot_to: SnapshotDest | None = None,
                              on_snapshot: Callable[[Snapshot], None] | None = None) -> AdapterFile:
    """Stage 1: learn the reference's appearance (S-LoRA and/or tokens) from unordered frames.

    Settings left None take the model's defaults (:mod:`cav_core.defaults`).
    ``height``/``width``: the training size (default: the model's native size); a smaller
    one trains a large model faster and in less memory.

    ``snapshot_every``: also save the absorber every that many steps and at the end, to
    ``snapshot_to`` (:mod:`cav_core.snapshots`; 0 = off); ``on_snapshot`` is told of each.
    Absorber snapshots are not sampled: with the temporal layers bypassed there is no motion
    to score."""
    from .data import random_patch_crops

    d = profile_for(handle)
    if kind not in ("lora", "ti", "both"):
        raise InputError(f"absorber kind must be 'lora', 'ti' or 'both', got {kind!r}")
    caption = _check_caption(caption, "appearance caption")
    steps = _check_steps(d.resolve("absorber.steps", steps))
    lora_lr = _check_lr(d.resolve("absorber.lora_lr", lora_lr), "LoRA learning rate")
    ti_lr = _check_lr(d.resolve("absorber.ti_lr", ti_lr), "textual-inversion learning rate")
    crop_range = tuple(d.resolve("absorber.crop_range", crop_range))
    rank = d.resolve("absorber.rank", rank)
    num_tokens = d.resolve("absorber.num_tokens", num_tokens)
    if kind != "ti" and (not isinstance(rank, int) or not 1 <= rank <= 256):
        raise InputError(f"rank must be an integer in 1..256, got {rank!r}")
    alpha = d.resolve("absorber.alpha", alpha)
    alpha = float(rank if alpha is None else alpha) if kind != "ti" else 0.0
    batch_size = int(batch_size or d["absorber.batch_size"])
    seed = check_seed(seed)
    snapshot_every = _check_snapshots(snapshot_every, steps, snapshot_to)
    frames = _prepare_frames(handle, frames, height, width)
    check_training_memory(handle.base, 1, frames.shape[1], frames.shape[2], batch_size, stage="absorber")
    c = handle.base
    if init_word is None and kind != "lora":
        init_word = default_init_word(caption)

    # The frame set, once: every frame plus random patch crops, encoded by the VAE once.
    gen = torch.Generator().manual_seed(int(seed))
    crops = random_patch_crops(frames, d["absorber.crop_pool"], crop_range=crop_range, generator=gen)
    pool = encode_frames(c, torch.cat([frames, crops])[:, None])  # (N, C, 1, h, w)

    tokens = None
    text = caption
    if kind in ("ti", "both"):
        names = placeholder_names(num_tokens)
        tokens = TokenEmbeddings(names, init_embeddings(c.text_encoder, c.tokenizer, init_word, num_tokens))
        tokens.embeddings.requires_grad_(True)
        text = with_placeholders(caption, names, init_word)
        try:
            tokenize(c.tokenizer, [text], names)
        except InputError as e:
            raise InputError(f"the caption with {num_tokens} textual-inversion token(s) in it is too long ({e}); "
                             f"use fewer tokens (--tokens, num_tokens) or shorten the caption") from None
    fingerprint = _fingerprint("absorber", c.model_id, kind, text, steps, rank, alpha, num_tokens, lora_lr, ti_lr,
                               crop_range, batch_size, seed, frames)

    fixed = None if tokens is not None else text_embeddings(handle, [text])

    def batch(step: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, pool.shape[0], (batch_size,), generator=g)
        if tokens is not None:
            emb = encode_text(c.text_encoder, c.tokenizer, [text], handle.tokens, trainable=tokens)
        else:
            emb = fixed
        return pool[idx], emb.expand(batch_size, -1, -1)

    # Trainable tokens send the text encoder through every step: it stays on the device for the run.
    text_held = memory.codec_on_device(c, c.text_encoder) if tokens is not None else contextlib.nullcontext()
    with text_held, handle.with_bypass(True).applied(merge=True) as unet:
        groups: list[dict[str, Any]] = []
        if kind in ("lora", "both"):
            with seeded(seed):
                params = add_trainable_lora(unet, "spatial", rank, alpha, "cav_absorber")
            groups.append({"params": params, "lr": lora_lr})
        if tokens is not None:
            groups.append({"params": [tokens.embeddings], "lr": ti_lr})

        def result(losses: list[float], snapshot: dict | None = None) -> AdapterFile:
            info = {"caption": caption, "trained_caption": text, "steps": steps, "seed": seed, "kind": kind,
                    "size": [int(frames.shape[1]), int(frames.shape[2])],
                    "crop_range": list(crop_range), "lora_lr": lora_lr, "ti_lr": ti_lr, "init_word": init_word,
                    "final_loss": float(sum(losses[-20:]) / max(1, len(losses[-20:]))), "base_model": c.model_id,
                    "defaults": d.name, "rank": rank if kind != "ti" else None,
                    "alpha": alpha if kind != "ti" else None,
                    "num_tokens": num_tokens if kind != "lora" else None, "batch_size": batch_size,
                    **_snapshot_info(snapshot)}
            lora = (extract_lora(unet, "cav_absorber", "spatial", base_model=c.model_id, info={"rank": rank})
                    if kind in ("lora", "both") else None)
            held = TokenEmbeddings(tokens.tokens, tokens.embeddings.detach().clone()) if tokens is not None else None
            return AdapterFile(kind="absorber", lora=lora, tokens=held, base_model=c.model_id, info=info,
                               base_model_name=c.name)

        job = TrainJob("absorber", unet, groups, batch, steps, c.scheduler_config, seed, fingerprint, progress,
                       _as_dir(checkpoint_dir), resume=resume)
        return _train_with_snapshots(job, result, snapshot_every, snapshot_to, fingerprint, on_snapshot=on_snapshot)


# --------------------------------------------------------------------------- stage 2

def _with_note(progress: ProgressFn, note: str) -> ProgressFn:
    """``progress`` whose first call also carries ``info["note"]`` (one line for the user)."""
    pending = [note]

    def report(step: int, total: int, info: dict) -> None:
        if pending:
            info = {**info, "note": pending.pop()}
        progress(step, total, info)

    return report


def _caption_for(absorber: AdapterFile | None, caption: str) -> str:
    if absorber is None or absorber.tokens is None:
        return caption
    return with_placeholders(caption, absorber.tokens.tokens, absorber.info.get("init_word"))


def check_absorber(handle: ModelHandle, absorber: AdapterFile | None) -> None:
    """Refuse an absorber that does not fit ``handle``'s model (layer sizes, token width);
    one trained on other weights of a fitting architecture is used, with a warning when it
    is applied (:func:`cav_core.handle.with_adapter`)."""
    if absorber is None:
        return
    if absorber.kind != "absorber" and not (absorber.lora is not None and absorber.lora.role == "spatial"):
        raise InputError(f"the absorber (--absorber, node input absorber) is a {absorber.kind}, not an appearance "
                         f"absorber or spatial LoRA: give the file train-absorber wrote (Train Appearance Absorber)")
    c = handle.base
    trained = f"model {absorber.base_model_name or absorber.base_model or '(not recorded)'}"
    if absorber.base_model and absorber.base_model_name:
        trained += f" ({absorber.base_model})"
    if absorber.lora is not None:
        try:
            check_fits(c.unet, absorber.lora, label="the absorber")
        except AdapterError as e:
            raise InputError(f"the absorber was trained on {trained}, but this model is {c.name or 'unnamed'} "
                             f"({c.model_id}) and its layers do not fit ({e}); train the absorber on this "
                             f"model") from None
    if absorber.tokens is not None:
        width = c.text_encoder.get_input_embeddings().embedding_dim
        if absorber.tokens.embeddings.shape[1] != width:
            raise InputError(f"the absorber was trained on {trained}, but this model is {c.name or 'unnamed'} "
                             f"({c.model_id}): its textual-inversion tokens have width "
                             f"{absorber.tokens.embeddings.shape[1]}, this text encoder's is {width}; train the "
                             f"absorber on this model")


def expected_adapter_bytes(handle: ModelHandle, role: str | None, rank: int | None,
                           num_tokens: int | None = 0) -> int:
    """Bytes of the adapter a run will save (LoRA on ``role``'s layers at ``rank``, plus
    ``num_tokens`` embedding rows), for checking the disk before training; None takes the
    model's default (:mod:`cav_core.defaults`)."""
    from .layers import role_modules

    d = profile_for(handle)
    if rank is None:
        rank = d["temporal.rank" if role == "temporal" else "absorber.rank"]
    if num_tokens is None:
        num_tokens = d["absorber.num_tokens"]
    unet = handle.base.unet
    n = 0
    if role is not None:
        for m in role_modules(unet, role):
            lin = unet.get_submodule(m)
            n += (lin.in_features + lin.out_features) * int(rank)
    if num_tokens:
        n += int(num_tokens) * handle.base.text_encoder.get_input_embeddings().embedding_dim
    return 4 * n + 64 * 1024  # fp32 values and the header


def _warn_if_still(frames: torch.Tensor) -> None:
    """A T-LoRA learns the motion of the clip; a clip whose frames are all the same has none."""
    if frames.shape[0] < 2 or float((frames - frames[:1]).abs().max()) < 1.0 / 255:
        warnings.warn(f"the reference clip has no motion: all {frames.shape[0]} frame(s) are identical, so the "
                      f"T-LoRA can only learn a still image; take more frames (--frames, num_frames) at a rate the "
                      f"video has (--fps, fps)", stacklevel=3)


@dataclass(frozen=True, eq=False)
class TrainClip:
    """One more clip of the same motion for :func:`train_temporal_lora` (``more_clips``): its
    frames ((F,H,W,3) in 0..1), full caption and optional absorber, which is attached (frozen)
    only on the steps that draw this clip."""

    frames: torch.Tensor
    caption: str
    absorber: AdapterFile | None = None


def _draw_clip(g: torch.Generator, clips: int) -> int:
    # One clip: nothing is drawn, so a one-clip run draws exactly what it drew before more_clips.
    return int(torch.randint(0, clips, (1,), generator=g)) if clips > 1 else 0


def clip_schedule(seed: int, steps: int, clips: int) -> list[int]:
    """Which clip (0: the first) each step of a ``clips``-clip T-LoRA run trains on: the
    first draw of the step's own generator, so a resumed run replays the same clips."""
    return [_draw_clip(_step_generator(check_seed(seed), s), clips) for s in range(int(steps))]


@dataclass
class _Clip:
    """A training clip made ready: its views (the clip, its recolored copies and their copies
    on the other plain backgrounds) as latents and frozen text embeddings, computed once."""

    frames: torch.Tensor
    caption: str
    absorber: AdapterFile | None
    text: str
    texts: list[str]
    latents: list[torch.Tensor]
    conds: list[torch.Tensor]
    skipped: str | None
    bg_skipped: str | None = None


def _ready_clip(handle: ModelHandle, clip: TrainClip, recolor: bool, height: int | None, width: int | None,
                label: str, rebackground: bool = False, tint_white: bool = False) -> _Clip:
    caption = _check_caption(clip.caption, label)
    check_absorber(handle, clip.absorber)
    frames = _prepare_frames(handle, clip.frames, height, width)
    _warn_if_still(frames)
    c = handle.base
    check_training_memory(c, frames.shape[0], frames.shape[1], frames.shape[2], 1, stage="temporal")
    absorber = clip.absorber
    text = _caption_for(absorber, caption)
    skipped = recolor_skip_reason(caption, frames, tint_white) if recolor else None
    views = hue_rotated_views(frames, caption, tint_white) if recolor and not skipped else [(frames, caption)]
    bg_skipped = rebackground_skip_reason(frames, caption) if rebackground else None
    if rebackground and not bg_skipped:
        views += [v for f, t in list(views) for v in rebackground_views(f, t)]
    texts = [text] + [t for _, t in views[1:]]
    words = handle.with_tokens(absorber.tokens) if absorber is not None and absorber.tokens is not None else handle
    return _Clip(frames, caption, absorber, text, texts,
                 latents=[encode_frames(c, f) for f, _ in views],  # each (1, C, F, h, w), once
                 conds=[text_embeddings(words, [t]) for t in texts],  # frozen: once
                 skipped=skipped, bg_skipped=bg_skipped)


def _absorber_id(absorber: AdapterFile | None) -> str:
    if absorber is None or absorber.lora is None:
        return ""
    return _fingerprint(*(absorber.lora.tensors[k] for k in sorted(absorber.lora.tensors)))


def _check_ad_loss(weight: Any) -> float:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
            or not 0 <= weight <= 100:
        raise InputError(f"ad_loss (--ad-loss, node widget ad_loss) must be a weight in 0..100, got {weight!r}; "
                         f"0 turns the appearance-debiased loss off")
    return float(weight)


def train_temporal_lora(handle: ModelHandle, frames: torch.Tensor, caption: str, absorber: AdapterFile | None = None,
                        steps: int | None = None, rank: int | None = None, lr: float | None = None, seed: int = 0,
                        progress: ProgressFn | None = None, validation_prompt: str | None = None,
                        validate_every: int | None = None, checkpoint_dir: str | os.PathLike | None = None,
                        resume: bool = False, alpha: float | None = None, validation_steps: int | None = None,
                        validation_guidance: float | None = None, min_timestep: int | None = None,
                        recolor: bool | None = None, height: int | None = None,
                        width: int | None = None, ad_loss: float | None = None, rebackground: bool | None = None,
                        tint_white: bool | None = None, more_clips: Sequence[TrainClip] = (),
                        snapshot_every: int = 0, snapshot_to: SnapshotDest | None = None,
                        on_snapshot: Callable[[Snapshot], None] | None = None) -> AdapterFile:
    """Stage 2: learn the reference's motion as a T-LoRA, the absorber loaded and frozen.

    Settings left None take the model's defaults (:mod:`cav_core.defaults`); the file's info
    records the values used.

    ``recolor``: train on the clip and its two hue rotations, each captioned with its colors
    (:mod:`cav_core.recolor`), one of the three drawn per step, so that only the motion is
    common to what the T-LoRA sees. The rotated views are captioned in plain words, without
    an absorber's tokens (those stand for the reference's own look). Skipped when a rotated
    caption would be false (it names a color a rotation cannot rename, or no color it can
    and no white object ``tint_white`` can tint): said once (as the first progress call's
    ``info["note"]``, or as a warning without a ``progress``) and recorded in the file's info.
    Measured only on the toy model, where it is on by default; off by default on other models.

    ``tint_white``: with recolor, a white object on a plain background (which a rotation
    cannot recolour) is tinted red first, so its views are white, red, green and blue
    (:func:`cav_core.recolor.hue_rotated_views`). Measured only on the toy model, where it is on
    by default; off by default on other models.

    ``rebackground``: also train on copies of each of those views on the other plain
    background, the caption's background word swapped (:mod:`cav_core.rebackground`), so
    the T-LoRA keys on the path rather than on the reference's scene. Skipped, and said like
    recolor's skip, unless the caption names one plain background and the clip's border is
    that colour. Measured only on the toy model, where it is on by default with rank 16 and
    2000 steps (docs/EXPERIMENTS.md §12); off by default on other models.

    ``min_timestep``: train only on noise levels from this timestep up. Motion is decided
    at high noise (where the layout forms); the low-noise steps mostly refine the reference's
    appearance, which the T-LoRA should not learn (docs/EXPERIMENTS.md §1).

    ``ad_loss``: weight of the appearance-debiased temporal loss (:func:`diffusion_loss`),
    added to the plain loss; 0 (the default) is off.

    ``more_clips``: further clips of the same motion, each with its own caption and absorber;
    each step trains on one clip (the first one included), drawn from the step's seed
    (:func:`clip_schedule`), with that clip's absorber attached. The file's info counts the
    steps each clip got.

    ``height``/``width``: the training size (default: the model's native size).

    ``snapshot_every``: also save the T-LoRA every that many steps and at the end, to
    ``snapshot_to`` (:mod:`cav_core.snapshots`; 0 = off); with a ``validation_prompt`` each
    snapshot is sampled with the same seed and noise and gets the motion score of that sample
    against ``frames``. ``on_snapshot`` is told of each :class:`~cav_core.snapshots.Snapshot`.
    """
    d = profile_for(handle)
    caption = _check_caption(caption, "caption")
    steps = _check_steps(d.resolve("temporal.steps", steps))
    lr = _check_lr(d.resolve("temporal.lr", lr), "learning rate")
    min_timestep = check_min_timestep(handle.base, d.resolve("temporal.min_timestep", min_timestep))
    rank = d.resolve("temporal.rank", rank)
    if not isinstance(rank, int) or not 1 <= rank <= 256:
        raise InputError(f"rank must be an integer in 1..256, got {rank!r}")
    alpha = d.resolve("temporal.alpha", alpha)
    alpha = float(rank if alpha is None else alpha)
    recolor = bool(d.resolve("temporal.recolor", recolor))
    rebackground = bool(d.resolve("temporal.rebackground", rebackground))
    tint_white = bool(d.resolve("temporal.tint_white", tint_white))
    ad_loss = _check_ad_loss(d.resolve("temporal.ad_loss", ad_loss))
    validation_steps = d.resolve("temporal.validation_steps", validation_steps)
    validation_guidance = d.resolve("temporal.validation_guidance", validation_guidance)
    seed = check_seed(seed)
    snapshot_every = _check_snapshots(snapshot_every, steps, snapshot_to)
    more_clips = list(more_clips or ())
    bad = next((i for i, m in enumerate(more_clips) if not isinstance(m, TrainClip)), None)
    if bad is not None:
        raise InputError(f"more_clips[{bad}] is a {type(more_clips[bad]).__name__}, not a training clip (TrainClip; "
                         f"node Add Training Clip)")
    clips = [_ready_clip(handle, TrainClip(frames, caption, absorber), recolor, height, width, "caption",
                         rebackground, tint_white)]
    clips += [_ready_clip(handle, m, recolor, height, width, f"caption of training clip {i + 2}", rebackground,
                          tint_white) for i, m in enumerate(more_clips)]
    first = clips[0]
    c = handle.base
    # Every distinct absorber LoRA is attached (merged); with several clips only the drawn
    # clip's one is switched on for a step.
    absorbers: list[AdapterFile] = []
    for k in clips:
        if k.absorber is not None and k.absorber.lora is not None and all(k.absorber is not a for a in absorbers):
            absorbers.append(k.absorber)
    work = handle.with_bypass(False)
    for i, a in enumerate(absorbers):
        label = "absorber" if len(absorbers) == 1 else f"absorber {i + 1}"
        # The LoRA only: each clip's captions were embedded with its own absorber's tokens (_ready_clip).
        work = with_adapter(work, dataclasses.replace(a, tokens=None), 1.0, name=label, what=f"the {label}")
    active = [[k.absorber is a for a in absorbers] for k in clips]
    notes = [f"recolor skipped{'' if len(clips) == 1 else f' for training clip {i + 1}'}, the T-LoRA trains on "
             f"the clip as it is: {k.skipped}" for i, k in enumerate(clips) if k.skipped]
    notes += [f"rebackground skipped{'' if len(clips) == 1 else f' for training clip {i + 1}'}: {k.bg_skipped}"
              for i, k in enumerate(clips) if k.bg_skipped]
    if notes:
        note = "; ".join(notes)
        if progress is None:
            warnings.warn(note, stacklevel=2)
        else:
            progress = _with_note(progress, note)
    fingerprint = _fingerprint("temporal", c.model_id, first.texts, steps, rank, alpha, lr, seed, min_timestep,
                               first.frames, _absorber_id(absorber),
                               absorber.tokens.embeddings if absorber is not None and absorber.tokens is not None
                               else None,
                               *([ad_loss] if ad_loss else []),  # absent at 0: older checkpoints still resume
                               *[p for k in clips[1:] for p in (k.texts, k.frames, _absorber_id(k.absorber),
                                                                k.absorber.tokens.embeddings
                                                                if k.absorber is not None and k.absorber.tokens
                                                                is not None else None)])
    switch: list[Any] = [None]

    def batch(step: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        j = _draw_clip(g, len(clips))
        k = clips[j]
        if switch[0] is not None:
            switch[0].set_active(active[j])
        i = int(torch.randint(0, len(k.latents), (1,), generator=g)) if len(k.latents) > 1 else 0
        return k.latents[i], k.conds[i]

    validate = None
    if validation_prompt:
        v_cond = text_embeddings(handle, [validation_prompt])
        v_uncond = text_embeddings(handle, [""])
        v_noise = seed_noise(seed, tuple(first.latents[0].shape[1:]))[None]

        def validate() -> torch.Tensor:
            if switch[0] is not None:  # preview the motion on the first clip's look
                switch[0].set_active(active[0])
            out = denoise(c, job.unet, v_cond, v_uncond, v_noise, validation_steps, validation_guidance,
                          d["sample.scheduler"], seed)
            return decode_latents(c, out)[0]

    with work.applied_by_timestep(merge=True) as (unet, step_loras):
        if len(clips) > 1 and absorbers:
            switch[0] = step_loras.switch
        with seeded(seed):
            params = add_trainable_lora(unet, "temporal", rank, alpha, "cav_temporal")
        job = TrainJob("temporal", unet, [{"params": params, "lr": lr}], batch, steps, c.scheduler_config, seed,
                       fingerprint, progress, _as_dir(checkpoint_dir), resume=resume, validate=validate,
                       validate_every=int(validate_every or (max(1, steps // 4) if validation_prompt else 0)),
                       min_timestep=min_timestep, ad_loss=ad_loss)

        def result(losses: list[float], snapshot: dict | None = None) -> AdapterFile:
            info = {**_temporal_info(first, clips, absorber, steps, seed, lr, rank, min_timestep, alpha, d.name,
                                     recolor, ad_loss, losses, rebackground, tint_white), **_snapshot_info(snapshot)}
            lora = extract_lora(unet, "cav_temporal", "temporal", base_model=c.model_id, info=info)
            return AdapterFile(kind="temporal_lora", lora=lora, base_model=c.model_id, info=info,
                               base_model_name=c.name)

        # The snapshots of a run with another validation (prompt, steps, guidance) are not this run's.
        run_id = _fingerprint(fingerprint, validation_prompt, validation_steps, validation_guidance)
        return _train_with_snapshots(job, result, snapshot_every, snapshot_to, run_id, sample=validate,
                                     reference=first.frames, on_snapshot=on_snapshot)


def _views_info(skipped: str | None, on: bool) -> str:
    """What a file's info says of recolor or rebackground: on, off, or off with the skip's reason."""
    return f"off: {skipped}" if skipped else "on" if on else "off"


def _absorber_kind(absorber: AdapterFile | None) -> str:
    return absorber.info.get("kind", absorber.kind) if absorber is not None else "none"


def _temporal_info(first: _Clip, clips: list[_Clip], absorber: AdapterFile | None, steps: int, seed: int, lr: float,
                   rank: int, min_timestep: int, alpha: float, defaults: str, recolor: bool, ad_loss: float,
                   losses: list[float], rebackground: bool = False, tint_white: bool = False) -> dict[str, Any]:
    """What a T-LoRA file records about its run (one entry per clip under ``clips`` when it
    had several)."""
    info = {"caption": first.caption, "trained_caption": first.text, "steps": steps, "seed": seed, "lr": lr,
            "rank": rank, "min_timestep": min_timestep, "alpha": alpha, "defaults": defaults,
            "size": [int(first.frames.shape[1]), int(first.frames.shape[2])],
            "recolor": _views_info(first.skipped, recolor), "rebackground": _views_info(first.bg_skipped, rebackground),
            "trained_captions": first.texts, "tint_white": tint_white,
            "absorber": _absorber_kind(absorber),
            "final_loss": float(sum(losses[-20:]) / max(1, len(losses[-20:]))), "frames": int(first.frames.shape[0]),
            "ad_loss": ad_loss}
    if len(clips) > 1:
        drawn = clip_schedule(seed, steps, len(clips))
        info["clips"] = [{"caption": k.caption, "trained_captions": k.texts, "frames": int(k.frames.shape[0]),
                          "absorber": _absorber_kind(k.absorber), "recolor": _views_info(k.skipped, recolor),
                          "rebackground": _views_info(k.bg_skipped, rebackground),
                          "steps": drawn.count(i)} for i, k in enumerate(clips)]
    return info
