"""Build the `Policy` named by the robot YAML's `policy` section.

Types: `scripted_transfer_cube` (sim expert), `replay` (ALOHA HDF5 episode),
`cosmos` (a checkpoint folder or a released hub id, torch or ONNX Runtime denoiser).
"""
from __future__ import annotations

from pathlib import Path

from cosmos_policy_ros.config import ConfigError, RobotConfig
from cosmos_policy_ros.types import Policy

POLICY_TYPES = ("scripted_transfer_cube", "replay", "cosmos")


def default_checkpoint() -> Path:
    """The tiny random Cosmos checkpoint the package ships (runs, does not solve tasks)."""
    from cosmos_policy_ros.model.checkpoint import shipped_checkpoint

    return shipped_checkpoint("tiny_cosmos")


def make_policy(config: RobotConfig) -> Policy:
    section = config.section("policy")
    kind = str(section.get("type", "scripted_transfer_cube"))
    horizon = int(section.get("horizon", 50))
    where = f"{config.path}: policy"
    if kind == "scripted_transfer_cube":
        from cosmos_policy_ros.sim.scripted import ScriptedTransferCubeExpert

        if config.dof != 14:
            raise ConfigError(f"{where}.type: the transfer-cube expert drives the 14 ALOHA joints, config has {config.dof}")
        return ScriptedTransferCubeExpert(horizon=horizon, control_period_s=config.control_period_s)
    if kind == "replay":
        from cosmos_policy_ros.control.replay import ReplayPolicy

        episode = str(section.get("replay_episode", ""))
        if not episode:
            raise ConfigError(f"{where}.replay_episode: an ALOHA HDF5 episode file is required for type 'replay'")
        return ReplayPolicy(episode, config.control_period_s, horizon)
    if kind == "cosmos":
        checkpoint = str(section.get("checkpoint", "")) or str(default_checkpoint())
        backend = str(section.get("backend", "torch"))
        seed = int(section.get("seed", 0))
        return make_cosmos_policy(checkpoint, backend, seed, config,
                                  decode_future_images=bool(section.get("decode_future_images", False)),
                                  compile=section.get("compile"))
    raise ConfigError(f"{where}.type: expected one of {POLICY_TYPES}, got {kind!r}")


def make_cosmos_policy(checkpoint: str, backend: str, seed: int, config: RobotConfig | None = None,
                       decode_future_images: bool = False, compile: bool | str | None = None):
    """Decoding predicted future frames costs more than the denoising of a tiny model on a
    CPU; the policy node does not publish them (the planner's imagination topic does).
    ``checkpoint`` may be a released hub id (converted once into the cache, ``model/hub.py``);
    ``compile``: ``policy.compile`` ('auto', the default: compile the torch denoiser on CUDA)."""
    from cosmos_policy_ros.model.cosmos_policy import CosmosPolicy
    from cosmos_policy_ros.model.denoiser import COMPILE_DEFAULT, compile_enabled
    from cosmos_policy_ros.model.hub import HubError, resolve_checkpoint

    compile = COMPILE_DEFAULT if compile is None else compile
    try:
        compile_enabled(compile, "cpu", where="policy.compile")
        checkpoint = str(resolve_checkpoint(checkpoint))
    except (ValueError, HubError) as err:
        raise ConfigError(f"{config.path if config else 'config'}: {err}") from err
    if not Path(checkpoint).is_dir():
        raise ConfigError(f"policy.checkpoint: {checkpoint!r} is not a checkpoint folder "
                          "(create one with `cosmos-policy-ros make-tiny-checkpoint` or `convert-checkpoint`)")
    if backend == "torch":
        policy = CosmosPolicy.from_pretrained(checkpoint, seed=seed, decode_future_images=decode_future_images,
                                              compile=compile)
    elif backend == "onnx":
        from cosmos_policy_ros.model.onnx_backend import make_onnx_policy

        policy = make_onnx_policy(checkpoint, seed=seed)
        policy.decode_future_images = decode_future_images
    else:
        raise ConfigError(f"policy.backend: expected 'torch' or 'onnx', got {backend!r}")
    if config is not None:
        names = tuple(policy.config.joint_names) if hasattr(policy.config, "joint_names") else None
        if names and tuple(names) != config.joint_names:
            raise ConfigError(f"checkpoint {checkpoint} was trained for joints {list(names)}, "
                              f"{config.path} has {list(config.joint_names)}")
    return policy
