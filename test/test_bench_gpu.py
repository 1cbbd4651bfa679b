"""bench/bench_gpu.py --tiny: the GPU benchmark's CPU smoke run, with no ROS imported."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_gpu_tiny_runs_without_ros_and_writes_every_section(tmp_path):
    out = tmp_path / "bench.json"
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['bench_gpu.py', '--tiny', '--backend', 'eager', '--out', {str(out)!r}]\n"
        "try:\n"
        f"    runpy.run_path({str(ROOT / 'bench' / 'bench_gpu.py')!r}, run_name='__main__')\n"
        "except SystemExit as done:\n"
        "    assert not done.code, done.code\n"
        "ros = sorted(m for m in sys.modules if m.startswith(('rclpy', 'cosmos_policy_ros.nodes', 'cosmos_policy_ros.msg')))\n"
        "print('ROS_MODULES', ros)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ROS_MODULES []" in done.stdout
    results = json.loads(out.read_text())
    assert results["gemm_tflops"] > 0 and results["forward_tflop_batch1"] > 0
    assert results["compile"]["compiled"] is True
    for row in results["forward"].values():
        assert row["eager_ms"] > 0 and row["compiled_ms"] > 0 and 0 < row["compiled_mfu"]
    assert set(results["forward"]) == {"1", "8", "24"}
    chunk = results["chunk"]
    assert {"preprocess", "vae_encode", "denoise", "wall_ms"} <= set(chunk["compiled"])
    assert chunk["vae_encode"]["prefix_vae_ms"] > 0 and chunk["vae_encode"]["full_vae_ms"] > 0
    assert results["best_of_8"]["compiled_ms"] > 0
    assert results["planner"]["shape"] == [8, 3, 5] and results["planner"]["compiled_s"] > 0
    assert "| batch |" in results["table"] and "planner [8, 3, 5]" in done.stdout
