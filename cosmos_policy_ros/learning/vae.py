"""Train a small Wan VAE (diffusers' ``AutoencoderKLWan``, narrow widths) on a dataset's
camera frames, so an embedded checkpoint's latents carry the scene and its decoded
"imagination" frames look like it.

The Wan VAE is causal in time and compresses 4 frames into one latent frame after the
first; a Cosmos Policy video holds each camera image as 4 copies after a black frame (see
``CosmosPolicy._raw_video``). Training clips have that shape: ``[black, image x 4]``, so the
model code uses the trained VAE exactly as it uses the released one. The loss is the
pixel MSE, weighted up where a frame differs from the dataset's mean frame (arms, the
cube: a few pixels that a plain MSE would blur away), plus a small KL term. Afterwards
each latent channel's mean and std over the training frames are written into the VAE
config (``latents_mean`` / ``latents_std``), as the released VAE carries its own.

Reports the reconstruction PSNR on frames of held-out episodes. Resumable (``--resume``).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from cosmos_policy_ros.learning.episodes import read_episode
from cosmos_policy_ros.model.preprocessing import preprocess_image

log = logging.getLogger(__name__)

TEMPORAL_FACTOR = 4
STATE_FILE = "vae_training_state.pt"


@dataclass(frozen=True)
class VaeSettings:
    image_size: int = 64
    center_crop_area: float = 0.9
    # Region of the frame the VAE (and the policy using it) sees: see PolicyConfig.crop_box.
    crop_box: tuple[float, float, float, float] | None = None
    base_dim: int = 16
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 1
    steps: int = 900
    batch_size: int = 8
    lr: float = 1e-3
    kl_weight: float = 1e-6
    # The shipped recipe's loss: per-pixel weight 1 + foreground_weight * |pixel - mean frame|
    # over the whole clip. 0: plain MSE of the image frames, plus the terms below.
    foreground_weight: float = 20.0
    # Opt-in terms, off in the shipped recipe (what they changed: docs/training.md, "Does the
    # policy see the cube?"). The reconstruction error over the foreground, normalised by its
    # area: pixels that differ from the static scene (the per-pixel median of the training
    # frames), i.e. arms and objects; a few-pixel cube weighs nothing in an image-wide MSE.
    foreground_loss_weight: float = 0.0
    # Each frame's worst-reconstructed pixels (this fraction of them).
    worst_pixel_loss_weight: float = 0.0
    worst_pixel_fraction: float = 0.01
    # Random shifts of the training frames (pixels; 0: off), see ``shifted``.
    shift_px: int = 0
    # Decode the posterior mean while training, not a sample (an autoencoder: the KL weight is
    # ~0 anyway, and the policy encodes with the mean).
    train_on_posterior_mean: bool = False
    held_out_episodes: int = 2
    seed: int = 0


def _episode_files(data_dir: str | Path) -> list[Path]:
    """``episode_*.hdf5`` in episode-number order; the last ``held_out_episodes`` are held out."""
    return sorted(Path(data_dir).glob("episode_*.hdf5"), key=lambda p: int(p.stem.split("_")[-1]))


def load_frames(data_dir: str | Path, camera: str, settings: VaeSettings) -> tuple[np.ndarray, np.ndarray]:
    """Distinct preprocessed frames ``[N, S, S, 3]`` uint8 of ``camera``: (training, held out).
    The last ``held_out_episodes`` episode files are held out."""
    files = _episode_files(data_dir)
    if len(files) <= settings.held_out_episodes:
        raise ValueError(f"{data_dir}: {len(files)} episode files; need more than the "
                         f"{settings.held_out_episodes} held out for the PSNR")
    groups: list[list[np.ndarray]] = [[], []]
    for k, path in enumerate(files):
        episode = read_episode(path, cameras=(camera,))
        try:
            previous = None
            for step in range(episode.num_steps):
                frame = episode.frame(camera, step)
                if previous is not None and np.array_equal(frame, previous):
                    continue  # the camera runs slower than the control rate: held frames
                previous = frame
                groups[k >= len(files) - settings.held_out_episodes].append(
                    preprocess_image(frame, settings.image_size, settings.center_crop_area,
                                     crop_box=settings.crop_box))
        finally:
            episode.close()
    return np.stack(groups[0]), np.stack(groups[1])


def held_out_starts(data_dir: str | Path, camera: str, settings: VaeSettings) -> np.ndarray:
    """The preprocessed first frame of each held-out episode ``[E, S, S, 3]`` uint8."""
    files = _episode_files(data_dir)
    starts = []
    for path in files[len(files) - settings.held_out_episodes:]:
        episode = read_episode(path, cameras=(camera,))
        try:
            starts.append(preprocess_image(episode.frame(camera, 0), settings.image_size, settings.center_crop_area,
                                           crop_box=settings.crop_box))
        finally:
            episode.close()
    return np.stack(starts)


def clips(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``[B, S, S, 3]`` -> pixels in [-1, 1] ``[B, 3, 5, S, S]``: a black frame, then 4 copies."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    black = torch.full_like(x, -1.0)
    return torch.stack([black] + [x] * TEMPORAL_FACTOR, dim=2)


def _device_of(vae) -> torch.device:
    parameters = getattr(vae, "parameters", None)
    return next(parameters()).device if parameters else torch.device("cpu")


FOREGROUND_THRESHOLD = 0.1  # mean |pixel - static scene| over RGB, pixels in [-1, 1] (~13/255)


def static_scene(frames: np.ndarray) -> torch.Tensor:
    """Per-pixel median of uint8 frames ``[N, S, S, 3]`` -> ``[3, S, S]`` in [-1, 1]: the scene
    without what moves (arms) or changes between episodes (object positions)."""
    median = np.median(frames[:: max(1, len(frames) // 2000)], axis=0).astype(np.float32)
    return torch.from_numpy(median / 127.5 - 1.0).permute(2, 0, 1)


def foreground(x: torch.Tensor, scene: torch.Tensor) -> torch.Tensor:
    """Soft foreground mask ``[B, 1, F, S, S]`` of clips ``x`` against the static scene."""
    scene = scene.to(x.device)
    scene = scene[None, :, None] if scene.dim() == 3 else scene[:, :, None]  # one scene, or one per clip
    return (x - scene).abs().mean(dim=1, keepdim=True)


def shifted(frames: np.ndarray, scene: torch.Tensor, max_px: int, rng: np.random.Generator
            ) -> tuple[np.ndarray, torch.Tensor]:
    """Each frame (and the static scene with it) moved by its own random offset of up to
    ``max_px`` pixels, edges replicated: ``(frames [B, S, S, 3], scenes [B, 3, S, S])``.
    Meant to take away the decoder's positional prior: without shifts it can draw an object where
    it usually is instead of where the latent says it is, and the encoder need not say where."""
    size = frames.shape[1]
    pad = ((max_px, max_px), (max_px, max_px), (0, 0))
    scene_padded = torch.nn.functional.pad(scene[None], (max_px,) * 4, mode="replicate")[0]
    out, scenes = np.empty_like(frames), []
    for i, (dy, dx) in enumerate(rng.integers(0, 2 * max_px + 1, (len(frames), 2))):
        out[i] = np.pad(frames[i], pad, mode="edge")[dy:dy + size, dx:dx + size]
        scenes.append(scene_padded[:, dy:dy + size, dx:dx + size])
    return out, torch.stack(scenes)


def reconstruction_loss(rec: torch.Tensor, x: torch.Tensor, scene: torch.Tensor, settings: VaeSettings,
                        mean_frame: torch.Tensor | None = None) -> torch.Tensor:
    """The VAE's reconstruction loss of clips ``x`` ``[B, 3, 5, S, S]`` (see VaeSettings): the
    mean-frame-weighted MSE (``foreground_weight`` > 0, needs ``mean_frame`` ``[3, S, S]``) or the
    plain MSE of the image frames, plus the opt-in foreground and worst-pixel terms. Small
    objects that an image-wide MSE lets the encoder drop are the pixels with the largest errors."""
    err = (rec - x).pow(2).mean(dim=1)[:, 1:].flatten(1)  # [B, 4 S S]
    if settings.foreground_weight > 0:
        if mean_frame is None:
            raise ValueError("foreground_weight > 0 needs the training frames' mean frame")
        weight = 1.0 + settings.foreground_weight * (x - mean_frame.to(x.device)[None, :, None]).abs().mean(
            dim=1, keepdim=True)
        loss = (weight * (rec - x).pow(2)).mean()
    else:
        loss = err.mean()
    if settings.foreground_loss_weight > 0:
        mask = foreground(x[:, :, 1:], scene).flatten(1)
        loss = loss + settings.foreground_loss_weight * ((mask * err).sum(1) / mask.sum(1).clamp_min(1e-6)).mean()
    if settings.worst_pixel_loss_weight > 0:
        k = max(1, int(err.shape[1] * settings.worst_pixel_fraction))
        loss = loss + settings.worst_pixel_loss_weight * err.topk(k, dim=1).values.mean()
    return loss


def psnr(vae, frames: np.ndarray, batch: int = 32, scene: torch.Tensor | None = None) -> float:
    """Mean PSNR (dB, pixels in [0, 255]) of the image latent frame's reconstruction; with
    ``scene``, over the foreground pixels only (those differing from it by > FOREGROUND_THRESHOLD)."""
    errors = []
    with torch.no_grad():
        for i in range(0, len(frames), batch):
            x = clips(frames[i:i + batch]).to(_device_of(vae))
            rec = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
            err = ((rec[:, :, 1:] - x[:, :, 1:]) * 127.5).pow(2).mean(dim=1, keepdim=True)
            if scene is None:
                errors.append(err.mean(dim=(1, 2, 3, 4)))
                continue
            mask = (foreground(x[:, :, 1:], scene) > FOREGROUND_THRESHOLD).float()
            keep = mask.sum(dim=(1, 2, 3, 4)) > 0
            errors.append(((err * mask).sum(dim=(1, 2, 3, 4)) / mask.sum(dim=(1, 2, 3, 4)).clamp_min(1))[keep])
    mse = torch.cat(errors).clamp_min(1e-10)
    if mse.numel() == 0:
        return float("nan")
    return float((10 * torch.log10(255.0 ** 2 / mse)).mean())


def _image_latents(vae, frames: np.ndarray) -> torch.Tensor:
    """Normalised image latents ``[N, z, h, w]`` of uint8 frames ``[N, S, S, 3]`` (the layout's clips)."""
    std = torch.tensor(vae.config.latents_std or [1.0] * vae.config.z_dim)[None, :, None, None]
    with torch.no_grad():
        return vae.encode(clips(frames).to(_device_of(vae))).latent_dist.mode()[:, :, 1].cpu() / std


def small_object_response(vae, frame: np.ndarray, sizes=(2, 4, 8), color=(220, 20, 20)) -> dict[str, float]:
    """Mean change of the normalised image latent when a ``size``-pixel square of ``color`` is
    pasted at the centre of ``frame`` (uint8 ``[S, S, 3]``), per size; compare it with how much
    the latent changes between frames of an episode. Near 0: the encoder drops objects that
    small, and a policy on these latents cannot see them."""
    base = _image_latents(vae, frame[None])
    corner = frame.shape[0] // 2 - np.asarray(sizes) // 2
    response = {}
    for size, c in zip(sizes, corner):
        pasted = frame.copy()
        pasted[c:c + size, c:c + size] = color
        response[f"{size}px"] = float((_image_latents(vae, pasted[None]) - base).abs().mean())
    return response


def _frame_to_frame_change(vae, frames: np.ndarray, count: int = 8) -> float:
    """Mean change of the normalised image latent between ``count`` frames spread over ``frames``."""
    z = _image_latents(vae, frames[np.linspace(0, len(frames) - 1, min(count, len(frames))).astype(int)])
    return float((z[1:] - z[:-1]).abs().mean()) if len(z) > 1 else 0.0


def episode_start_change(vae, starts: np.ndarray) -> float:
    """Mean change of the normalised image latent between the first frames of episodes
    (``starts``, uint8 ``[E, S, S, 3]``). Where every episode starts from the same robot pose
    (the sim's transfer cube), only the objects differ there: near 0, the encoder does not
    tell where the object is. Compare it with ``frame_to_frame_latent_change``."""
    if len(starts) < 2:
        return 0.0
    z = _image_latents(vae, starts)
    return float((z[1:] - z[:-1]).abs().mean())


def build_vae(settings: VaeSettings):
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(base_dim=settings.base_dim, z_dim=settings.z_dim, dim_mult=list(settings.dim_mult),
                            num_res_blocks=settings.num_res_blocks)


def latent_statistics(vae, frames: np.ndarray, batch: int = 64) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the (unnormalized) latent means over ``frames``."""
    latents = []
    with torch.no_grad():
        for i in range(0, len(frames), batch):
            latents.append(vae.encode(clips(frames[i:i + batch]).to(_device_of(vae))).latent_dist.mode().cpu())
    z = torch.cat(latents).transpose(0, 1).reshape(vae.config.z_dim, -1)
    return z.mean(dim=1).tolist(), z.std(dim=1).clamp_min(1e-3).tolist()


def train_vae(data_dir: str | Path, out_dir: str | Path, camera: str = "cam_high",
              settings: VaeSettings = VaeSettings(), resume: bool = False, progress=print,
              device: str | torch.device = "cpu", time_budget_s: float | None = None) -> dict:
    """Train, write the VAE (diffusers folder) into ``out_dir``, return the report.

    ``time_budget_s``: fit the run to this many seconds (frame loading included): after
    20 steps the measured rate sets the step count (at most ``settings.steps``), and the
    learning-rate schedule runs over that count. The count is kept for a resumed run and
    reported (``steps_run``)."""
    if settings.shift_px > 0 and settings.foreground_weight > 0:
        raise ValueError("shift_px needs foreground_weight 0 (the mean-frame weight is not shifted)")
    torch.manual_seed(settings.seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    train, held_out = load_frames(data_dir, camera, settings)
    progress(f"[train-vae] {len(train)} training frames, {len(held_out)} held-out frames of {camera} "
             f"at {settings.image_size} px ({time.perf_counter() - started:.0f} s)")
    device = torch.device(device)
    vae = build_vae(settings).to(device)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=settings.lr, weight_decay=0.0)
    step, total = 0, settings.steps
    fitted = time_budget_s is None
    state_path = out / STATE_FILE
    if resume and state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=False)
        vae.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        total = int(state.get("total_steps", settings.steps))
        fitted = fitted or "total_steps" in state
        progress(f"[train-vae] resumed at step {step} of {total}")
    scene = static_scene(train).to(device)
    mean_frame = torch.from_numpy(train.astype(np.float32).mean(axis=0) / 127.5 - 1.0).permute(2, 0, 1).to(device)
    rng = np.random.default_rng(settings.seed + step)
    vae.train()
    last_log = time.perf_counter()
    fit_from = (step, time.perf_counter())
    while step < total:
        lr = settings.lr * min(1.0, (step + 1) / 20) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / total)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = train[rng.integers(0, len(train), settings.batch_size)]
        batch_scene = scene
        if settings.shift_px > 0:
            batch, batch_scene = shifted(batch, scene, settings.shift_px, rng)
        x = clips(batch).to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            posterior = vae.encode(x).latent_dist
            z = posterior.mode() if settings.train_on_posterior_mean else posterior.sample()
            rec = vae.decode(z).sample.float()
        loss = reconstruction_loss(rec, x, batch_scene, settings, mean_frame) + settings.kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        step += 1
        if not fitted and step - fit_from[0] == 20:
            fitted = True
            now = time.perf_counter()
            rate = 20 / (now - fit_from[1])
            # ~10 % of the budget is left for the latent statistics, the PSNR and saving
            total = max(step, min(settings.steps, int(step + rate * (0.9 * time_budget_s - (now - started)))))
            progress(f"[train-vae] {rate:.1f} steps/s: {total} steps fit the {time_budget_s:.0f} s budget")
        if step % 25 == 0 or step == total or time.perf_counter() - last_log > 60:
            last_log = time.perf_counter()
            elapsed = time.perf_counter() - started
            progress(f"[train-vae] step {step}/{total} loss {loss.item():.4f} lr {lr:.2e} "
                     f"({elapsed:.0f} s)")
        if step % 100 == 0 or step == total:
            torch.save({"model": vae.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                        **({"total_steps": total} if fitted else {})}, state_path)
    vae.eval()
    mean, std = latent_statistics(vae, train)
    vae.register_to_config(latents_mean=mean, latents_std=std)
    report = {"camera": camera, "settings": asdict(settings), "steps_run": step, "device": str(device),
              "training_frames": int(len(train)),
              "held_out_frames": int(len(held_out)), "held_out_psnr_db": psnr(vae, held_out),
              "training_psnr_db": psnr(vae, train[: max(1, len(held_out))]),
              "held_out_foreground_psnr_db": psnr(vae, held_out, scene=scene.cpu()),
              "foreground_threshold": FOREGROUND_THRESHOLD,
              "small_object_latent_response": small_object_response(vae, held_out[0]),
              "frame_to_frame_latent_change": _frame_to_frame_change(vae, held_out),
              "episode_start_latent_change": episode_start_change(
                  vae, held_out_starts(data_dir, camera, settings))}
    vae.to("cpu").save_pretrained(out)
    report["seconds"] = time.perf_counter() - started
    (out / "vae_report.json").write_text(json.dumps(report, indent=2))
    progress(f"[train-vae] held-out PSNR {report['held_out_psnr_db']:.1f} dB (training "
             f"{report['training_psnr_db']:.1f} dB, held-out foreground {report['held_out_foreground_psnr_db']:.1f} dB); wrote {out} in {report['seconds']:.0f} s")
    return report


def add_train_vae_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = VaeSettings()
    parser.add_argument("--data", required=True, help="dataset folder (episode_*.hdf5, e.g. from `demos`)")
    parser.add_argument("--out", required=True, help="folder for the trained VAE (diffusers layout)")
    parser.add_argument("--camera", default="cam_high", help="camera whose frames train the VAE")
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--base-dim", type=int, default=defaults.base_dim)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--held-out-episodes", type=int, default=defaults.held_out_episodes)
    parser.add_argument("--foreground-weight", type=float, default=defaults.foreground_weight,
                        help="per-pixel weight 1 + W |pixel - mean frame| (the shipped recipe's loss; 0: plain MSE)")
    parser.add_argument("--foreground-loss-weight", type=float, default=defaults.foreground_loss_weight,
                        help="weight of the area-normalised error over pixels that differ from the static scene")
    parser.add_argument("--worst-pixel-loss-weight", type=float, default=defaults.worst_pixel_loss_weight,
                        help="weight of each frame's worst-reconstructed 1 %% of pixels")
    parser.add_argument("--shift-px", type=int, default=defaults.shift_px,
                        help="random shifts of the training frames, pixels (needs --foreground-weight 0)")
    parser.add_argument("--posterior-mean", action="store_true", default=defaults.train_on_posterior_mean,
                        help="decode the posterior mean while training, not a sample")
    parser.add_argument("--crop-box", type=float, nargs=4, metavar=("TOP", "LEFT", "HEIGHT", "WIDTH"),
                        default=defaults.crop_box,
                        help="region of the frame to train on, fractions of the frame (default: the whole frame)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--resume", action="store_true", help="continue from the training state in --out")
    parser.add_argument("--device", default="cpu", help="cpu | cuda (default cpu)")
    parser.add_argument("--time-budget", type=float, default=0.0, metavar="S",
                        help="fit the step count (at most --steps) to S seconds, measured after 20 steps")


def run_train_vae(args: argparse.Namespace) -> int:
    settings = VaeSettings(image_size=args.image_size, base_dim=args.base_dim, steps=args.steps,
                           batch_size=args.batch_size, lr=args.lr, held_out_episodes=args.held_out_episodes,
                           seed=args.seed, foreground_weight=args.foreground_weight,
                           foreground_loss_weight=args.foreground_loss_weight,
                           worst_pixel_loss_weight=args.worst_pixel_loss_weight, shift_px=args.shift_px,
                           train_on_posterior_mean=args.posterior_mean,
                           crop_box=None if args.crop_box is None else tuple(args.crop_box))
    try:
        train_vae(args.data, args.out, args.camera, settings, resume=args.resume, device=args.device,
                  time_budget_s=args.time_budget or None,
                  progress=lambda line: print(line, flush=True))
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"[train-vae] {exc}", file=__import__("sys").stderr)
        return 2
    return 0
