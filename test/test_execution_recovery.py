"""ChunkExecutor under the faults a review found: time going backwards, implausible or
missing measurements at resync, and the one-ulp overshoot of the rate limit."""
from __future__ import annotations

import numpy as np

from cosmos_policy_ros.control.safety import JointLimits, SafetyFilter
from test_execution import HOME, MAX_STEP, PERIOD_NS, make_executor, ramp_chunk, t


def test_clock_going_backwards_restarts_from_the_measured_position():
    ex = make_executor()
    ex.tick(t(0), HOME)
    assert ex.submit(ramp_chunk(5, t(0)), t(0)).accepted
    for k in range(1, 4):
        assert ex.tick(t(k), HOME).source == "chunk"
    # The sim restarted: time is now 10 s earlier, the policy node's ids restarted too.
    early = t(0) - 10_000_000_000
    result = ex.tick(early, HOME)
    assert result.source == "hold" and ex.stats()["clock_resets"] == 1
    np.testing.assert_allclose(result.command, HOME)
    assert ex.submit(ramp_chunk(1, early), early).accepted  # not "out_of_order" any more
    assert ex.tick(early + PERIOD_NS, HOME).source == "chunk"


def test_implausible_measurement_is_not_taken_as_the_command():
    ex = make_executor()
    glitch = np.array([7.5, 0.5])  # waist limit is +-1 rad
    assert ex.tick(t(0), glitch).command is None  # nothing trustworthy to hold yet
    assert ex.stats()["implausible_measurements"] == 1
    np.testing.assert_allclose(ex.tick(t(1), HOME).command, HOME)


def test_resync_without_measurement_holds_and_never_jumps():
    ex = make_executor()
    ex.tick(t(0), HOME)
    assert ex.submit(ramp_chunk(1, t(0), slope=0.04), t(0)).accepted
    last = None
    for k in range(1, 5):
        last = ex.tick(t(k), HOME).command
    ex.set_enabled(False, t(5))
    ex.set_enabled(True, t(6))
    assert ex.submit(ramp_chunk(2, t(6), start=0.2, slope=0.04), t(6)).accepted
    for k in range(7, 12):  # joint states stopped (NaN): hold the last command, run nothing
        result = ex.tick(t(k), np.array([np.nan, 0.5]))
        assert result.source == "hold"
        np.testing.assert_allclose(result.command, last)
    measured = last + np.array([0.03, 0.0])  # where the arm actually is now
    resumed = ex.tick(t(12), measured).command  # resync to it, then at most one step of the chunk
    assert np.all(np.abs(resumed - measured) <= MAX_STEP + 1e-12)


def test_rate_limit_is_never_exceeded_by_rounding():
    rng = np.random.default_rng(0)
    limits = JointLimits.from_config({"lower": -3.0, "upper": 3.0, "max_step_per_tick": MAX_STEP}, ["a", "b", "c"])
    safety = SafetyFilter(limits)
    for _ in range(20_000):
        last = rng.uniform(-3, 3, 3)
        command, _ = safety.apply(last + rng.uniform(-1, 1, 3), last)
        assert np.all(np.abs(command - last) <= MAX_STEP)
        assert np.all(command >= -3.0) and np.all(command <= 3.0)


def test_grippers_keep_their_command_when_resyncing_after_an_estop():
    from cosmos_policy_ros.control.execution import ChunkExecutor
    from test_execution import JOINTS

    limits = JointLimits.from_config({"lower": [-1.0, 0.0], "upper": [1.0, 1.0], "max_step_per_tick": MAX_STEP}, JOINTS)
    ex = ChunkExecutor(JOINTS, SafetyFilter(limits), blend_ticks=0, keep_command_on_resync=["left_gripper"])
    ex.tick(t(0), np.array([0.0, 0.0]))  # first start: everything from the measurement
    ex.set_enabled(False, t(1))
    ex.set_enabled(True, t(2))
    squeezing = np.array([0.1, 0.3])  # the arm was pushed; the closed gripper is held open by the cube
    np.testing.assert_allclose(ex.tick(t(3), squeezing).command, [0.1, 0.0])


def test_restart_for_a_new_episode_takes_every_joint_from_the_measurement():
    from cosmos_policy_ros.control.execution import ChunkExecutor
    from test_execution import JOINTS

    limits = JointLimits.from_config({"lower": [-1.0, 0.0], "upper": [1.0, 1.0], "max_step_per_tick": MAX_STEP}, JOINTS)
    ex = ChunkExecutor(JOINTS, SafetyFilter(limits), blend_ticks=0, keep_command_on_resync=["left_gripper"])
    ex.tick(t(0), np.array([0.2, 1.0]))
    assert ex.submit(ramp_chunk(7, t(0)), t(0)).accepted
    ex.tick(t(1), np.array([0.2, 1.0]))
    ex.restart(t(2))
    reset_pose = np.array([0.0, 0.1])
    result = ex.tick(t(3), reset_pose)
    assert result.source == "hold"
    np.testing.assert_allclose(result.command, reset_pose)  # the gripper too: the robot was reset
    assert ex.submit(ramp_chunk(1, t(1)), t(3)).reason == "before_enable"  # from the previous episode
    assert ex.submit(ramp_chunk(1, t(3)), t(3)).accepted  # ids start over
    held = ex.tick(t(4), reset_pose).command
    ex.set_enabled(False, t(5))
    ex.restart(t(6))
    result = ex.tick(t(7), np.array([0.5, 0.5]))  # e-stopped: the held command does not move
    assert not ex.enabled and result.source == "disabled"
    np.testing.assert_array_equal(result.command, held)
