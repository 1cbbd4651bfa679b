"""Execution bench in simulated time: how much the robot idles with blocking vs overlapped
inference, and how large the jumps at chunk seams are relative to the max-step limit.

Runs ``ChunkExecutor`` + ``InferenceTrigger`` in a closed loop at 50 Hz with 50-step chunks
(1 s) for 14 ALOHA joints; the robot tracks commands perfectly and the "model" returns a
reference trajectory from the robot's progress plus a per-chunk offset (two samples of a
policy never agree exactly) after a fixed latency. No GPU, no ROS.

    python bench/bench_execution.py            # prints tables
    run_execution_bench() -> dict              # same numbers, for a combined JSON report
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cosmos_policy_ros.control.execution import ChunkExecutor, InferenceTrigger  # noqa: E402
from cosmos_policy_ros.control.safety import JointLimits, SafetyFilter  # noqa: E402
from cosmos_policy_ros.types import ActionChunk  # noqa: E402

CONTROL_RATE_HZ = 50
HORIZON = 50
CHUNK_S = HORIZON / CONTROL_RATE_HZ
ARM = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")
JOINT_NAMES = tuple(f"{side}_{j}" for side in ("left", "right") for j in ARM)
GRIPPER = np.array([name.endswith("gripper") for name in JOINT_NAMES])
LOWER = np.where(GRIPPER, 0.0, -1.5)
UPPER = np.where(GRIPPER, 1.0, 1.5)
MAX_STEP_RAD = np.where(GRIPPER, 0.05, 0.02)  # per tick: 1 rad/s for arm joints at 50 Hz
SEAM_WINDOW_TICKS = 6  # ticks from a switch that count as "at the seam"
MODES = ("blocking", "overlapped", "adaptive")


def _reference(progress: np.ndarray) -> np.ndarray:
    """Task trajectory by executed-step count, ``[n] -> [n, dof]``, at ~60% of max speed."""
    phase = np.asarray(progress, dtype=np.float64)[:, None] * (2 * np.pi / 400.0)
    offsets = np.arange(len(JOINT_NAMES))[None, :]
    return np.where(GRIPPER, 0.5 + 0.4 * np.sin(phase + offsets), 0.8 * np.sin(phase + offsets))


def simulate(
    mode: str,
    latency_s: float,
    seconds: float,
    blend_ticks: int = 5,
    seam_noise_rad: float = 0.02,
    margin_s: float = 0.1,
    seed: int = 0,
) -> dict[str, object]:
    """One closed-loop run; returns idle fraction (after the first chunk started), seam
    jumps normalized by max step, and the executor's counters."""
    rng = np.random.default_rng(seed)
    safety = SafetyFilter(JointLimits(JOINT_NAMES, LOWER, UPPER, MAX_STEP_RAD))
    executor = ChunkExecutor(JOINT_NAMES, safety, blend_ticks=blend_ticks, max_chunk_age_s=2 * latency_s + 1)
    trigger = InferenceTrigger(mode, margin_s=margin_s, initial_latency_s=latency_s)  # type: ignore[arg-type]
    period_ns = 1_000_000_000 // CONTROL_RATE_HZ
    measured = _reference(np.zeros(1))[0]
    progress, chunk_id = 0, 0
    in_flight: tuple[int, ActionChunk] | None = None
    chunks: dict[int, ActionChunk] = {}
    sources: list[str] = []
    commands: list[np.ndarray] = []
    targets: list[np.ndarray] = []  # pre-filter (blended) target; the command on hold ticks
    raw_seam: list[float] = []  # |new target - last command| / max step at each switch
    switch_ticks: list[int] = []
    last_chunk_id = None
    for tick in range(int(seconds * CONTROL_RATE_HZ)):
        now = tick * period_ns
        if in_flight is not None and in_flight[0] <= now:
            executor.submit(in_flight[1], now)
            trigger.request_finished(now, in_flight[1])
            in_flight = None
        result = executor.tick(now, measured)
        if result.source == "chunk" and result.chunk_id != last_chunk_id:
            if last_chunk_id is not None:
                target = chunks[result.chunk_id].positions[result.step_index]
                raw_seam.append(float(np.max(np.abs(target - measured) / MAX_STEP_RAD)))
                switch_ticks.append(tick)
            last_chunk_id = result.chunk_id
        sources.append(result.source)
        targets.append(result.command if result.target is None else result.target)
        commands.append(result.command)
        measured = result.command
        progress += result.source == "chunk"
        trigger.set_active_until(executor.active_until_ns(now))
        if trigger.should_request(now):
            trigger.request_started(now)
            chunk_id += 1
            positions = _reference(progress + np.arange(HORIZON)) + rng.normal(0, seam_noise_rad, len(JOINT_NAMES))
            chunk = ActionChunk(now, chunk_id, JOINT_NAMES, positions, 1.0 / CONTROL_RATE_HZ)
            chunks[chunk_id] = chunk
            in_flight = (now + int(round(latency_s * 1e9)), chunk)

    first = sources.index("chunk")
    idle_fraction = 1.0 - sources[first:].count("chunk") / len(sources[first:])
    steps = np.abs(np.diff(np.array(commands), axis=0)) / MAX_STEP_RAD  # steps[i]: tick i -> i+1
    target_steps = np.abs(np.diff(np.array(targets), axis=0)) / MAX_STEP_RAD
    seams = [s for s in switch_ticks if s + SEAM_WINDOW_TICKS < len(steps)]
    return {
        "idle_fraction": idle_fraction,
        "seam_jump_over_max_step": [float(np.max(steps[s - 1 : s - 1 + SEAM_WINDOW_TICKS])) for s in seams],
        "blended_seam_jump_over_max_step": [float(np.max(target_steps[s - 1 : s - 1 + SEAM_WINDOW_TICKS])) for s in seams],
        "unfiltered_seam_jump_over_max_step": raw_seam,
        "max_step_over_limit": float(np.max(steps)),
        "stats": executor.stats(),
    }


def _summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"max": None, "p99": None, "count": 0}
    return {"max": float(np.max(values)), "p99": float(np.percentile(values, 99)), "count": len(values)}


def run_execution_bench(
    latency_ratios: tuple[float, ...] = (0.3, 0.6, 1.0, 1.5), seconds: float = 60.0, seed: int = 0
) -> dict[str, object]:
    """All bench numbers as a JSON-serializable dict."""
    started = time.perf_counter()
    idle: list[dict[str, object]] = []
    for ratio in latency_ratios:
        row: dict[str, object] = {"latency_over_chunk": ratio, "latency_s": ratio * CHUNK_S}
        for mode in MODES:
            run = simulate(mode, ratio * CHUNK_S, seconds, seed=seed)
            row[f"{mode}_idle_fraction"] = run["idle_fraction"]
            row[f"{mode}_chunks_expired"] = run["stats"]["rejected_expired"]  # type: ignore[index]
        for mode in ("overlapped", "adaptive"):
            # Moving time per wall time, relative to blocking: how much faster a task finishes.
            row[f"{mode}_over_blocking_moving"] = _ratio(
                1 - row[f"{mode}_idle_fraction"], 1 - row["blocking_idle_fraction"]  # type: ignore[operator]
            )
            row[f"blocking_over_{mode}_idle"] = _ratio(row["blocking_idle_fraction"], row[f"{mode}_idle_fraction"])
        idle.append(row)

    seams: list[dict[str, object]] = []
    for noise in (0.02, 0.1):
        for blend_ticks in (0, 5, 10):
            run = simulate("overlapped", 0.3 * CHUNK_S, seconds, blend_ticks=blend_ticks, seam_noise_rad=noise, seed=seed)
            seams.append(
                {
                    "seam_noise_rad": noise,
                    "blend_ticks": blend_ticks,
                    "unfiltered": _summary(run["unfiltered_seam_jump_over_max_step"]),  # type: ignore[arg-type]
                    "blended": _summary(run["blended_seam_jump_over_max_step"]),  # type: ignore[arg-type]
                    "commanded": _summary(run["seam_jump_over_max_step"]),  # type: ignore[arg-type]
                    "any_tick_max": run["max_step_over_limit"],
                    "rate_limited_ticks": run["stats"]["rate_limited_ticks"],  # type: ignore[index]
                }
            )
    return {
        "setup": {
            "control_rate_hz": CONTROL_RATE_HZ,
            "horizon": HORIZON,
            "chunk_s": CHUNK_S,
            "dof": len(JOINT_NAMES),
            "simulated_s": seconds,
            "max_step_rad_arm": float(MAX_STEP_RAD[0]),
            "margin_s": 0.1,
            "idle_fraction": "ticks not driven by a chunk / all ticks after the first chunk started",
            "jumps": "max over joints of |command change| / max_step_per_tick",
        },
        "idle": idle,
        "seams": seams,
        "wall_s": time.perf_counter() - started,
    }


def _ratio(a: object, b: object) -> float | None:
    """a / b; None (JSON null) when b is 0."""
    a, b = float(a), float(b)  # type: ignore[arg-type]
    return None if b == 0 else a / b


def _fmt(value: float | None, width: int) -> str:
    return f"{'inf':>{width}}" if value is None else f"{value:>{width}.2f}"


def main() -> None:
    results = run_execution_bench()
    setup = results["setup"]
    print(f"Execution bench: {setup['control_rate_hz']} Hz, {setup['horizon']}-step chunks "
          f"({setup['chunk_s']:.1f} s), {setup['dof']} joints, {setup['simulated_s']:.0f} s simulated per run\n")
    print("Robot idle fraction after the first chunk started (lower is better); moving x = moving time vs blocking;")
    print("expired = overlapped chunks that arrived with every step already in the past (wasted inference)")
    print(f"{'latency/chunk':>13} {'blocking':>9} {'overlapped':>10} {'adaptive':>9} "
          f"{'overl moving x':>14} {'adapt moving x':>14} {'block/overl idle':>16} {'expired':>8}")
    for row in results["idle"]:  # type: ignore[union-attr]
        print(f"{row['latency_over_chunk']:>13.0%} {row['blocking_idle_fraction']:>9.3f} "
              f"{row['overlapped_idle_fraction']:>10.3f} {row['adaptive_idle_fraction']:>9.3f} "
              f"{_fmt(row['overlapped_over_blocking_moving'], 14)} {_fmt(row['adaptive_over_blocking_moving'], 14)} "
              f"{_fmt(row['blocking_over_overlapped_idle'], 16)} {row['overlapped_chunks_expired']:>8d}")
    print(f"\nSeam jumps / max step per tick, overlapped at 30% latency, {SEAM_WINDOW_TICKS} ticks from each switch "
          "(<= 1.0: within the limit)")
    print("unfiltered: new target vs last command at the switch; blended: tick-to-tick change of the target after")
    print("the crossfade, before the safety filter; commanded: tick-to-tick change of what is sent")
    print(f"{'noise rad':>9} {'blend':>5} {'seams':>5} {'unfilt max':>10} {'unfilt p99':>10} {'blend max':>9} "
          f"{'blend p99':>9} {'cmd max':>8} {'cmd p99':>8} {'any tick':>8}")
    for row in results["seams"]:  # type: ignore[union-attr]
        u, b, c = row["unfiltered"], row["blended"], row["commanded"]
        print(f"{row['seam_noise_rad']:>9.2f} {row['blend_ticks']:>5d} {c['count']:>5d} {u['max']:>10.2f} "
              f"{u['p99']:>10.2f} {b['max']:>9.2f} {b['p99']:>9.2f} {c['max']:>8.3f} {c['p99']:>8.3f} "
              f"{row['any_tick_max']:>8.3f}")
    print(f"\n(wall time {results['wall_s']:.1f} s)")


if __name__ == "__main__":
    main()
