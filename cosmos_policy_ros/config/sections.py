"""One frozen settings class per section of the robot YAML: every key's type, default and
check in one place (see config/aloha.yaml for what each key means), and the topic names the
package's own nodes exchange."""
from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from cosmos_policy_ros.config.robot import RobotConfig

from cosmos_policy_ros.config.validation import (
    _is_device,
    _non_negative,
    _positive,
    setting,
)

# ------------------------------------------------------------------------ graph topics
# Relative names of the topics the package's own nodes exchange (remap them, never edit).
ACTION_CHUNK_TOPIC = "action_chunk"          # policy_node -> chunk_executor_node (ActionChunk)
EXECUTED_COMMAND_TOPIC = "executed_command"  # chunk_executor_node: the command sent each tick
EPISODE_EVENTS_TOPIC = "episode_events"      # EpisodeEvent: START / STOP / LABEL
SIM_OBJECT_POSE_TOPIC = "sim/object_pose"    # sim_node: privileged object pose (scripted expert)
SIM_REWARD_TOPIC = "sim/reward"              # sim_node: the task's reward
EXECUTOR_EXECUTING_TOPIC = "executor/executing"  # sim eval mode: ticks commanded from a chunk


@dataclass(frozen=True)
class ObservationSettings:
    """``observation:`` how far apart the messages of one observation may be."""

    max_skew_s: float = setting(0.1, _positive, "seconds > 0")  # newest minus oldest message
    max_age_s: float = setting(0.5, _positive, "seconds > 0")  # now minus oldest message
    # latest: the newest joint state with the newest frames (what the training data pairs);
    # nearest_frame: the joint sample nearest to the newest required frame
    joint_sample: Literal["latest", "nearest_frame"] = "latest"


@dataclass(frozen=True)
class LimitsSettings:
    """``limits:`` per joint (joint_names order), or one number for every joint; checked
    against the joints by ``control.safety.JointLimits``."""

    lower: tuple[float, ...] | float
    upper: tuple[float, ...] | float
    max_step_per_tick: tuple[float, ...] | float


@dataclass(frozen=True)
class ExecutionSettings:
    """``execution:`` how the chunk executor switches, blends and refuses chunks."""

    blend_ticks: int = setting(5, _non_negative, "an integer >= 0")
    # Refuse chunks computed from older observations (must exceed planning.deadline_s).
    max_chunk_age_s: float = setting(2.0, _positive, "seconds > 0")
    max_future_s: float = setting(0.05, _non_negative, "seconds >= 0")
    start_enabled: bool = True
    keep_command_on_resync: tuple[str, ...] = ()


GripperUnit = Literal["normalized", "finger_m", "motor_rad"]
GRIPPER_UNITS = typing.get_args(GripperUnit)


@dataclass(frozen=True)
class OutputSettings:
    """``output:`` how commands reach the arm controllers."""

    adapter: Literal["position", "trajectory", "interbotix"] = "position"
    gripper_unit: GripperUnit = "normalized"
    # interbotix: set the grippers' current_based_position mode at start-up through the driver's
    # set_operating_modes service ("set"), or trust it was set ("assume").
    interbotix_gripper_mode: Literal["set", "assume"] = "set"
    interbotix_service_timeout_s: float = setting(10.0, _positive, "seconds > 0")


PolicyType = Literal["scripted_transfer_cube", "replay", "cosmos"]
POLICY_TYPES = typing.get_args(PolicyType)


@dataclass(frozen=True)
class PolicySettings:
    """``policy:`` which policy the policy node runs and when it asks for the next chunk."""

    type: PolicyType = "scripted_transfer_cube"
    checkpoint: str = ""  # cosmos: checkpoint folder ("" = the shipped default)
    backend: Literal["torch", "onnx"] = "torch"
    decode_future_images: bool = False
    replay_episode: str = ""
    task: str = ""
    seed: int | None = None  # None: the checkpoint's own seed (converted ALOHA: 195)
    horizon: int = setting(50, _positive, "an integer >= 1")  # steps per chunk, non-model policies
    # torch.compile the denoiser: auto (on CUDA only) | true | false
    compile: Literal["auto", "true", "false"] | bool = "auto"
    trigger: Literal["overlapped", "blocking", "adaptive"] = "adaptive"
    trigger_margin_s: float = setting(0.1, _non_negative, "seconds >= 0")


Aggregation = Literal["majority_mean", "mean", "lcb", "success_vote"]
PLANNING_AGGREGATIONS = typing.get_args(Aggregation)
EnsembleSteps = Literal["linspace", "full"]
ENSEMBLE_STEPS = typing.get_args(EnsembleSteps)
# The official ensemble threshold: a value prediction above it counts as "predicts success".
DEFAULT_SUCCESS_THRESHOLD = 0.05


def _num_steps_ok(steps: dict[str, int]) -> bool:
    return all(k in ("world_model", "value") and v >= 1 for k, v in steps.items())


@dataclass(frozen=True)
class PlanningSettings:
    """``planning:`` best-of-N planning (see config/aloha.yaml for the meaning of each key)."""

    enabled: bool = False
    num_candidates: int = setting(8, _positive, "an integer >= 1")
    # Candidates 1..N-1 moved by one Gaussian offset per arm joint (std, rad); 0: the policy's own samples.
    candidate_noise_rad: float = setting(0.0, _non_negative, "radians >= 0")
    # planner_node refuses requests with more candidates (N x ensemble must fit the device)
    max_candidates: int = setting(16, _positive, "an integer >= 1")
    deadline_s: float = setting(5.0, _positive, "seconds > 0")
    request_topic: str = setting("planner/request", bool, "a topic name")
    result_topic: str = setting("planner/result", bool, "a topic name")
    decision_topic: str = setting("planning/decision", bool, "a topic name")
    imagination_topic: str = setting("planner/imagination", bool, "a topic prefix")
    publish_imagination: bool = True
    checkpoint: str = ""
    num_future_samples: int = setting(3, _positive, "an integer >= 1")
    num_value_samples: int = setting(5, _positive, "an integer >= 1")
    aggregation: Aggregation = "majority_mean"
    success_threshold: float = setting(DEFAULT_SUCCESS_THRESHOLD, lambda v: 0 <= v < 1, "a value in [0, 1)")
    search_depth: int = setting(1, lambda v: v == 1, "1 (depth > 1 search is not implemented yet)")
    num_steps: dict[str, int] = setting({}, _num_steps_ok, "a mapping with world_model / value step counts "
                                        ">= 1 (empty: the checkpoint's)", mutable=True)
    max_batch_size: int = setting(0, _non_negative, "an integer >= 0 (0: no limit)")
    seed: int | None = setting(None, lambda v: v is None or v >= 0,
                               "an integer >= 0 or null (the planning checkpoint's seed; converted ALOHA: 195)")
    # Ensemble member step counts: "linspace" as the official ALOHA planner (world model 1, 3, 5;
    # value 1..5 steps), "full": every member at the checkpoint's count.
    ensemble_steps: EnsembleSteps = "linspace"
    compile: Literal["auto", "true", "false"] | bool = "auto"  # torch.compile the planning model's denoiser
    # One planning model replica per device; candidates are split across them (empty: the default device).
    devices: tuple[str, ...] = setting((), lambda d: all(_is_device(x) for x in d) and len(set(d)) == len(d),
                                       "a list of distinct torch devices such as [cuda:0, cuda:1] "
                                       "(empty: the default device)")

    def __post_init__(self) -> None:
        if self.num_candidates > self.max_candidates:
            raise ValueError(f"planning.num_candidates: {self.num_candidates} is more than planning.max_candidates "
                             f"= {self.max_candidates}; the planner would refuse every request")

    @classmethod
    def from_config(cls, config: "RobotConfig") -> "PlanningSettings":
        return config.planning

    def checkpoint_path(self) -> Path:
        from cosmos_policy_ros.model.checkpoint import shipped_checkpoint

        return Path(self.checkpoint) if self.checkpoint else shipped_checkpoint("tiny_cosmos_planning")


@dataclass(frozen=True)
class SimSettings:
    """``sim:`` the MuJoCo ALOHA simulation behind the robot's topics (sim_node)."""

    task: Literal["transfer_cube", "insertion"] = "transfer_cube"
    num_episodes: int = setting(1, _non_negative, "an integer >= 0 (0: forever)")
    seed: int = 0  # seed of the first episode; episode k uses seed + k
    camera_rate_hz: float = setting(5.0, _positive, "a rate in Hz > 0")
    image_height: int = setting(240, _positive, "pixels > 0")
    image_width: int = setting(320, _positive, "pixels > 0")
    real_time_factor: float = setting(1.0, _positive, "a factor > 0")
    episode_length_s: float = setting(8.0, _positive, "seconds > 0")
    mujoco_cameras: dict[str, str] = setting({}, mutable=True)  # robot camera name -> MuJoCo camera
    lockstep: bool = True
    lockstep_timeout_s: float = setting(0.25, _positive, "seconds > 0")
    wait_for_graph_s: float = setting(60.0, _positive, "seconds > 0")
    # Eval mode: sim time stops while the executor has no chunk to run, so compute time cannot
    # change an episode's outcome (use with policy.trigger: blocking, which `eval` sets).
    eval_mode: bool = False
    eval_max_wait_s: float = setting(120.0, _positive, "seconds > 0")  # longest wall wait for a chunk


@dataclass(frozen=True)
class CollectionSettings:
    """``collection:`` perturbations for rollout collection only (``collect-rollouts`` sets
    them in its own copy of the YAML): a policy that never fails teaches a value function
    nothing about failure. Off by default; off, nothing of them runs."""

    # Std (rad) of one Gaussian offset per chunk and arm joint added to the policy's chunks
    # (grippers untouched); 0: the policy's chunks unchanged (no wrapper is built).
    action_noise_rad: float = setting(0.0, _non_negative, "radians >= 0")
    # Seed of the action noise (episode k of a run draws from (noise_seed, k)).
    noise_seed: int = setting(0, _non_negative, "an integer >= 0")
    # The sim's initial object ranges scaled about their centre (transfer cube: x 0..0.2 m,
    # y 0.4..0.6 m); 1: gym-aloha's own sampler, bit for bit.
    object_range_scale: float = setting(1.0, lambda v: 0 < v <= 2.5, "a factor in (0, 2.5]")


@dataclass(frozen=True)
class RecordingSettings:
    """``recording:`` where recorder_node writes episode bags."""

    output_dir: str = setting("rollouts", bool, "a folder")
