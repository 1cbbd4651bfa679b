"""The shipped embedded checkpoint (`make embedded-model`, then fine-tuned on a GPU) solves the task on
held-out seeds (not among its demonstrations), which a random model never does (it does not
touch the cube), so an inference regression fails here. In-process: the sim stepped by the
executor's logic, a chunk asked for whenever the executor has none."""
import numpy as np
import pytest
import torch

from cosmos_policy_ros.config import load_config
from cosmos_policy_ros.learning.offline_eval import closed_loop
from cosmos_policy_ros.model.checkpoint import shipped_checkpoint
from cosmos_policy_ros.model.cosmos_policy import CosmosPolicy

# Measured when it was shipped (session 11, through the ROS graph, seeds 100000-100019): max
# reward 4, 1, 1, 2, 4, 2, 4, 4, 4, 1, ... of 4 (4: transferred); 10/20 successes, 4 of them in
# the first 8 seeds here (see README, "The embedded model"). The thresholds leave room for other CPUs' rounding.
SEEDS = tuple(range(100000, 100008))


@pytest.fixture(scope="module")
def policy():
    torch.set_num_threads(2)
    return CosmosPolicy.from_pretrained(shipped_checkpoint("aloha_sim_transfer_cube"), device="cpu",
                                        decode_future_images=False)


def test_checkpoint_is_the_top_camera_recipe(policy):
    assert policy.config.camera_names == ("cam_high",) and policy.config.image_size == 64
    assert policy.config.control_rate_hz == 25.0 and policy.config.chunk_size == 25


def test_held_out_episodes_transfer_the_cube(policy):
    results = closed_loop(policy, list(SEEDS), load_config("aloha"), progress=lambda line: None)
    rewards = [r["max_reward"] for r in results]
    # reward 1: the right gripper touches the cube, 2: lifts it, 3: both touch it, 4: the left
    # one holds it alone (success). A random model stays at 0.
    assert sum(r["success"] for r in results) >= 2 and sum(rewards) >= 12, rewards


def test_first_chunk_moves_toward_the_demonstrated_grasp(policy):
    """The first chunk of a held-out seed is closer to the expert's first chunk than holding still."""
    from cosmos_policy_ros.learning.demos import run_expert_episode
    from cosmos_policy_ros.sim.aloha_sim import AlohaSim

    config = load_config("aloha")
    sim = AlohaSim(config.sim.task)
    try:
        expert = run_expert_episode(sim, config, SEEDS[0], 2.0, cameras={"cam_high": "top"})
    finally:
        sim.close()
    from cosmos_policy_ros.types import Observation

    obs = Observation(stamp_ns=0, images={"cam_high": expert.images["cam_high"][0]},
                      joint_positions=expert.qpos[0], task="transfer the cube")
    chunk = policy.infer(obs).actions  # [25, 14] at 25 Hz: expert steps 0, 2, 4, ... at 50 Hz
    target = expert.action[: 2 * len(chunk): 2]
    n = min(len(chunk), len(target))
    assert np.abs(chunk[:n] - target[:n]).mean() < 0.5 * np.abs(expert.qpos[0] - target[:n]).mean()
