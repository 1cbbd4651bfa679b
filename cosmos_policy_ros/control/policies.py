"""Build the `Policy` named by the robot YAML's `policy` section.

Types: `scripted_transfer_cube` (sim expert), `replay` (ALOHA HDF5 episode),
`cosmos` (a checkpoint folder or a released hub id, torch or ONNX Runtime denoiser).
"""
from __future__ import annotations

from pathlib import Path

from cosmos_policy_ros.config import ConfigError, RobotConfig
from cosmos_policy_ros.types import Policy


def default_checkpoint() -> Path:
    """The tiny random Cosmos checkpoint the package ships (runs, does not solve tasks)."""
    from cosmos_policy_ros.model.checkpoint import shipped_checkpoint

    return shipped_checkpoint("tiny_cosmos")


def policy_control_period_s(policy, default_s: float) -> float:
    """A chunk's step period is the policy's (a checkpoint's control rate), else the robot's."""
    period = getattr(policy, "control_period_s", None)
    if period:
        return float(period)
    rate = getattr(getattr(policy, "config", None), "control_rate_hz", None)
    return 1.0 / float(rate) if rate else default_s


def make_policy(config: RobotConfig) -> Policy:
    """The policy of ``policy.type``; wrapped in collection-only action noise when
    ``collection.action_noise_rad`` > 0 (rollout collection), never otherwise."""
    from cosmos_policy_ros.control.action_noise import with_action_noise

    return with_action_noise(_make_policy(config), config)


def _make_policy(config: RobotConfig) -> Policy:
    section = config.policy
    where = f"{config.path}: policy"
    if section.type == "scripted_transfer_cube":
        from cosmos_policy_ros.sim.scripted import ScriptedTransferCubeExpert

        if config.dof != 14:
            raise ConfigError(f"{where}.type: the transfer-cube expert drives the 14 ALOHA joints, config has {config.dof}")
        return ScriptedTransferCubeExpert(horizon=section.horizon, control_period_s=config.control_period_s)
    if section.type == "replay":
        from cosmos_policy_ros.control.replay import ReplayPolicy

        if not section.replay_episode:
            raise ConfigError(f"{where}.replay_episode: an ALOHA HDF5 episode file is required for type 'replay'")
        return ReplayPolicy(section.replay_episode, config.control_period_s, section.horizon)
    checkpoint = section.checkpoint or str(default_checkpoint())
    return make_cosmos_policy(checkpoint, section.backend, section.seed, config,
                              decode_future_images=section.decode_future_images, compile=section.compile)


def make_cosmos_policy(checkpoint: str, backend: str, seed: int | None, config: RobotConfig | None = None,
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
        check_checkpoint_matches_robot(policy.config, config, checkpoint)
    return policy


def check_checkpoint_matches_robot(checkpoint_config, config: RobotConfig, checkpoint: str) -> None:
    """Refuse a checkpoint whose joints, cameras or image size the robot YAML cannot feed,
    naming both sides: joint names must be equal, every checkpoint camera must be one of
    the YAML's cameras, and the image size must not exceed the sim's rendered frames."""
    names = tuple(getattr(checkpoint_config, "joint_names", ()) or ())
    if names and names != config.joint_names:
        raise ConfigError(f"checkpoint {checkpoint} was trained for joints {list(names)}, "
                          f"{config.path} has {list(config.joint_names)}")
    cameras = tuple(getattr(checkpoint_config, "camera_names", ()) or ())
    robot_cameras = [c.name for c in config.cameras]
    missing = [c for c in cameras if c not in robot_cameras]
    if missing:
        raise ConfigError(f"checkpoint {checkpoint} needs cameras {list(cameras)}; {config.path} cameras are "
                          f"{robot_cameras} (missing {missing})")
    image_size = getattr(checkpoint_config, "image_size", None)
    sim = config.raw.get("sim")  # only a sim renders frames of a size the config knows
    if image_size and sim:
        smallest = min(config.sim.image_height, config.sim.image_width)
        if int(image_size) > smallest:
            raise ConfigError(f"checkpoint {checkpoint} has image_size {image_size}; {config.path} sim.image_height/"
                              f"image_width render {config.sim.image_height}x{config.sim.image_width} "
                              "(upscaling refused)")
