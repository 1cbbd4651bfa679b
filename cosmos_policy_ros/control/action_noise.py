"""Action noise for rollout collection: a `Policy` wrapper, built only when
`collection.action_noise_rad` > 0 (the control path never sees it otherwise).

Each chunk gets one Gaussian offset per arm joint (std `action_noise_rad`, radians), the
same for every step of the chunk: a consistently misplaced reach or grasp, which makes a
good policy fail now and then. Grippers are left alone (their unit is an opening, not
radians). The executor blends the seam and clamps to the YAML limits as for any chunk.
Episode k of a run (the k-th `reset`) draws from the generator `(noise_seed, k)`.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from cosmos_policy_ros.config import ConfigError, RobotConfig
from cosmos_policy_ros.types import Observation, Policy, PolicyOutput


class ChunkOffsetNoise:
    """Wraps ``policy``; ``infer`` returns its chunk plus one offset per arm joint."""

    def __init__(self, policy: Policy, std_rad: float, noisy_joints: np.ndarray, seed: int = 0) -> None:
        if not std_rad > 0:
            raise ValueError(f"action noise std must be > 0 rad, got {std_rad}")
        self.policy = policy
        self.std_rad = float(std_rad)
        self.noisy_joints = np.asarray(noisy_joints, dtype=bool)  # [dof]
        self.seed = int(seed)
        self.episode = 0
        self._rng = np.random.default_rng([self.seed, self.episode])

    def reset(self) -> None:
        self.policy.reset()
        self.episode += 1
        self._rng = np.random.default_rng([self.seed, self.episode])

    def infer(self, observation: Observation) -> PolicyOutput:
        output = self.policy.infer(observation)
        actions = np.asarray(output.actions, dtype=np.float64)
        offset = np.where(self.noisy_joints, self._rng.normal(0.0, self.std_rad, actions.shape[-1]), 0.0)
        return dataclasses.replace(output, actions=actions + offset)

    def __getattr__(self, name: str):
        # config, control_period_s, text_embedding, ... of the wrapped policy.
        return getattr(self.policy, name)


def with_action_noise(policy: Policy, config: RobotConfig) -> Policy:
    """``policy`` wrapped in ``ChunkOffsetNoise`` when ``collection.action_noise_rad`` > 0,
    else ``policy`` itself."""
    collection = config.collection
    if collection.action_noise_rad <= 0:
        return policy
    if config.planning.enabled:
        raise ConfigError(f"{config.path}: collection.action_noise_rad applies to the policy's own chunks; "
                          "it cannot be combined with planning.enabled (set one of them off)")
    noisy = np.array([name not in config.gripper_joints for name in config.joint_names])
    return ChunkOffsetNoise(policy, collection.action_noise_rad, noisy, collection.noise_seed)
