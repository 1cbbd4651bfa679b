import h5py
import numpy as np
import pytest

from cosmos_policy_ros.control.output_adapters import adapter_settings, split_command
from cosmos_policy_ros.control.replay import EpisodeFileError, ReplayPolicy
from cosmos_policy_ros.types import Observation


@pytest.fixture(scope="module")
def sim():
    from cosmos_policy_ros.sim.aloha_sim import AlohaSim

    s = AlohaSim("transfer_cube")
    yield s
    s.close()


@pytest.mark.parametrize("seed", [3, 11])
def test_scripted_expert_solves_transfer_cube(sim, seed):
    from cosmos_policy_ros.sim.scripted import ScriptedTransferCubeExpert

    state = sim.reset(seed)
    expert = ScriptedTransferCubeExpert(horizon=50, control_period_s=0.02)
    t_ns = 0
    while state.time_s < 8.0 - 1e-9:
        obs = Observation(t_ns, {}, state.joint_positions, privileged={"object_pose": state.object_pose})
        for action in expert.infer(obs).actions[:25]:  # re-plan every 0.5 s, like the node
            state = sim.step(action)
            t_ns += 20_000_000
    assert state.success, f"seed {seed}: max reward {state.max_reward}"


def test_sim_refuses_bad_command_and_renders(sim):
    with pytest.raises(ValueError, match="14 finite"):
        sim.step(np.full(14, np.nan))
    image = sim.render("top", 48, 64)
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8 and image.std() > 0


def _episode(path, actions, fps=None):
    with h5py.File(path, "w") as f:
        f["action"] = actions
        f["observations/qpos"] = actions
        if fps:
            f.attrs["fps"] = fps


def test_replay_policy_time_indexing(tmp_path):
    actions = np.arange(100 * 14, dtype=np.float64).reshape(100, 14)
    _episode(tmp_path / "ep.hdf5", actions, fps=50)
    policy = ReplayPolicy(tmp_path / "ep.hdf5", control_period_s=0.02, horizon=10)
    first = policy.infer(Observation(5_000_000_000, {}, np.zeros(14)))
    np.testing.assert_array_equal(first.actions, actions[:10])
    later = policy.infer(Observation(5_000_000_000 + 40 * 20_000_000, {}, np.zeros(14)))
    np.testing.assert_array_equal(later.actions, actions[40:50])
    end = policy.infer(Observation(5_000_000_000 + 95 * 20_000_000, {}, np.zeros(14)))
    np.testing.assert_array_equal(end.actions[-1], actions[-1])  # holds the last action
    with pytest.raises(ValueError, match="14 joints"):
        policy.infer(Observation(0, {}, np.zeros(8)))


def test_replay_policy_rejects_bad_files(tmp_path):
    with pytest.raises(EpisodeFileError, match="does not exist"):
        ReplayPolicy(tmp_path / "missing.hdf5", 0.02)
    _episode(tmp_path / "nan.hdf5", np.full((5, 14), np.nan))
    with pytest.raises(EpisodeFileError, match="NaN"):
        ReplayPolicy(tmp_path / "nan.hdf5", 0.02)
    _episode(tmp_path / "rate.hdf5", np.zeros((5, 14)), fps=25)
    with pytest.raises(EpisodeFileError, match="recorded at 25 Hz"):
        ReplayPolicy(tmp_path / "rate.hdf5", 0.02)
    (tmp_path / "text.hdf5").write_text("hello")
    with pytest.raises(EpisodeFileError, match="not a readable HDF5"):
        ReplayPolicy(tmp_path / "text.hdf5", 0.02)


def test_output_adapter_gripper_units(aloha_config, single_arm_config):
    command = np.linspace(-1, 1, 14)
    command[6] = 1.0
    adapter, unit = adapter_settings(aloha_config)
    left, right = split_command(aloha_config, command, unit)
    assert adapter == "position" and unit == "normalized"
    np.testing.assert_allclose(left.arm_positions, command[:6])
    assert left.gripper == 1.0 and right.gripper == pytest.approx(command[13])
    left_motor = split_command(aloha_config, command, "motor_rad")[0]
    assert left_motor.gripper == pytest.approx(1.4910)  # Interbotix gripper fully open
    arm = split_command(single_arm_config, np.r_[np.zeros(7), 0.5], "finger_m")[0]
    assert arm.joint_names[-1] == "gripper" and arm.gripper == pytest.approx(0.02)
