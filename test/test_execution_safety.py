"""SafetyFilter and JointLimits: never outside limits, never above max step, refuse and hold."""
from __future__ import annotations

import numpy as np
import pytest

from cosmos_policy_ros.control.safety import JointLimits, LimitsConfigError, SafetyFilter

JOINTS = ("waist", "shoulder", "gripper")
EPS = 1e-12


def make_filter(max_step: float | list[float] = 0.05) -> SafetyFilter:
    return SafetyFilter(
        JointLimits.from_config(
            {"lower": [-1.0, -2.0, 0.0], "upper": [1.0, 2.0, 1.0], "max_step_per_tick": max_step},
            JOINTS,
        )
    )


def test_from_config_broadcasts_scalar_and_keeps_order():
    limits = make_filter(0.1).limits
    assert limits.joint_names == JOINTS
    np.testing.assert_array_equal(limits.max_step_per_tick, [0.1, 0.1, 0.1])
    np.testing.assert_array_equal(limits.upper, [1.0, 2.0, 1.0])


@pytest.mark.parametrize(
    "limits, match",
    [
        ({"lower": [0, 0, 0], "upper": [1, 1, 1]}, "missing keys"),
        ({"lower": [0, 0], "upper": [1, 1, 1], "max_step_per_tick": 0.1}, r"limits\.lower: expected one number or 3"),
        ({"lower": [2, 0, 0], "upper": [1, 1, 1], "max_step_per_tick": 0.1}, "lower > upper.*waist"),
        ({"lower": [0, 0, 0], "upper": [1, 1, 1], "max_step_per_tick": [0.1, 0, 0.1]}, "max_step_per_tick.*shoulder"),
        ({"lower": [0, 0, np.nan], "upper": [1, 1, 1], "max_step_per_tick": 0.1}, "finite"),
        ({"lower": "abc", "upper": [1, 1, 1], "max_step_per_tick": 0.1}, r"limits\.lower"),
    ],
)
def test_bad_config_names_the_field(limits, match):
    with pytest.raises(LimitsConfigError, match=match):
        JointLimits.from_config(limits, JOINTS, source="limits")


def test_clamps_to_position_limits_then_rate_limits():
    safety = make_filter(max_step=10.0)
    command, flags = safety.apply(np.array([5.0, -5.0, 0.5]), np.zeros(3))
    np.testing.assert_array_equal(command, [1.0, -2.0, 0.5])
    assert flags.clamped_joints == 2 and flags.rate_limited_joints == 0 and not flags.refused

    safety = make_filter(max_step=0.05)
    command, flags = safety.apply(np.array([0.5, -0.01, 0.5]), np.array([0.0, 0.0, 0.5]))
    np.testing.assert_allclose(command, [0.05, -0.01, 0.5])
    assert flags.rate_limited_joints == 1 and flags.clamped_joints == 0


@pytest.mark.parametrize(
    "target, reason",
    [
        (np.array([np.nan, 0.0, 0.5]), "nonfinite"),
        (np.array([0.0, np.inf, 0.5]), "nonfinite"),
        (np.zeros(4), "shape"),
        (np.zeros((1, 3)), "shape"),
        (np.array(["a", "b", "c"]), "nonfinite"),
    ],
)
def test_untrusted_target_holds_last_command(target, reason):
    last = np.array([0.1, 0.2, 0.3])
    command, flags = make_filter().apply(target, last)
    np.testing.assert_array_equal(command, last)
    assert flags.refused == reason and flags.modified


def test_outside_limits_start_approaches_range_by_max_step():
    safety = make_filter(0.05)
    last = np.array([1.3, 0.0, 0.5])  # measured outside the range at start-up
    command, _ = safety.apply(np.array([0.0, 0.0, 0.5]), last)
    np.testing.assert_allclose(command, [1.25, 0.0, 0.5])


def test_randomized_never_outside_limits_never_above_max_step_never_nan():
    rng = np.random.default_rng(0)
    max_step = np.array([0.02, 0.05, 0.1])
    safety = make_filter(list(max_step))
    lower, upper = safety.limits.lower, safety.limits.upper
    last = np.array([0.0, 0.0, 0.5])
    for i in range(5000):
        target = rng.normal(0.0, 3.0, 3) if i % 7 else rng.choice([np.nan, np.inf, -np.inf, 0.0], 3)
        if rng.random() < 0.2:
            target = last + rng.normal(0.0, 0.01, 3)  # near the last command: exact values
        command, _ = safety.apply(target, last)
        assert np.all(np.isfinite(command))
        assert np.all(command >= lower) and np.all(command <= upper)
        assert np.all(np.abs(command - last) <= max_step + EPS)
        last = command
