"""The Cosmos Policy training objective and optimisation loop (``Trainer``), checkpoint
saving and resuming. The ``cosmos-policy-ros train`` command around it is
``learning.training``.
Samples and the data mix come from ``learning.training_data``, augmentation from
``learning.augmentation``, the learning-rate schedule from ``learning.schedule``; the
model pieces (layout, injection, preconditioning, the checkpoint folder) from
``cosmos_policy_ros.model``.

Objective (the official Cosmos Policy recipe; the layout says which frames are clean):

- Each sample gets one objective from the data mix (``training_data``): demonstrations
  train the policy p(a, s', V | s); rollouts the world model p(s', V | s, a) or the value
  function p(V | s, a, s') (V(s') checkpoints: s and a are masked inputs, not conditions).
- Noise level per sample, shared by its frames: 70 % log-normal (log sigma ~
  N(log 4, 1.2)), 30 % uniform over [1, 85], times sqrt(number of latent frames)
  (Cosmos-Predict2's ``adjust_video_noise``).
- Condition frames hold their clean latents and are told sigma_conditional (0); every
  other frame is x0 + sigma * eps. Loss: ((1 + sigma) / sigma)^2 * (x0_pred - x0)^2
  (rectified-flow loss weight), averaged over all latent elements of the batch, times
  10, on the generated frames of policy and world-model samples and on the value frame
  alone for value samples (for a V(s') checkpoint the masked s and a get no loss, as
  the official ``mask_current_state_action_for_value_prediction``).
- Images: per sample one random crop / rotation / colour jitter shared by all its frames
  (``augmentation``), encoded by the frozen VAE on the fly, or K augmented encodings per
  sample cached (``augment_variants``); without augmentation the inference-time center
  crop, encoded once and cached.
- AdamW (betas 0.9 / 0.99, weight decay 0.1), NaN/inf gradient entries zeroed, then
  gradient-norm clipping at 1; learning rate ``lr * schedule(step)`` (``schedule``);
  ``grad_accum`` micro-batches per optimizer step (official global batch: 8 GPUs x 25
  = 200); bf16 autocast on CUDA (fp32 master weights).

Saving: ``save(out)`` writes a normal checkpoint folder (``CosmosCheckpoint.save_pretrained``,
swapped in whole) and the optimizer, step and RNG state next to it, in
``<out>.training_state.pt``; ``load_state`` continues from there and gives the same
losses as an uninterrupted run.

Multi-GPU: every process draws the global batch from one shared seeded generator and
takes its slice (DDP when ``world_size > 1``), so the run does not depend on how it is split.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from cosmos_policy_ros.learning.augmentation import AugmentationConfig, augment_frames
from cosmos_policy_ros.learning.schedule import (
    POLICY_SCHEDULE,
    LinearWarmupDecaySchedule,
)
from cosmos_policy_ros.learning.training_data import (
    DataMix,
    EpisodeDataset,
    MixSampler,
    TrainingDataError,
    TrainingSample,
)
from cosmos_policy_ros.model.checkpoint import CheckpointError, CosmosCheckpoint
from cosmos_policy_ros.model.denoiser import DenoiserNetwork
from cosmos_policy_ros.model.layout import MODES, inject
from cosmos_policy_ros.model.normalization import NormalizationStats

__all__ = [
    "NoiseConfig",
    "StepResult",
    "TrainSettings",
    "Trainer",
    "generated_frame_loss",
    "loss_frames_per_mode",
    "training_state_path",
]

STATE_FORMAT = 2
LOG_FILE = "training_log.jsonl"  # copied along when a checkpoint folder is rewritten
NO_AUGMENTATION = -1  # variant id of the un-augmented (center-cropped) encoding


def training_state_path(out_dir: str | Path) -> Path:
    """Where the optimizer/step/RNG state of a run writing ``out_dir`` is kept."""
    out_dir = Path(out_dir)
    return out_dir.parent / f"{out_dir.name}.training_state.pt"


# ---------------------------------------------------------------------------- noise
@dataclass(frozen=True)
class NoiseConfig:
    """Training noise levels (Cosmos Policy's hybrid log-normal / uniform ``HybridEDMSDE``).

    video_noise_multiplier: None -> sqrt(latent frames), as Cosmos-Predict2 with
        ``adjust_video_noise``; 1.0 samples the bare distribution.
    """

    p_mean: float = math.log(4.0)
    p_std: float = 1.2
    lognormal_prob: float = 0.7
    uniform_low: float = 1.0
    uniform_high: float = 85.0
    video_noise_multiplier: float | None = None

    def sample(self, count: int, num_frames: int, generator: torch.Generator) -> torch.Tensor:
        """``[count]`` float32 noise levels (EDM sigma)."""
        use_lognormal = torch.rand(count, generator=generator) < self.lognormal_prob
        lognormal = torch.exp(self.p_mean + self.p_std * torch.randn(count, generator=generator))
        uniform = self.uniform_low + (self.uniform_high - self.uniform_low) * torch.rand(count, generator=generator)
        multiplier = math.sqrt(num_frames) if self.video_noise_multiplier is None else self.video_noise_multiplier
        return torch.where(use_lognormal, lognormal, uniform) * multiplier


def loss_weight(sigma: torch.Tensor) -> torch.Tensor:
    """Per-sigma loss weight of rectified-flow preconditioning (sigma_data 1)."""
    return (1.0 + sigma) ** 2 / sigma**2


def generated_frame_loss(
    x0_pred: torch.Tensor, x0: torch.Tensor, loss_frames: torch.Tensor, sigma: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted squared error on the frames that take loss.

    x0_pred, x0: ``[B, C, T, h, w]``; loss_frames: ``[B, T]`` bool; sigma: ``[B]``.
    Returns ``(per_sample_sum [B], per_sample_count [B])``: the weighted error summed
    over each sample's loss elements and how many elements that is. Other frames
    contribute exactly nothing (not even a gradient).
    """
    mask = loss_frames.to(x0.dtype)[:, None, :, None, None]
    err = (x0_pred.float() - x0.float()) ** 2 * mask
    per_sample = err.sum(dim=(1, 2, 3, 4)) * loss_weight(sigma.float())
    count = mask.sum(dim=(1, 2, 3, 4)) * x0.shape[1] * x0.shape[3] * x0.shape[4]
    return per_sample, count


def loss_frames_per_mode(layout) -> torch.Tensor:
    """``[3, T]`` bool, per ``MODES`` entry: the frames that take loss. Policy and world
    model: every generated frame; value: the value frame alone (the official loss mask of
    value samples when inputs are masked; with s, a, s' as conditions it is the only
    generated frame anyway)."""
    frames = torch.stack([~layout.condition_frames(m) for m in MODES])
    value_only = torch.zeros(frames.shape[1], dtype=torch.bool)
    value_only[layout.index_of_kind("value")] = True
    frames[MODES.index("value")] = value_only
    return frames


# ---------------------------------------------------------------------------- trainer
@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings. Defaults: the official recipe, except ``schedule`` (the
    policy run's; the CLI picks the planning run's when training on rollouts) and
    ``mix`` (None: ``DataMix.official`` for the data given)."""

    batch_size: int = 8  # per process and micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-4
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0
    schedule: LinearWarmupDecaySchedule | None = POLICY_SCHEDULE  # None: constant lr
    loss_scale: float = 10.0
    seed: int = 0
    augment: bool = True
    augment_variants: int = 0  # 0: a fresh draw encoded on the fly; K: K cached draws per sample
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    mix: DataMix | None = None
    noise: NoiseConfig = field(default_factory=NoiseConfig)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.grad_accum < 1 or self.augment_variants < 0:
            raise TrainingDataError(f"batch_size and grad_accum must be >= 1 and augment_variants >= 0 (got "
                                    f"{self.batch_size}, {self.grad_accum}, {self.augment_variants})")


@dataclass(frozen=True)
class StepResult:
    step: int
    loss: float
    grad_norm: float
    lr: float
    # objective -> (weighted squared error summed over loss elements, element count)
    objective_sums: dict[str, tuple[float, float]]
    nonfinite_grads: int = 0  # gradient entries that were NaN/inf and zeroed

    def objective_losses(self) -> dict[str, float]:
        return {m: s / c for m, (s, c) in self.objective_sums.items() if c > 0}


class Trainer:
    """The training loop's state: network, optimizer, RNG, latent cache.

    Single process by default; pass ``rank``/``world_size`` (after
    ``torch.distributed.init_process_group``) to train data-parallel with DDP.
    ``latent_cache`` maps (episode, step, variant) to a sample's normalized image latents.
    """

    def __init__(
        self,
        checkpoint: CosmosCheckpoint,
        dataset: EpisodeDataset,
        settings: TrainSettings = TrainSettings(),
        device: str | torch.device = "cpu",
        latent_cache: dict[tuple[int, int, int], torch.Tensor] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if checkpoint.vae is None:
            raise CheckpointError("training needs the checkpoint's VAE (load it with load_vae=True)")
        if len(dataset) == 0:
            raise TrainingDataError("the dataset holds no samples")
        missing = sorted(dataset.tasks - set(checkpoint.text_embeddings))
        if missing:
            raise TrainingDataError(
                f"tasks {missing} have no precomputed T5 embedding in the checkpoint (known: "
                f"{sorted(checkpoint.text_embeddings)[:10]}); pass --task with a known task"
            )
        self.checkpoint = checkpoint
        self.config = checkpoint.config
        self.layout = checkpoint.config.layout
        self.stats: NormalizationStats = checkpoint.stats
        self.dataset = dataset
        self.settings = settings
        self.device = torch.device(device)
        self.rank, self.world_size = rank, world_size
        self.latent_cache = {} if latent_cache is None else latent_cache
        self._video_latents: dict[bytes, torch.Tensor] = {}  # video content digest -> latents
        self.step = 0
        self.total_steps: int | None = None  # set by fit_total_steps (a time-budgeted run)

        self.vae = checkpoint.vae.to(self.device).eval().requires_grad_(False)
        self.temporal_factor = 2 ** sum(self.vae.config.temperal_downsample)
        z_dim = self.vae.config.z_dim
        self._latents_mean = torch.tensor(self.vae.config.latents_mean, dtype=torch.float32).view(1, z_dim, 1, 1, 1)
        self._latents_std = torch.tensor(self.vae.config.latents_std, dtype=torch.float32).view(1, z_dim, 1, 1, 1)

        transformer = checkpoint.transformer.to(self.device)
        if any(p.dtype != torch.float32 for p in transformer.parameters()):
            transformer = transformer.float()  # fp32 master weights; autocast gives bf16 compute
        transformer = transformer.train().requires_grad_(True)
        self.network = DenoiserNetwork(transformer).train()
        self.model: torch.nn.Module = self.network
        if world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.network, device_ids=ids)
        self.optimizer = torch.optim.AdamW(
            self.network.parameters(), lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay
        )
        self.generator = torch.Generator().manual_seed(settings.seed)
        has_demos = any(e.source == "demo" for e in dataset.episodes)
        has_rollouts = any(e.source == "rollout" for e in dataset.episodes)
        self.mix = settings.mix or DataMix.official(has_demos, has_rollouts)
        self.sampler = MixSampler(dataset, self.mix)
        self._cond = torch.stack([self.layout.condition_frames(m) for m in MODES])  # [3, T]
        self._loss_frames = loss_frames_per_mode(self.layout)  # [3, T]
        embeddings = [checkpoint.text_embeddings[t] for t in sorted(checkpoint.text_embeddings)]
        self._text_len = max(e.shape[0] for e in embeddings)

    # ------------------------------------------------------------------ batches
    def draw_batch(self) -> dict[str, torch.Tensor]:
        """The global batch (all processes), then this process's slice of it."""
        total = self.settings.batch_size * self.world_size
        gen = self.generator
        indices, modes = self.sampler.draw(total, gen)
        sigma = self.settings.noise.sample(total, self.layout.num_frames, gen)
        shape = (total, self.vae.config.z_dim, self.layout.num_frames, *self._latent_hw)
        noise = torch.randn(shape, generator=gen)
        if not self.settings.augment:
            variants = torch.full((total,), NO_AUGMENTATION, dtype=torch.long)
        elif self.settings.augment_variants:
            variants = torch.randint(self.settings.augment_variants, (total,), generator=gen)
        else:
            variants = torch.randint(2**62, (total,), generator=gen)
        part = slice(self.rank * self.settings.batch_size, (self.rank + 1) * self.settings.batch_size)
        return {"indices": indices[part], "modes": modes[part], "sigma": sigma[part], "noise": noise[part],
                "variants": variants[part]}

    @property
    def _latent_hw(self) -> tuple[int, int]:
        side = self.config.image_size // 8
        return side, side

    # ------------------------------------------------------------------ encoding
    def _augmented(self, i: int, variant: int) -> TrainingSample:
        """Sample ``i`` with augmentation draw ``variant`` (a pure function of the run's
        seed, the sample and the variant, so cached and resumed runs see the same pixels)."""
        if variant == NO_AUGMENTATION:
            return self.dataset.sample(i)
        sample = self.dataset.sample(i, center_crop=False)
        e, t = self.dataset.key(i)
        seed = hash((self.settings.seed, e, t, int(variant))) % (2**63)
        params = self.settings.augmentation.draw(self.config.image_size, torch.Generator().manual_seed(seed))
        cams = list(sample.images)
        frames = augment_frames(np.stack([sample.images[c] for c in cams] + [sample.future_images[c] for c in cams]),
                                params)
        return TrainingSample(
            images=dict(zip(cams, frames[: len(cams)])), future_images=dict(zip(cams, frames[len(cams) :])),
            joint_positions=sample.joint_positions, actions=sample.actions,
            future_joint_positions=sample.future_joint_positions, value=sample.value, task=sample.task,
            source=sample.source,
        )

    def _raw_video(self, sample: TrainingSample) -> torch.Tensor:
        """uint8 ``[3, 1 + 4 (T-1), S, S]``: each slot's image (current or future) or black."""
        size = self.config.image_size
        black = np.zeros((size, size, 3), np.uint8)
        frames: list[np.ndarray] = [black]
        for slot in self.layout.slots[1:]:
            if slot.kind == "image":
                frame = (sample.future_images if slot.future else sample.images)[slot.camera]
            else:
                frame = black
            frames.extend([frame] * self.temporal_factor)
        return torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2)

    def _video_digest(self, sample: TrainingSample) -> bytes:
        """Content hash of ``_raw_video(sample)``: the slot images in slot order (the
        placeholders are black, the image size fixed), without building the video."""
        digest = hashlib.blake2b(digest_size=16)
        for slot in self.layout.slots[1:]:
            if slot.kind == "image":
                digest.update((sample.future_images if slot.future else sample.images)[slot.camera].tobytes())
            else:
                digest.update(b"-")
        return digest.digest()

    def _cached(self, variant: int) -> bool:
        return variant == NO_AUGMENTATION or self.settings.augment_variants > 0

    @torch.no_grad()
    def encode(self, indices: Sequence[int], variants: Sequence[int] | None = None,
               micro_batch: int | None = None) -> torch.Tensor:
        """Normalized VAE latents ``[B, 16, T, h, w]`` of the samples' images (placeholders
        black). ``variants``: augmentation draw per sample (default: none). Un-augmented
        and K-variant encodings are cached (the VAE is frozen and deterministic, posterior
        mode); fresh draws are encoded every time."""
        indices = [int(i) for i in indices]
        variants = [NO_AUGMENTATION] * len(indices) if variants is None else [int(v) for v in variants]
        keys = [(*self.dataset.key(i), v) for i, v in zip(indices, variants)]
        fresh: dict[tuple[int, int, int], torch.Tensor] = {}
        todo = list(dict.fromkeys((i, v, k) for i, v, k in zip(indices, variants, keys) if k not in self.latent_cache))
        # Samples whose videos are identical (cameras slower than the control rate hold their
        # frames) share one encoding: the VAE is deterministic (posterior mode).
        videos = {}
        for i, v, key in todo:
            sample = self._augmented(i, v)
            videos[key] = (sample, self._video_digest(sample))
        pending = [d for d in dict.fromkeys(d for _, d in videos.values()) if d not in self._video_latents]
        by_digest = {d: sample for sample, d in videos.values()}
        micro_batch = micro_batch or (256 if self.device.type == "cuda" else 4)
        for start in range(0, len(pending), micro_batch):
            part = pending[start : start + micro_batch]
            video = torch.stack([self._raw_video(by_digest[d]) for d in part])
            pixels = video.to(self.device).float() / 127.5 - 1.0
            latents = self.vae.encode(pixels).latent_dist.mode().float().cpu()
            latents = (latents - self._latents_mean) / self._latents_std
            self._video_latents.update(zip(part, latents))
        for (_, v, key) in todo:
            lat = self._video_latents[videos[key][1]]
            if self._cached(v):
                self.latent_cache[key] = lat
            else:
                fresh[key] = lat
        if self.settings.augment_variants == 0 and self.settings.augment:
            self._video_latents.clear()  # fresh draws never repeat: keep nothing
        return torch.stack([self.latent_cache[k] if k in self.latent_cache else fresh[k] for k in keys])

    def precache(self, progress=print, group: int = 512) -> int:
        """Encode every sample's un-augmented images into the latent cache now (what the
        first epoch would do step by step), so later steps run at their steady rate.
        Returns the number of samples encoded; 0 when training draws augmented images."""
        if self.settings.augment and not self.settings.augment_variants:
            return 0
        variant = NO_AUGMENTATION if not self.settings.augment else None
        todo = [i for i in range(len(self.dataset))
                if variant is None or (*self.dataset.key(i), variant) not in self.latent_cache]
        started = time.perf_counter()
        for start in range(0, len(todo), group):
            part = todo[start : start + group]
            if variant is None:  # K cached augmentation draws: every draw of every sample
                for v in range(self.settings.augment_variants):
                    self.encode(part, [v] * len(part))
            else:
                self.encode(part)
            done = min(start + group, len(todo))
            if done == len(todo) or start // group % 10 == 9:
                progress(f"[train] latent cache: {done}/{len(todo)} samples encoded "
                         f"({time.perf_counter() - started:.0f} s)")
        return len(todo)

    def clean_latents(
        self, indices: Sequence[int], variants: Sequence[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x0 with proprio, action chunk, future proprio and value injected, and the text
        embeddings ``[B, L, D]``."""
        latents = self.encode(indices, variants).to(self.device)  # the injections run where the model does
        samples = [self.dataset.sample(int(i), with_images=False) for i in indices]
        stats, layout = self.stats, self.layout
        batch = len(samples)

        def vec(values: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.asarray(values, np.float64).reshape(batch, -1)).float().to(self.device)

        if layout.has_kind("proprio"):
            current = np.stack([s.joint_positions for s in samples])
            latents = inject(latents, layout.index_of_kind("proprio"), vec(stats.normalize_proprio(current)))
        if layout.has_kind("proprio", future=True):
            future = np.stack([s.future_joint_positions for s in samples])
            latents = inject(latents, layout.index_of_kind("proprio", future=True), vec(stats.normalize_proprio(future)))
        actions = stats.normalize_actions(np.stack([s.actions for s in samples]))
        latents = inject(latents, layout.index_of_kind("action"), vec(actions))
        values = stats.normalize_value(np.array([s.value for s in samples]))
        latents = inject(latents, layout.index_of_kind("value"), vec(values))
        texts = []
        for s in samples:
            emb = self.checkpoint.text_embeddings[s.task].float()
            texts.append(torch.nn.functional.pad(emb, (0, 0, 0, self._text_len - emb.shape[0])))
        return latents, torch.stack(texts)

    # ------------------------------------------------------------------ objective
    def _forward(
        self, x0: torch.Tensor, text: torch.Tensor, modes: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dev = self.device
        x0, text, sigma, noise = x0.to(dev), text.to(dev), sigma.to(dev), noise.to(dev)
        cond = self._cond[modes].to(dev)  # [B, T]
        cond5 = cond[:, None, :, None, None]
        x_t = torch.where(cond5, x0, x0 + sigma[:, None, None, None, None] * noise)
        sigma_frames = torch.where(
            cond, torch.full_like(cond, self.config.sampler.sigma_conditional, dtype=torch.float32), sigma[:, None]
        )
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            x0_pred = self.model(x_t, sigma_frames, cond.float(), text)
        return generated_frame_loss(x0_pred, x0, self._loss_frames[modes].to(dev), sigma)

    def lr_at(self, step: int) -> float:
        schedule = self.settings.schedule
        return self.settings.lr * (schedule(step) if schedule is not None else 1.0)

    def train_step(self) -> StepResult:
        """One optimizer step over ``grad_accum`` micro-batches."""
        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        accum = self.settings.grad_accum
        sums = torch.zeros(len(MODES), 3, dtype=torch.float64)
        for micro in range(accum):
            batch = self.draw_batch()
            x0, text = self.clean_latents(batch["indices"].tolist(), batch["variants"].tolist())
            per_sample, count = self._forward(x0, text, batch["modes"], batch["sigma"], batch["noise"])
            loss = self.settings.loss_scale * per_sample.sum() / x0.numel() / accum
            last = micro == accum - 1
            sync = contextlib.nullcontext() if last or self.model is self.network else self.model.no_sync()
            with sync:
                loss.backward()
            for m in range(len(MODES)):
                sel = batch["modes"] == m
                sums[m, 0] += per_sample.detach().cpu()[sel].double().sum()
                sums[m, 1] += count.detach().cpu()[sel].double().sum()
            sums[0, 2] += loss.detach().double().cpu()
        grads = [p.grad for p in self.network.parameters() if p.grad is not None]
        # one device sync for the common all-finite case, a count only when needed
        finite = bool(torch.stack([torch.linalg.vector_norm(g) for g in grads]).isfinite().all()) if grads else True
        nonfinite = 0 if finite else int(sum(int((~torch.isfinite(g)).sum()) for g in grads))
        if nonfinite:
            for g in grads:
                torch.nan_to_num_(g, nan=0.0, posinf=0.0, neginf=0.0)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.settings.grad_clip)
        self.optimizer.step()
        self.step += 1
        if self.world_size > 1:
            import torch.distributed as dist

            reduced = sums.to(self.device)
            dist.all_reduce(reduced)
            sums = reduced.cpu()
            sums[0, 2] /= self.world_size
        return StepResult(
            step=self.step, loss=float(sums[0, 2]), grad_norm=float(grad_norm), lr=lr,
            objective_sums={m: (float(sums[i, 0]), float(sums[i, 1])) for i, m in enumerate(MODES)},
            nonfinite_grads=nonfinite,
        )

    def fit_total_steps(self, total: int) -> int:
        """Fix the run's length at ``total`` optimizer steps (a time-budgeted run); the
        schedule's decay then ends there. Kept in the training state for a resumed run."""
        self.total_steps = int(total)
        schedule = self.settings.schedule
        if schedule is not None:
            decay = max(self.total_steps, schedule.warmup_steps + 1)
            self.settings = replace(self.settings, schedule=replace(schedule, decay_steps=decay))
        return self.total_steps

    @torch.no_grad()
    def eval_losses(
        self, indices: Sequence[int], sigmas: Sequence[float] = (0.5, 2.0, 8.0, 32.0), seed: int = 1234
    ) -> dict[str, float]:
        """Per objective, the weighted loss on the loss frames of ``indices`` at fixed noise
        levels, a fixed noise draw and no augmentation (no RNG state is touched):
        comparable across steps."""
        was_training = self.network.training
        self.network.eval()
        x0, text = self.clean_latents(list(indices))
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn(x0.shape, generator=gen)
        result = {}
        for m, mode in enumerate(MODES):
            total = elements = 0.0
            for sigma in sigmas:
                modes = torch.full((len(indices),), m, dtype=torch.long)
                s, c = self._forward(x0, text, modes, torch.full((len(indices),), float(sigma)), noise)
                total += float(s.sum())
                elements += float(c.sum())
            result[mode] = total / elements
        self.network.train(was_training)
        return result

    # ------------------------------------------------------------------ saving
    def save(self, out_dir: str | Path) -> None:
        """Write the checkpoint folder (swapped in whole) and the training state next to it."""
        out_dir = Path(out_dir)
        tmp = out_dir.parent / f".{out_dir.name}.saving"
        old = out_dir.parent / f".{out_dir.name}.old"
        for stale in (tmp, old):
            if stale.exists():
                shutil.rmtree(stale)
        ckpt = self.checkpoint
        CosmosCheckpoint(
            config=ckpt.config, transformer=self.network.transformer, vae=ckpt.vae, stats=self.stats,
            text_embeddings=ckpt.text_embeddings,
        ).save_pretrained(tmp)
        log = out_dir / LOG_FILE
        if log.exists():
            shutil.copy2(log, tmp / LOG_FILE)
        if out_dir.exists():
            out_dir.rename(old)
        tmp.rename(out_dir)
        if old.exists():
            shutil.rmtree(old)
        state = {
            "format": STATE_FORMAT,
            "step": self.step,
            "total_steps": self.total_steps,
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "settings": asdict(self.settings),
            "world_size": self.world_size,
        }
        path = training_state_path(out_dir)
        torch.save(state, path.with_suffix(".tmp"))
        os.replace(path.with_suffix(".tmp"), path)

    def load_state(self, out_dir: str | Path) -> None:
        path = training_state_path(out_dir)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no training state to resume from (written next to --out by a previous run)")
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"{path}: field 'format' = {state.get('format')}, expected {STATE_FORMAT}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.step = int(state["step"])
        if state.get("total_steps"):
            self.fit_total_steps(int(state["total_steps"]))
        saved = state["settings"]
        saved_batch = (saved["batch_size"] * state["world_size"], saved["grad_accum"])
        batch = (self.settings.batch_size * self.world_size, self.settings.grad_accum)
        if saved_batch != batch and self.rank == 0:
            print(f"[train] note: resuming with global batch x accumulation {batch} (saved run used {saved_batch}); "
                  "the sample order differs from an uninterrupted run", file=sys.stderr)


