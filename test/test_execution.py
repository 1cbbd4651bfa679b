"""ChunkExecutor rules on hand-built timelines: alignment, acceptance, seams, holds, e-stop."""
from __future__ import annotations

import numpy as np
import pytest

from cosmos_policy_ros.control.execution import REJECT_REASONS, ChunkExecutor
from cosmos_policy_ros.control.safety import JointLimits, SafetyFilter
from cosmos_policy_ros.types import ActionChunk

JOINTS = ("left_waist", "left_gripper")
PERIOD_S = 0.02
PERIOD_NS = 20_000_000
MAX_STEP = 0.05
T0 = 1_000_000_000_000  # arbitrary epoch: nothing may assume time starts at zero


def make_executor(blend_ticks: int = 0, max_chunk_age_s: float = 2.0) -> ChunkExecutor:
    limits = JointLimits.from_config(
        {"lower": [-1.0, 0.0], "upper": [1.0, 1.0], "max_step_per_tick": MAX_STEP}, JOINTS
    )
    return ChunkExecutor(JOINTS, SafetyFilter(limits), blend_ticks=blend_ticks, max_chunk_age_s=max_chunk_age_s)


def ramp_chunk(chunk_id: int, stamp_ns: int, start: float = 0.0, slope: float = 0.01, horizon: int = 10) -> ActionChunk:
    """Waist moves ``slope`` rad per step from ``start``; gripper fixed at 0.5."""
    waist = start + slope * np.arange(horizon)
    positions = np.stack([waist, np.full(horizon, 0.5)], axis=1)
    return ActionChunk(stamp_ns, chunk_id, JOINTS, positions, PERIOD_S)


def t(tick: int) -> int:
    return T0 + tick * PERIOD_NS


HOME = np.array([0.0, 0.5])


def start(executor: ChunkExecutor, ticks: int = 1) -> None:
    """Tick with the robot holding HOME, so the executor has moved nothing yet."""
    for i in range(ticks):
        result = executor.tick(t(i), HOME)
        assert result.source == "hold"


def test_first_command_holds_measured_position_and_none_without_state():
    executor = make_executor()
    assert executor.tick(t(0), None).command is None
    assert executor.tick(t(1), np.array([np.nan, 0.5])).command is None
    result = executor.tick(t(2), np.array([0.3, 0.2]))
    assert result.source == "hold"
    np.testing.assert_array_equal(result.command, [0.3, 0.2])
    assert executor.stats()["no_state_ticks"] == 2


def test_chunk_from_holding_robot_starts_at_step_zero():
    """Blocking execution: the robot held still since the observation, so nothing was missed."""
    executor = make_executor()
    start(executor, 5)
    chunk = ramp_chunk(1, t(1))
    assert executor.submit(chunk, t(5)).accepted
    results = [executor.tick(t(5 + i), None) for i in range(10)]
    assert [r.step_index for r in results] == list(range(10))
    assert executor.stats()["rebased"] == 1


def test_moving_robot_skips_steps_already_in_the_past():
    executor = make_executor()
    start(executor)
    assert executor.submit(ramp_chunk(1, t(0), horizon=20), t(0))
    for i in range(1, 8):
        executor.tick(t(i))
    # Observation at tick 7 while moving; the chunk arrives at tick 10: steps 0..2 are past.
    assert executor.submit(ramp_chunk(2, t(7), start=0.07, horizon=20), t(10))
    result = executor.tick(t(10))
    assert (result.chunk_id, result.step_index, result.source) == (2, 3, "chunk")
    np.testing.assert_allclose(result.command, [0.10, 0.5])
    # Off-grid tick times round to the nearest step.
    assert executor.tick(t(11) + PERIOD_NS // 2 - 1).step_index == 4


def test_switch_waits_for_a_future_stamp_within_tolerance():
    executor = make_executor()
    start(executor)
    executor.submit(ramp_chunk(1, t(0), horizon=20), t(0))
    executor.tick(t(1))
    assert executor.submit(ramp_chunk(2, t(3) + 1_000_000, start=0.03), t(2)).accepted  # 1 ms clock skew
    assert executor.tick(t(2)).chunk_id == 1
    result = executor.tick(t(3))
    assert (result.chunk_id, result.step_index) == (2, 0)


@pytest.mark.parametrize(
    "chunk, reason",
    [
        (ActionChunk(T0, 1, ("a", "b"), np.zeros((5, 2)), PERIOD_S), "joint_names"),
        (ActionChunk(T0, 1, JOINTS, np.zeros((5, 3)), PERIOD_S), "shape"),
        (ActionChunk(T0, 1, JOINTS, np.zeros((0, 2)), PERIOD_S), "shape"),
        (ActionChunk(T0, 1, JOINTS, np.zeros(10), PERIOD_S), "shape"),
        (ActionChunk(T0, 1, JOINTS, np.full((5, 2), np.nan), PERIOD_S), "nonfinite"),
        (ActionChunk(T0, 1, JOINTS, np.zeros((5, 2)), 0.0), "period"),
        (ActionChunk(T0, 1, JOINTS, np.zeros((5, 2)), float("nan")), "period"),
        (ActionChunk(T0 - 3 * 10**9, 1, JOINTS, np.zeros((5, 2)), PERIOD_S), "stale"),
        (ActionChunk(T0 + 10**9, 1, JOINTS, np.zeros((5, 2)), PERIOD_S), "future_stamp"),
    ],
)
def test_invalid_chunks_rejected_with_reason_and_counted(chunk, reason):
    executor = make_executor()
    executor.tick(T0, HOME)
    result = executor.submit(chunk, T0)
    assert not result and result.reason == reason and reason in REJECT_REASONS
    stats = executor.stats()
    assert stats[f"rejected_{reason}"] == 1 and stats["rejected"] == 1 and stats["accepted"] == 0
    np.testing.assert_array_equal(executor.tick(T0 + PERIOD_NS).command, HOME)


def test_nan_chunk_keeps_running_chunk():
    executor = make_executor()
    start(executor)
    executor.submit(ramp_chunk(1, t(0)), t(0))
    executor.tick(t(1))
    bad = ActionChunk(t(1), 2, JOINTS, np.full((10, 2), np.nan), PERIOD_S)
    assert executor.submit(bad, t(2)).reason == "nonfinite"
    result = executor.tick(t(2))
    assert result.chunk_id == 1 and np.all(np.isfinite(result.command))


def test_duplicate_and_out_of_order_chunks_rejected():
    executor = make_executor()
    start(executor)
    assert executor.submit(ramp_chunk(5, t(0)), t(0))
    assert executor.submit(ramp_chunk(5, t(0)), t(0)).reason == "duplicate"
    assert executor.submit(ramp_chunk(4, t(0)), t(0)).reason == "out_of_order"
    executor.tick(t(1))
    assert executor.submit(ramp_chunk(7, t(2)), t(2))
    assert executor.submit(ramp_chunk(6, t(3)), t(3)).reason == "out_of_order"  # older id
    assert executor.submit(ramp_chunk(8, t(1)), t(3)).reason == "out_of_order"  # older observation
    assert executor.tick(t(3)).chunk_id == 7
    executor.reset_sequence()  # policy node restarted: ids start over
    assert executor.submit(ramp_chunk(0, t(3)), t(3))


def test_chunk_fully_in_the_past_rejected_as_expired():
    executor = make_executor()
    start(executor)
    executor.submit(ramp_chunk(1, t(0), horizon=50), t(0))
    for i in range(1, 30):
        executor.tick(t(i))
    assert executor.submit(ramp_chunk(2, t(5), horizon=10), t(30)).reason == "expired"
    assert executor.tick(t(30)).chunk_id == 1


def test_starvation_holds_last_command_and_counts():
    executor = make_executor()
    start(executor)
    executor.submit(ramp_chunk(1, t(0), horizon=5), t(0))
    results = [executor.tick(t(i)) for i in range(1, 10)]
    assert [r.source for r in results] == ["chunk"] * 5 + ["hold"] * 4
    assert all(r.starved for r in results[5:])
    for r in results[5:]:
        np.testing.assert_array_equal(r.command, results[4].command)
    stats = executor.stats()
    assert stats["starved_ticks"] == 4 and stats["idle_ticks"] == 1 and stats["hold_ticks"] == 5


def test_seam_blend_is_bounded_and_reaches_new_chunk():
    blend = 4
    executor = make_executor(blend_ticks=blend)
    start(executor)
    executor.submit(ramp_chunk(1, t(0), start=0.0, slope=0.0, horizon=50), t(0))
    for i in range(1, 5):
        executor.tick(t(i))
    # New chunk disagrees by 0.2 rad (4x max step) at the seam.
    executor.submit(ramp_chunk(2, t(4), start=0.2, slope=0.0, horizon=50), t(5))
    results = [executor.tick(t(i)) for i in range(5, 15)]
    weights = [r.blend_weight for r in results]
    np.testing.assert_allclose(weights[:blend], [0.2, 0.4, 0.6, 0.8])
    assert weights[blend:] == [1.0] * (len(results) - blend)
    waist = np.array([0.0] + [r.command[0] for r in results])
    assert np.max(np.abs(np.diff(waist))) <= MAX_STEP + 1e-12
    assert waist[-1] == pytest.approx(0.2)
    assert executor.stats()["blend_ticks"] == 2 * blend  # the first chunk blended in from hold too


def test_estop_holds_drops_chunks_and_reenable_starts_from_measured():
    executor = make_executor(blend_ticks=2)
    start(executor)
    executor.submit(ramp_chunk(1, t(0), slope=0.02, horizon=50), t(0))
    for i in range(1, 6):
        last = executor.tick(t(i)).command
    executor.set_enabled(False, t(6))
    for i in range(6, 10):
        result = executor.tick(t(i), np.array([0.7, 0.1]))
        assert result.source == "disabled"
        np.testing.assert_array_equal(result.command, last)
    assert executor.submit(ramp_chunk(2, t(9)), t(9)).reason == "disabled"
    assert executor.stats()["dropped_on_disable"] == 1

    executor.set_enabled(True, t(10))
    # Someone moved the arm while disabled: the first command is where it is now.
    result = executor.tick(t(10), np.array([0.7, 0.1]))
    assert result.source == "hold"
    np.testing.assert_array_equal(result.command, [0.7, 0.1])
    assert executor.submit(ramp_chunk(3, t(8)), t(11)).reason == "before_enable"
    assert executor.submit(ramp_chunk(4, t(11), start=0.0), t(11))
    commands = [executor.tick(t(i)).command for i in range(11, 40)]
    waist = np.array([0.7] + [c[0] for c in commands])
    assert np.max(np.abs(np.diff(waist))) <= MAX_STEP + 1e-12


def test_from_config_reads_limits_and_execution_sections():
    from cosmos_policy_ros.config import ConfigError, parse_config

    raw = {
        "joint_names": list(JOINTS), "control_rate_hz": 50.0,
        "arms": {"arm": {"joint_state_topic": "joint_states", "joints": {"left_waist": "waist"},
                         "gripper": {"joint": "left_gripper", "state_name": "finger",
                                     "finger_closed_m": 0.0, "finger_open_m": 0.05}}},
        "cameras": {"cam": {"topic": "image"}},
        "limits": {"lower": [-1, 0], "upper": [1, 1], "max_step_per_tick": [0.05, 0.1]},
        "execution": {"blend_ticks": 3, "max_chunk_age_s": 1.5},
    }
    executor = ChunkExecutor.from_config(parse_config(raw, "config/test.yaml"))
    assert executor.blend_ticks == 3 and executor.max_chunk_age_ns == 1_500_000_000
    with pytest.raises(ConfigError, match="config/test.yaml: execution: unknown key 'blend'; did you mean 'blend_ticks'"):
        parse_config({**raw, "execution": {"blend": 3}}, "config/test.yaml")
    with pytest.raises(ValueError, match="config/test.yaml: limits.upper"):
        ChunkExecutor.from_config(parse_config({**raw, "limits": {**raw["limits"], "upper": [1]}}, "config/test.yaml"))


def test_stats_has_every_counter_from_the_start():
    stats = make_executor().stats()
    assert all(stats[f"rejected_{r}"] == 0 for r in REJECT_REASONS)
    assert {"accepted", "hold_ticks", "starved_ticks", "clamped_ticks", "rate_limited_ticks"} <= set(stats)


def test_start_disabled_holds_measured_until_enabled():
    limits = JointLimits.from_config({"lower": [-1.0, 0.0], "upper": [1.0, 1.0], "max_step_per_tick": MAX_STEP}, JOINTS)
    executor = ChunkExecutor(JOINTS, SafetyFilter(limits), start_enabled=False)
    result = executor.tick(t(0), HOME)
    assert result.source == "disabled"
    np.testing.assert_array_equal(result.command, HOME)
    assert executor.submit(ramp_chunk(1, t(0)), t(0)).reason == "disabled"
    executor.set_enabled(True, t(1))
    assert executor.submit(ramp_chunk(2, t(1)), t(1))
    assert executor.tick(t(1), HOME).source == "chunk"


def test_eval_mode_status_says_chunk_or_hold_after_the_newest_chunk_run():
    from cosmos_policy_ros.control.execution import executing_status, status_is_chunk, status_ran_out

    tick = executing_status("chunk", 7, 3, 7)
    assert tick == "chunk 7 step 3" and status_is_chunk(tick) and not status_ran_out(tick, 7)
    hold = executing_status("hold", None, None, 7)
    assert hold == "hold after chunk 7" and not status_is_chunk(hold)
    assert status_ran_out(hold, 7)  # ran chunk 7 (the policy's newest) and holds: ask now
    assert not status_ran_out(hold, 8)  # chunk 8 is on its way: its hold came before it
    assert not status_ran_out(executing_status("disabled", None, None, -1), 1)  # chunk 1 not run yet
    assert not status_ran_out("hold after chunk x", 0) and not status_ran_out("", 0)
