"""bench/bench_execution.py runs, returns JSON-ready numbers, and shows the expected ordering."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path


def load_bench():
    path = Path(__file__).resolve().parents[1] / "bench" / "bench_execution.py"
    spec = importlib.util.spec_from_file_location("bench_execution", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_results_are_json_and_ordered():
    results = load_bench().run_execution_bench(latency_ratios=(0.3, 1.5), seconds=12.0)
    json.dumps(results, allow_nan=False)
    fast, slow = results["idle"]
    assert fast["overlapped_idle_fraction"] == 0.0 < fast["blocking_idle_fraction"]
    assert slow["adaptive_idle_fraction"] <= slow["overlapped_idle_fraction"]
    for row in results["seams"]:
        assert row["any_tick_max"] <= 1.0 + 1e-9
