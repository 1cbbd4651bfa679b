"""Learning-rate schedule of the official Cosmos Policy fine-tuning runs.

The official runs use a two-cycle linear schedule (``LambdaLinearScheduler`` through
``torch.optim.lr_scheduler.LambdaLR``, stepped once per optimizer step, so optimizer
step ``n`` (from 0) runs at ``lr * multiplier(n)``):

- cycle 1, ``n <= decay_steps``: a linear warm-up from ``1e-6`` to 1 over
  ``warmup_steps`` steps, then a linear decay reaching 0.3 at ``n = decay_steps``;
- cycle 2, ``n > decay_steps``: a constant 0.06 (a sharp drop, not a ramp).

ALOHA policy run: warm-up 2000, decay 20000; ALOHA planning-model run (resumed from the
policy checkpoint on rollouts): warm-up 1500, decay 15000.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PLANNING_SCHEDULE", "POLICY_SCHEDULE", "LinearWarmupDecaySchedule"]


@dataclass(frozen=True)
class LinearWarmupDecaySchedule:
    """Learning-rate multiplier per optimizer step (see module docstring)."""

    warmup_steps: int = 2000
    decay_steps: int = 20000
    start: float = 1e-6
    peak: float = 1.0
    end_of_decay: float = 0.3
    after_decay: float = 0.06

    def __post_init__(self) -> None:
        if self.warmup_steps < 0 or self.decay_steps < 1:
            raise ValueError(f"schedule: warmup_steps >= 0 and decay_steps >= 1 expected, got "
                             f"{self.warmup_steps}, {self.decay_steps}")
        if self.warmup_steps >= self.decay_steps:
            raise ValueError(f"schedule: warmup_steps ({self.warmup_steps}) must be shorter than "
                             f"decay_steps ({self.decay_steps}), the length of the first cycle")

    def __call__(self, step: int) -> float:
        if step > self.decay_steps:
            return self.after_decay
        if step < self.warmup_steps:
            return self.start + (self.peak - self.start) * step / self.warmup_steps
        remaining = (self.decay_steps - step) / (self.decay_steps - self.warmup_steps)
        return self.end_of_decay + (self.peak - self.end_of_decay) * remaining


#: The official ALOHA policy run's schedule.
POLICY_SCHEDULE = LinearWarmupDecaySchedule(warmup_steps=2000, decay_steps=20000)
#: The official ALOHA planning-model (world model + V(s')) fine-tune's schedule.
PLANNING_SCHEDULE = LinearWarmupDecaySchedule(warmup_steps=1500, decay_steps=15000)
