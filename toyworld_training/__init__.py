"""The research trainer of the toy text-to-video model shipped in cav_core/toyworld/model/.

Not part of the runtime (pyproject.toml installs only cav_core, and an import-linter contract
keeps cav_core and nodes from importing this package); run it from a checkout:

    python -m toyworld_training --work runs/toy --minutes 60       # run / continue
    python -m toyworld_training --work runs/toy --export cav_core/toyworld/model

It pretrains the model on synthetic spec-v1 clips (cav_core/toyworld/clips.py) in stages, in
order, each resuming at its last checkpoint:
  vae      AutoencoderKL on single frames (MSE + tiny KL), then its latent scaling factor
  data     encode a fixed set of pretraining clips to latents once (cached on disk)
  image    UNet + text encoder on single frames, temporal layers bypassed: appearance first,
           the way ModelScope grew out of an image model
  video    everything on 16-frame clips: motion words become meaningful
  decoder  the VAE decoder alone, encoder frozen, so the latent space the UNet learned stays
           put while small shapes are drawn sharper
A finished run takes further sittings, each recorded in the checkpoint and exported to
training.json: --restart-diffusion (a new UNet and text encoder on the run's VAE and latents),
--extend-video (more video steps, a fresh warm-up and cosine) and --extend-terminal (a
v-prediction, zero-terminal-SNR model trained at pure noise only). Every step's randomness
derives from (seed, stage, step, sitting), so a resumed run draws what an uninterrupted one
would. docs/TOY_MODEL.md has the shipped recipe, its figures and the commands that rebuild
it; docs/EXPERIMENTS.md §5 how it was found.

Modules: cli (options, export), trainer (checkpoint, sittings, stage order), stages (VAE,
latent cache, decoder, text pretraining, terminal sitting), diffusion (image and video
steps), batches (what a step sees), losses (its loss terms), schedule (random streams,
learning rate, EMA), recipe (stages and defaults).
"""
