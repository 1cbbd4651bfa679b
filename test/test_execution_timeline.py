"""ChunkExecutor + InferenceTrigger on simulated timelines (fast, slow, slower-than-chunk
models) and seeded randomized checks of the safety invariants."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from cosmos_policy_ros.control.execution import ChunkExecutor, InferenceTrigger, TickResult
from cosmos_policy_ros.control.safety import JointLimits, SafetyFilter
from cosmos_policy_ros.types import ActionChunk

RATE_HZ = 50
PERIOD_NS = 1_000_000_000 // RATE_HZ
HORIZON = 50
CHUNK_S = HORIZON / RATE_HZ
DOF = 4
JOINTS = tuple(f"joint_{i}" for i in range(DOF))
LOWER, UPPER = np.full(DOF, -1.0), np.full(DOF, 1.0)
MAX_STEP = np.array([0.02, 0.03, 0.04, 0.05])
T0 = 7_000_000_000


def reference(progress: np.ndarray) -> np.ndarray:
    """Task trajectory by executed step count ``[n] -> [n, dof]``; it leaves the joint limits
    on purpose (amplitude 1.2) so the clamps are exercised."""
    phase = np.asarray(progress, dtype=np.float64)[:, None] * (2 * np.pi / 400.0)
    return 1.2 * np.sin(phase + np.arange(DOF)[None, :])


@dataclass
class Timeline:
    results: list[TickResult] = field(default_factory=list)
    executor: ChunkExecutor | None = None

    def sources(self) -> list[str]:
        return [r.source for r in self.results]

    def moving_fraction_after_first_chunk(self) -> float:
        sources = self.sources()
        first = sources.index("chunk")
        return sources[first:].count("chunk") / len(sources[first:])


def simulate(
    mode: str,
    latency_s: float,
    seconds: float = 20.0,
    blend_ticks: int = 5,
    seam_noise: float = 0.02,
    jitter_s: float = 0.0,
    seed: int = 0,
    max_chunk_age_s: float = 5.0,
) -> Timeline:
    """Closed loop in simulated time: the robot tracks commands perfectly; a policy returns
    ``reference`` from the robot's progress plus a per-chunk offset (sample disagreement)
    ``latency_s`` (+ uniform jitter) after each request."""
    rng = np.random.default_rng(seed)
    limits = JointLimits(JOINTS, LOWER, UPPER, MAX_STEP)
    executor = ChunkExecutor(JOINTS, SafetyFilter(limits), blend_ticks=blend_ticks, max_chunk_age_s=max_chunk_age_s)
    trigger = InferenceTrigger(mode, margin_s=0.1, initial_latency_s=latency_s)  # type: ignore[arg-type]
    measured = np.clip(reference(np.zeros(1))[0], LOWER, UPPER)
    progress, chunk_id = 0, 0
    in_flight: tuple[int, ActionChunk] | None = None
    timeline = Timeline(executor=executor)
    for tick in range(int(seconds * RATE_HZ)):
        now = T0 + tick * PERIOD_NS
        if in_flight is not None and in_flight[0] <= now:
            executor.submit(in_flight[1], now)
            trigger.request_finished(now, in_flight[1])
            in_flight = None
        result = executor.tick(now, measured)
        timeline.results.append(result)
        if result.command is not None:
            measured = result.command
        progress += result.source == "chunk"
        trigger.set_active_until(executor.active_until_ns(now))
        if trigger.should_request(now):
            trigger.request_started(now)
            chunk_id += 1
            positions = reference(progress + np.arange(HORIZON)) + rng.normal(0.0, seam_noise, DOF)
            chunk = ActionChunk(now, chunk_id, JOINTS, positions, 1.0 / RATE_HZ)
            delay = latency_s + rng.uniform(0.0, jitter_s)
            in_flight = (now + int(round(delay * 1e9)), chunk)
    return timeline


def assert_safe(results: list[TickResult], start: np.ndarray | None = None) -> None:
    commands = np.array([r.command for r in results if r.command is not None])
    assert np.all(np.isfinite(commands))
    inside = (commands >= LOWER) & (commands <= UPPER)
    assert np.all(inside)
    if start is not None:
        commands = np.vstack([start, commands])
    assert np.all(np.abs(np.diff(commands, axis=0)) <= MAX_STEP + 1e-12)


def test_fast_model_overlapped_never_idles_after_first_chunk():
    timeline = simulate("overlapped", latency_s=0.3 * CHUNK_S)
    assert timeline.moving_fraction_after_first_chunk() == 1.0
    stats = timeline.executor.stats()
    assert stats["starved_ticks"] == 0 and stats["rejected"] == 0 and stats["switches"] > 20
    assert_safe(timeline.results)


def test_fast_model_blocking_idles_for_each_inference():
    latency = 0.3 * CHUNK_S
    moving = simulate("blocking", latency_s=latency).moving_fraction_after_first_chunk()
    assert moving == pytest.approx(CHUNK_S / (CHUNK_S + latency), abs=0.03)


def test_slow_model_overlapped_beats_blocking():
    latency = 0.6 * CHUNK_S
    overlapped = simulate("overlapped", latency).moving_fraction_after_first_chunk()
    blocking = simulate("blocking", latency).moving_fraction_after_first_chunk()
    assert overlapped == pytest.approx((CHUNK_S - latency) / latency, abs=0.03)
    assert overlapped > blocking


@pytest.mark.parametrize("ratio", [1.0, 1.5])
def test_model_slower_than_chunk(ratio):
    """Overlapping cannot help: its chunks arrive fully in the past and are rejected as
    expired; adaptive falls back to blocking and wastes no inference."""
    latency = ratio * CHUNK_S
    overlapped = simulate("overlapped", latency, seconds=60)
    adaptive = simulate("adaptive", latency, seconds=60)
    blocking = simulate("blocking", latency, seconds=60)
    assert overlapped.executor.stats()["rejected_expired"] > 0
    assert adaptive.executor.stats()["rejected"] == 0
    assert adaptive.moving_fraction_after_first_chunk() == pytest.approx(
        blocking.moving_fraction_after_first_chunk(), abs=0.01
    )
    assert blocking.moving_fraction_after_first_chunk() == pytest.approx(1 / (1 + ratio), abs=0.03)
    for timeline in (overlapped, adaptive, blocking):
        assert_safe(timeline.results)


def test_adaptive_overlaps_fast_models():
    assert simulate("adaptive", 0.3 * CHUNK_S).moving_fraction_after_first_chunk() == 1.0


def test_seam_jumps_never_exceed_max_step_even_with_large_disagreement():
    for blend_ticks in (0, 5):
        timeline = simulate("overlapped", 0.3 * CHUNK_S, seam_noise=0.2, blend_ticks=blend_ticks)
        assert_safe(timeline.results)
        assert timeline.executor.stats()["rate_limited_ticks"] > 0


def test_trigger_latency_ema_and_single_request_in_flight():
    trigger = InferenceTrigger("overlapped", margin_s=0.1, initial_latency_s=1.0, latency_ema_alpha=0.5)
    assert trigger.should_request(0)  # nothing runs
    trigger.request_started(0)
    assert trigger.in_flight and not trigger.should_request(10)
    chunk = ActionChunk(0, 1, JOINTS, np.zeros((HORIZON, DOF)), 1.0 / RATE_HZ)
    trigger.request_finished(200_000_000, chunk)
    assert trigger.latency_s == pytest.approx(0.2)  # first sample replaces the guess
    trigger.report_latency(0.4)
    assert trigger.latency_s == pytest.approx(0.3)
    # Requested while holding: the chunk runs from its arrival (0.2 s) for 1 s.
    assert trigger.remaining_s(200_000_000) == pytest.approx(0.99)
    assert not trigger.should_request(700_000_000)  # 0.49 s left > 0.3 + 0.1
    assert trigger.should_request(900_000_000)  # 0.29 s left
    blocking = InferenceTrigger("blocking")
    blocking.set_active_until(1_000_000_000)
    assert not blocking.should_request(900_000_000) and blocking.should_request(1_000_000_000)
    trigger.request_started(900_000_000)
    trigger.request_finished(950_000_000, None)  # failed request: not a latency sample
    assert trigger.latency_s == pytest.approx(0.3) and not trigger.in_flight


def test_randomized_invariants_with_chaos():
    """Random latencies, jitter, e-stops, NaN, duplicate, stale and reordered chunks: never
    NaN, never outside limits, never a jump above max step, never idle with a valid chunk."""
    limits = JointLimits(JOINTS, LOWER, UPPER, MAX_STEP)
    for seed in range(12):
        rng = np.random.default_rng(seed)
        executor = ChunkExecutor(
            JOINTS, SafetyFilter(limits), blend_ticks=int(rng.integers(0, 8)), max_chunk_age_s=1.5
        )
        measured = rng.uniform(-0.9, 0.9, DOF)
        last = measured.copy()
        chunk_id, newest = 0, None  # newest accepted: (chunk, first tick or None if time-aligned)
        outbox: list[tuple[int, ActionChunk]] = []
        enabled = True
        for tick in range(1500):
            now = T0 + tick * PERIOD_NS
            if rng.random() < 0.004:
                enabled = not enabled
                executor.set_enabled(enabled, now)
                newest = None if not enabled else newest
                if enabled:
                    measured = np.clip(measured + rng.normal(0, 0.1, DOF), LOWER, UPPER)  # moved by hand
                    last = measured.copy()
            for due, chunk in [o for o in outbox if o[0] <= now]:
                outbox.remove((due, chunk))
                rebased_before = executor.stats()["rebased"]
                if executor.submit(chunk, now):
                    rebased = executor.stats()["rebased"] > rebased_before
                    newest = (chunk, tick if rebased else None)
            result = executor.tick(now, measured)
            if result.command is not None:
                assert np.all(np.isfinite(result.command))
                assert np.all((result.command >= LOWER) & (result.command <= UPPER))
                assert np.all(np.abs(result.command - last) <= MAX_STEP + 1e-12)
                last = measured = result.command
            if result.source == "hold" and newest is not None:
                chunk, first_tick = newest
                if first_tick is not None:
                    step = tick - first_tick
                else:
                    step = round((now - chunk.stamp_ns) / chunk.period_ns)
                assert not 0 <= step < chunk.horizon, f"seed {seed} tick {tick}: idle with a valid chunk"
            if rng.random() < 0.05:  # a new request with a random latency and horizon
                chunk_id += int(rng.integers(1, 3))
                horizon = int(rng.integers(5, 60))
                positions = last + np.cumsum(rng.normal(0, 0.05, (horizon, DOF)), axis=0)
                if rng.random() < 0.05:
                    positions[rng.integers(horizon)] = np.nan
                stamp = now - int(rng.integers(0, 3)) * PERIOD_NS
                chunk = ActionChunk(stamp, chunk_id, JOINTS, positions, 1.0 / RATE_HZ)
                delay = int(rng.exponential(0.4) * 1e9)
                outbox.append((now + delay, chunk))
                if rng.random() < 0.1:
                    outbox.append((now + delay + PERIOD_NS, chunk))  # duplicate delivery
        stats = executor.stats()
        assert stats["accepted"] > 0 and stats["rejected"] > 0
        assert stats["ticks"] == 1500
