"""The sampler: NVIDIA's second-order multistep solver ("2ab", Adams-Bashforth in
log-sigma) on a Karras sigma schedule in EDM sigma space, with clean conditioning frames.

It owns the noise schedule, the solver arithmetic (float64, as the official sampler),
the initial noise and the rule that conditioning frames are clean and never change.
It knows nothing about networks: it calls any ``Denoiser`` (see ``denoiser.py``), so
the torch and the ONNX Runtime backends share this code.

Step counting follows Cosmos Policy: ``num_steps`` network evaluations in total. For
``num_steps > 2`` the schedule has ``num_steps`` sigmas from sigma_max down to sigma_min,
the solver takes ``num_steps - 1`` steps and a last evaluation at sigma_min returns x0;
for ``num_steps`` 1 and 2 the x0 prediction at sigma_max is returned (the official sampler
lowers 2 to 1 and then takes its one-step branch, so "2 steps" is one evaluation there).

Each sample of a batch may have its own step count (``num_steps`` a sequence): the
network takes a noise level per sample, so at evaluation k every sample that still has
an evaluation k left goes through one shared forward pass, each at its own sigma, and
each sample's arithmetic is the same as in a batch of its own schedule.

Initial noise is architecture invariant (numpy ``RandomState(seed).standard_normal``,
float32), the same draw the official ``arch_invariant_rand`` makes, so a seed gives the
same noise on CPU and GPU and matches the official code. The official deployment draws
each sample alone (shape ``[1, C, T, h, w]``) with its own seed; ``seeded_noise`` does that
for a list of seeds.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .denoiser import Denoiser


@dataclass(frozen=True)
class SamplerConfig:
    """Noise schedule of the checkpoint (Cosmos Policy inference: sigma 80 -> 4, rho 7)."""

    sigma_min: float = 4.0
    sigma_max: float = 80.0
    rho: float = 7.0
    sigma_conditional: float = 0.0  # noise level the network is told for condition frames
    solver: str = "2ab"

    def __post_init__(self) -> None:
        if not 0.0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"sampler: need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        if self.solver != "2ab":
            raise ValueError(f"sampler: solver {self.solver!r} not supported, expected '2ab'")
        if self.sigma_conditional < 0:
            raise ValueError("sampler: sigma_conditional must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def karras_sigmas(num_intervals: int, sigma_min: float, sigma_max: float, rho: float) -> list[float]:
    """``num_intervals + 1`` sigmas from sigma_max to sigma_min, evenly spaced in sigma^(1/rho)."""
    if num_intervals < 1:
        raise ValueError("karras_sigmas: need at least one interval")
    hi, lo = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    return [(hi + i / num_intervals * (lo - hi)) ** rho for i in range(num_intervals + 1)]


def initial_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Unit Gaussian noise, identical for a seed on every device (float32)."""
    return torch.from_numpy(np.random.RandomState(seed).standard_normal(shape).astype(np.float32))


def seeded_noise(sample_shape: tuple[int, ...], seeds: Sequence[int]) -> torch.Tensor:
    """``[len(seeds), *sample_shape]``: sample k is ``initial_noise((1, *sample_shape), seeds[k])``."""
    cache: dict[int, torch.Tensor] = {}
    for seed in seeds:
        if seed not in cache:
            cache[seed] = initial_noise((1, *sample_shape), int(seed))
    return torch.cat([cache[seed] for seed in seeds])


def num_evaluations(num_steps: int) -> int:
    """Network evaluations the official sampler makes when asked for ``num_steps``."""
    return 1 if num_steps <= 2 else num_steps


def _euler_step(x_s: torch.Tensor, x0_s: torch.Tensor, s: float, t: float) -> torch.Tensor:
    # Exact for a constant x0 along the ray x = x0 + sigma * eps.
    return (s - t) / s * x0_s + (t / s) * x_s


def _ab2_step(
    x_s: torch.Tensor, x0_s: torch.Tensor, s: float, t: float, x0_prev: torch.Tensor, s_prev: float
) -> torch.Tensor:
    """Second-order exponential Adams-Bashforth step in lambda = -log(sigma), using the
    current and the previous x0 predictions (Zhang & Chen's multistep, as in Cosmos)."""
    lam_s, lam_t, lam_prev = -math.log(s), -math.log(t), -math.log(s_prev)
    h = lam_t - lam_s
    ratio = (lam_prev - lam_s) / h
    phi1 = math.expm1(-h) / (-h)
    phi2 = (phi1 - 1.0) / (-h)
    w_prev = phi2 / ratio
    w_cur = phi1 - w_prev
    return math.exp(-h) * x_s + h * (w_cur * x0_s + w_prev * x0_prev)


class MultistepSampler:
    """Samples latents ``[B, C, T, h, w]`` given clean latents and condition frames."""

    def __init__(self, config: SamplerConfig | None = None) -> None:
        self.config = config or SamplerConfig()

    def sigmas(self, num_steps: int) -> list[float]:
        """The noise levels of the ``num_evaluations(num_steps)`` network evaluations."""
        cfg = self.config
        if num_evaluations(num_steps) == 1:
            return [cfg.sigma_max]
        return karras_sigmas(num_steps - 1, cfg.sigma_min, cfg.sigma_max, cfg.rho)

    @torch.no_grad()
    def sample(
        self,
        denoiser: Denoiser,
        clean_latents: torch.Tensor,
        condition_frames: torch.Tensor,
        text_embedding: torch.Tensor,
        num_steps: int | Sequence[int],
        noise: torch.Tensor,
        callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
    ) -> torch.Tensor:
        """Run the solver and return x0 ``[B, C, T, h, w]`` (float32).

        clean_latents: ``[B, C, T, h, w]`` values of the condition frames (other frames
            are ignored).
        condition_frames: ``[T]`` or ``[B, T]`` bool, True for clean condition frames;
            these come back bit-identical to ``clean_latents``.
        text_embedding: ``[B, L, D]``.
        num_steps: one step count for the batch, or one per sample (``[B]``).
        noise: ``[B, C, T, h, w]`` unit Gaussian (see ``initial_noise``).
        callback: called as ``callback(eval_index, sigma [b], x_t [b, ...])`` before each
            network call, with the b samples that take part in it.
        """
        batch, _, frames = clean_latents.shape[:3]
        steps = [int(num_steps)] * batch if isinstance(num_steps, int) else [int(n) for n in num_steps]
        if len(steps) != batch:
            raise ValueError(f"num_steps has {len(steps)} entries for a batch of {batch}")
        if any(n < 1 for n in steps):
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        if noise.shape != clean_latents.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} != latents shape {tuple(clean_latents.shape)}")
        device = clean_latents.device
        cond = condition_frames.to(device=device, dtype=torch.bool)
        if cond.ndim == 1:
            cond = cond.unsqueeze(0).expand(batch, frames)
        if cond.shape != (batch, frames):
            raise ValueError(f"condition_frames shape {tuple(cond.shape)} != (batch, frames) {(batch, frames)}")
        if text_embedding.shape[0] != batch:
            text_embedding = text_embedding.expand(batch, -1, -1)
        cond_5d = cond[:, None, :, None, None]
        clean = clean_latents.to(torch.float32)
        sigma_cond = torch.full((batch, frames), self.config.sigma_conditional, device=device)

        # Samples that share a step count share a schedule and update together.
        schedules = {n: self.sigmas(n) for n in set(steps)}
        groups = {n: [b for b in range(batch) if steps[b] == n] for n in schedules}
        x = (noise.to(device=device, dtype=torch.float32) * self.config.sigma_max).to(torch.float64)
        x0_prev = torch.zeros_like(x)
        result = torch.empty_like(clean)
        for k in range(max(len(sigmas) for sigmas in schedules.values())):
            active = [n for n in schedules if k < len(schedules[n])]
            members = [b for n in active for b in groups[n]]
            index = torch.tensor(members, device=device)
            sigma = torch.tensor([schedules[n][k] for n in active for _ in groups[n]], dtype=torch.float32,
                                 device=device)
            x_in = torch.where(cond_5d[index], clean[index], x[index].to(torch.float32))
            if callback is not None:
                callback(k, sigma, x_in)
            sigma_frames = torch.where(cond[index], sigma_cond[index], sigma[:, None].expand(-1, frames))
            x0 = denoiser(x_in, sigma_frames, cond[index].to(torch.float32), text_embedding[index])
            x0 = torch.where(cond_5d[index], clean[index], x0.to(torch.float32)).to(torch.float64)
            offset = 0
            for n in active:
                rows = slice(offset, offset + len(groups[n]))
                at = torch.tensor(groups[n], device=device)
                offset += len(groups[n])
                sigmas = schedules[n]
                if k == len(sigmas) - 1:
                    result[at] = x0[rows].to(torch.float32)
                    continue
                s, t = sigmas[k], sigmas[k + 1]
                if k == 0:
                    x[at] = _euler_step(x[at], x0[rows], s, t)
                else:
                    x[at] = _ab2_step(x[at], x0[rows], s, t, x0_prev[at], sigmas[k - 1])
                x0_prev[at] = x0[rows]
        return result
