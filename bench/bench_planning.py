"""Planner cost: N candidates x (3 future-state x 5 value) ensemble, batched vs sequential.

Batched: ``ModelPlanner`` as planner_node runs it (all N x 3 world-model samples in one
sampler call, all N x 15 value samples in one more). Sequential: one sample per model call,
the way the official deployment's non-parallel loop evaluates candidates and ensemble
members; same noise, so the same values (the bench checks it). Observation encoding is done
once and not counted. Runs the shipped tiny planning checkpoint on this machine's device
(CPU: 1 torch thread, the machine is shared) — ratios, not absolute times, carry over.

    python bench/bench_planning.py             # prints a table
    run_planning_bench() -> dict               # same numbers, for a combined JSON report
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cosmos_policy_ros.config import load_config  # noqa: E402
from cosmos_policy_ros.control.planning import ModelPlanner, default_planning_checkpoint, make_model_planner  # noqa: E402
from cosmos_policy_ros.types import Observation  # noqa: E402

CANDIDATE_COUNTS = (1, 4, 8)
FUTURE_SAMPLES, VALUE_SAMPLES = 3, 5  # official ALOHA ensemble


def _observation(cameras, dof: int) -> Observation:
    rng = np.random.default_rng(0)
    return Observation(stamp_ns=0, task="transfer the cube", joint_positions=rng.uniform(-0.3, 0.3, dof),
                       images={cam: rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for cam in cameras})


def _timed(planner: ModelPlanner, encoded, candidates) -> tuple[float, dict, np.ndarray]:
    start = time.perf_counter()
    scores = planner.score(encoded, candidates)
    return time.perf_counter() - start, dict(planner.model.last_timings), scores.member_values


def run_planning_bench(candidate_counts=CANDIDATE_COUNTS, num_future_samples: int = FUTURE_SAMPLES,
                       num_value_samples: int = VALUE_SAMPLES, device: str | None = None) -> dict:
    import torch

    if device in (None, "cpu") and not torch.cuda.is_available():
        torch.set_num_threads(1)
    base = make_model_planner(load_config("aloha"), device=device)
    model = base.model
    encoded = base.encode(_observation(base.camera_names, model.config.dof))
    rng = np.random.default_rng(1)
    batched = ModelPlanner(model, num_future_samples, num_value_samples)
    sequential = ModelPlanner(model, num_future_samples, num_value_samples, max_batch_size=1)
    _timed(batched, encoded, rng.uniform(-0.3, 0.3, (1, model.config.chunk_size, model.config.dof)))  # warm-up
    rows = []
    for n in candidate_counts:
        candidates = rng.uniform(-0.3, 0.3, (n, model.config.chunk_size, model.config.dof))
        t_batched, stages_b, values_b = _timed(batched, encoded, candidates)
        t_seq, stages_s, values_s = _timed(sequential, encoded, candidates)
        rows.append({
            "num_candidates": n,
            "model_samples": n * num_future_samples * (1 + num_value_samples),
            "batched_s": t_batched,
            "sequential_s": t_seq,
            "speedup": t_seq / t_batched,
            "batched_world_model_s": stages_b.get("world_model"),
            "batched_value_s": stages_b.get("value"),
            "max_value_difference": float(np.abs(values_b - values_s).max()),
        })
    return {
        "device": str(model.device),
        "torch_threads": torch.get_num_threads(),
        "checkpoint": default_planning_checkpoint().name,
        "ensemble": {"future_samples": num_future_samples, "value_samples": num_value_samples},
        "denoising_steps": dict(model.config.num_steps),
        "rows": rows,
    }


def main() -> int:
    result = run_planning_bench()
    ens = result["ensemble"]
    print(f"planner cost, tiny planning model on {result['device']} ({result['torch_threads']} torch thread(s)); "
          f"ensemble {ens['future_samples']} future x {ens['value_samples']} value samples per candidate; "
          f"steps {result['denoising_steps']}")
    print(f"{'N':>3} {'model samples':>13} {'batched s':>10} {'sequential s':>13} {'seq/batched':>12} "
          f"{'|dV| max':>9}")
    for r in result["rows"]:
        print(f"{r['num_candidates']:>3} {r['model_samples']:>13} {r['batched_s']:>10.2f} {r['sequential_s']:>13.2f} "
              f"{r['speedup']:>11.1f}x {r['max_value_difference']:>9.1e}")
    one = result["rows"][0]["batched_s"]
    print("batched cost relative to N=1: " + ", ".join(
        f"N={r['num_candidates']}: {r['batched_s'] / one:.1f}x" for r in result["rows"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
