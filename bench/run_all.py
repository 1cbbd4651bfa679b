"""`make bench`: one table of ratios measured in one run on this machine, plus JSON and PNG.

Measured here (tiny Cosmos checkpoint, CPU):

1. torch eager vs ONNX Runtime per denoising step, per chunk, best-of-N batched vs
   sequential (``bench_onnx.run_onnx_bench``);
2. end-to-end observation -> chunk vs pure model time, the way policy_node does it:
   rgb8 payloads -> ``images.image_to_rgb`` -> ``ObservationAssembler`` (config 'aloha')
   -> ``policy.infer`` -> ``ActionChunk`` -> ``messages.chunk_to_msg``; then the same with
   a real rclpy round trip in-process (3 camera Images and the chunk published and
   received). Overhead = end-to-end - model time (VAE encode + denoise + decode), so the
   policy's image preprocessing counts as overhead;
3. a 50 Hz executor loop (``ChunkExecutor.tick`` + sleep-until on ``time.perf_counter``)
   idle, with inference in a thread of the same process, and with inference in a
   separate process: p50/p99 of |tick period - 20 ms|;
4. the other benches' dict-returning functions (execution, recorder, planning, and
   ``bench_gpu.run(tiny=True)``: torch.compile vs eager on the tiny model), each in
   a subprocess with a time limit (they set process-wide torch threads); a missing one
   is reported as 'not available'.

Results: bench/results/<date>.json and <date>.png (gitignored). Under 10 minutes here.
"""
from __future__ import annotations

import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))
sys.path.insert(0, str(BENCH_DIR))

import torch  # noqa: E402

from bench_onnx import build_policies, make_observation, run_onnx_bench  # noqa: E402
from cosmos_policy_ros.config import load_config  # noqa: E402
from cosmos_policy_ros.model.tiny import TINY_TASKS  # noqa: E402
from cosmos_policy_ros.control.policies import default_checkpoint  # noqa: E402

THREADS = 1  # 2 torch threads on 2 shared cores stall in OpenMP barriers (80 ms -> 7 s per chunk)
RATE_HZ = 50.0
TICK_SECONDS = 5.0
CAMERA_HEIGHT, CAMERA_WIDTH = 480, 640  # ALOHA's cameras
TARGETS = {"onnx_speedup": 1.5, "overhead_fraction": 0.05, "p99_period_error_ms": 2.0}
# (module, function, keyword arguments, time limit s)
OTHER_BENCHES = {
    "execution": ("bench_execution", "run_execution_bench", {}, 150),
    "recorder": ("bench_recorder", "run", {"seconds": 10.0, "flat_out_seconds": 4.0}, 90),
    "planning": ("bench_planning", "run_planning_bench", {}, 180),
    # compiled (inductor) vs eager denoiser and prefix vs full VAE encode; the first compile is slow on a CPU
    "compile": ("bench_gpu", "run", {"tiny": True, "threads": THREADS}, 420),
}


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import onnxruntime

    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host_cpu": cpu,
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_providers": onnxruntime.get_available_providers(),
        "cuda": torch.cuda.is_available(),
        "load_average_start": os.getloadavg(),
    }


# ---------------------------------------------------------------------- end-to-end overhead
class _RosLoopback:
    """Publishes camera Images and ActionChunks and receives them in the same process."""

    def __init__(self, cameras: list[str]) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Image

        from cosmos_policy_ros.msg import ActionChunk
        from cosmos_policy_ros.nodes.common import reliable_qos

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(f"bench_run_all_{os.getpid()}", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, object] = {}
        prefix = f"bench_run_all_{os.getpid()}"  # no cross-talk with graphs other people run
        self.image_pubs = {cam: self.node.create_publisher(Image, f"{prefix}/{cam}", reliable_qos(2)) for cam in cameras}
        for cam in cameras:
            self.node.create_subscription(Image, f"{prefix}/{cam}", lambda m, c=cam: self.received.__setitem__(c, m),
                                          reliable_qos(2))
        self.chunk_pub = self.node.create_publisher(ActionChunk, f"{prefix}/action_chunk", reliable_qos(2))
        self.node.create_subscription(ActionChunk, f"{prefix}/action_chunk",
                                      lambda m: self.received.__setitem__("chunk", m), reliable_qos(2))
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and any(p.get_subscription_count() == 0 for p in self.image_pubs.values()):
            self.executor.spin_once(timeout_sec=0.05)

    def round_trip(self, publish: dict[str, object], timeout_s: float = 2.0) -> dict[str, object]:
        """Publish messages (key -> msg; 'chunk' or a camera) and spin until all are back."""
        self.received.clear()
        for key, msg in publish.items():
            (self.chunk_pub if key == "chunk" else self.image_pubs[key]).publish(msg)
        deadline = time.monotonic() + timeout_s
        while len(self.received) < len(publish):
            if time.monotonic() > deadline:
                raise TimeoutError(f"ROS loopback: received {sorted(self.received)} of {sorted(publish)}")
            self.executor.spin_once(timeout_sec=0.01)
        return dict(self.received)

    def close(self) -> None:
        import rclpy

        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def run_overhead_bench(policy, repeats: int = 10) -> dict:
    from cosmos_policy_ros.control.images import image_to_rgb
    from cosmos_policy_ros.control.images import image_message_to_rgb
    from cosmos_policy_ros.nodes.messages import chunk_to_msg, rgb_to_image_msg
    from cosmos_policy_ros.control.observation import ObservationAssembler
    from cosmos_policy_ros.types import ActionChunk

    config = load_config("aloha")
    assembler = ObservationAssembler(config, task=TINY_TASKS[0])
    cameras = [cam.name for cam in config.cameras if cam.required]
    rgb = make_observation(0, CAMERA_HEIGHT, CAMERA_WIDTH).images
    payloads = {cam: rgb[cam].tobytes() for cam in cameras}
    joint_states = {arm.name: (list(arm.joints.values()) + ([arm.gripper.state_name] if arm.gripper else []),
                               [0.1] * len(arm.joints) + ([0.03] if arm.gripper else [])) for arm in config.arms}

    def observe(now_ns: int, images: dict[str, np.ndarray]):
        for cam, image in images.items():
            assembler.add_image(cam, now_ns, image)
        for arm, (names, positions) in joint_states.items():
            assembler.add_joint_state(arm, now_ns, names, positions)
        observation = assembler.assemble(now_ns)
        if observation is None:
            raise RuntimeError(f"observation refused: {assembler.last_refusal}")
        return observation

    def to_chunk(observation, output, chunk_id: int):
        chunk = ActionChunk(stamp_ns=observation.stamp_ns, chunk_id=chunk_id, joint_names=config.joint_names,
                            positions=np.asarray(output.actions, np.float64),
                            control_period_s=1.0 / policy.config.control_rate_hz,
                            predicted_value=output.predicted_value)
        return chunk_to_msg(chunk)

    rows: list[dict[str, float]] = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        now = time.time_ns()
        images = {cam: image_to_rgb("rgb8", CAMERA_HEIGHT, CAMERA_WIDTH, CAMERA_WIDTH * 3, payloads[cam])
                  for cam in cameras}
        observation = observe(now, images)
        t1 = time.perf_counter()
        output = policy.infer(observation)
        t2 = time.perf_counter()
        to_chunk(observation, output, i)
        t3 = time.perf_counter()
        timings = policy.last_timings
        model = sum(timings.get(k, 0.0) for k in ("vae_encode", "denoise", "decode"))
        if i:  # the first is a warm-up
            rows.append({"end_to_end": t3 - t0, "model": model, "observation": t1 - t0,
                         "preprocess": timings.get("preprocess", 0.0), "infer_other": (t2 - t1) - model
                         - timings.get("preprocess", 0.0), "chunk_msg": t3 - t2})
    result = _overhead_summary(rows)

    try:
        ros = _RosLoopback(cameras)
    except Exception as err:  # noqa: BLE001 - rclpy or the generated messages missing: report, do not fail
        result["ros"] = f"not available ({err!r})"
        return result
    try:
        messages = {cam: rgb_to_image_msg(rgb[cam], 0, cam) for cam in cameras}
        rows = []
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            received = ros.round_trip(messages)
            now = time.time_ns()
            observation = observe(now, {cam: image_message_to_rgb(received[cam]) for cam in cameras})
            t1 = time.perf_counter()
            output = policy.infer(observation)
            t2 = time.perf_counter()
            ros.round_trip({"chunk": to_chunk(observation, output, i)})
            t3 = time.perf_counter()
            timings = policy.last_timings
            model = sum(timings.get(k, 0.0) for k in ("vae_encode", "denoise", "decode"))
            if i:
                rows.append({"end_to_end": t3 - t0, "model": model, "observation": t1 - t0,
                             "preprocess": timings.get("preprocess", 0.0),
                             "infer_other": (t2 - t1) - model - timings.get("preprocess", 0.0),
                             "chunk_msg": t3 - t2})
        result["ros"] = _overhead_summary(rows)
    except Exception as err:  # noqa: BLE001
        result["ros"] = f"failed ({err!r})"
    finally:
        ros.close()
    return result


def _overhead_summary(rows: list[dict[str, float]]) -> dict:
    median = {key: float(np.median([r[key] for r in rows])) * 1e3 for key in rows[0]}
    fractions = [(r["end_to_end"] - r["model"]) / r["model"] for r in rows]
    return {"median_ms": median, "overhead_fraction": float(np.median(fractions)), "repeats": len(rows)}


# ---------------------------------------------------------------------- executor ticks
def tick_loop(seconds: float, rate_hz: float = RATE_HZ) -> dict:
    """A 50 Hz ChunkExecutor loop with sleep-until; |period - nominal| percentiles in ms."""
    from cosmos_policy_ros.control.execution import ChunkExecutor
    from cosmos_policy_ros.types import ActionChunk

    config = load_config("aloha")
    executor = ChunkExecutor.from_config(config)
    period = 1.0 / rate_hz
    measured = np.full(config.dof, 0.5)
    ticks = int(seconds * rate_hz)
    stamps = np.empty(ticks)
    deadline = time.perf_counter()
    for k in range(ticks):
        deadline += period
        delay = deadline - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        now = time.perf_counter()
        stamps[k] = now
        now_ns = int(now * 1e9)
        if k % 50 == 0:  # a fresh chunk every second, as overlapped inference delivers them
            positions = measured + 0.01 * np.sin(np.arange(50)[:, None] / 10.0 + np.arange(config.dof))
            executor.submit(ActionChunk(now_ns, k + 1, config.joint_names, positions, period), now_ns)
        measured = executor.tick(now_ns, measured).command
    error_ms = np.abs(np.diff(stamps) - period) * 1e3
    return {"ticks": ticks, "p50_ms": float(np.percentile(error_ms, 50)), "p99_ms": float(np.percentile(error_ms, 99)),
            "max_ms": float(error_ms.max()), "late_over_2ms": int(np.sum(error_ms > 2.0))}


def _inference_worker(checkpoint: str, threads: int, ready, stop, count) -> None:
    import torch as _torch

    from bench_onnx import build_policies as _build, make_observation as _obs

    _torch.set_num_threads(threads)
    _, policy, _ = _build(checkpoint, threads, log=lambda message: None)
    observation = _obs(1)
    policy.infer(observation)
    ready.set()
    while not stop.is_set():
        policy.infer(observation)
        with count.get_lock():
            count.value += 1


def run_tick_bench(policy, checkpoint: str, seconds: float = TICK_SECONDS, threads: int = THREADS) -> dict:
    import threading

    results = {"idle": tick_loop(seconds)}
    observation = make_observation(1)
    stop = threading.Event()
    chunks = [0]

    def infer_loop():
        while not stop.is_set():
            policy.infer(observation)
            chunks[0] += 1

    worker = threading.Thread(target=infer_loop, daemon=True)
    worker.start()
    results["inference_same_process"] = tick_loop(seconds)
    stop.set()
    worker.join()
    results["inference_same_process"]["chunks_per_s"] = chunks[0] / seconds

    ctx = mp.get_context("spawn")  # no fork after torch/onnxruntime threads exist
    ready, stop_event, count = ctx.Event(), ctx.Event(), ctx.Value("i", 0)
    process = ctx.Process(target=_inference_worker, args=(checkpoint, threads, ready, stop_event, count), daemon=True)
    process.start()
    try:
        if not ready.wait(180):
            results["inference_separate_process"] = "worker did not start within 180 s"
            return results
        start_count = count.value
        results["inference_separate_process"] = tick_loop(seconds)
        results["inference_separate_process"]["chunks_per_s"] = (count.value - start_count) / seconds
    finally:
        stop_event.set()
        process.join(30)
        if process.is_alive():
            process.terminate()
    return results


# ---------------------------------------------------------------------- other benches
def run_other(module: str, function: str, kwargs: dict, limit_s: float) -> dict | str:
    code = (
        "import json, sys\n"
        f"sys.path[:0] = [{str(BENCH_DIR.parent)!r}, {str(BENCH_DIR)!r}]\n"
        "try:\n"
        f"    import {module} as bench\n"
        "except ImportError as err:\n"
        "    print('__NOT_AVAILABLE__', err); sys.exit(0)\n"
        f"fn = getattr(bench, {function!r}, None)\n"
        "if fn is None:\n"
        f"    print('__NOT_AVAILABLE__ no function {function}'); sys.exit(0)\n"
        f"print('__RESULT__' + json.dumps(fn(**{kwargs!r}), default=str))\n"
    )
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=limit_s)
    except subprocess.TimeoutExpired:
        return f"timed out after {limit_s:.0f} s"
    for line in done.stdout.splitlines():
        if line.startswith("__RESULT__"):
            result = json.loads(line[len("__RESULT__"):])
            result["bench_wall_s"] = time.perf_counter() - started
            return result
        if line.startswith("__NOT_AVAILABLE__"):
            return "not available" + line[len("__NOT_AVAILABLE__"):]
    return f"failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''}"


def _other_rows(others: dict) -> list[tuple[str, str, str, str]]:
    rows = []
    execution = others.get("execution")
    if isinstance(execution, dict):
        row = next((r for r in execution["idle"] if abs(r["latency_over_chunk"] - 0.6) < 1e-9), execution["idle"][0])
        rows.append((f"execution: overlapped vs blocking moving time (latency {row['latency_over_chunk']:.0%} of chunk)",
                     _x(row["overlapped_over_blocking_moving"]), "", ""))
    else:
        rows.append(("execution bench", str(execution), "", ""))
    recorder = others.get("recorder")
    if isinstance(recorder, dict):
        rows.append(("recorder: flat-out write ceiling / ALOHA load",
                     _x(recorder["flat_out"]["written_MB_per_s"] / recorder["load"]["target_MB_per_s"]), "", ""))
        rows.append(("recorder: messages dropped at ALOHA load", f"{recorder['sustained']['dropped']}", "", ""))
    else:
        rows.append(("recorder bench", str(recorder), "", ""))
    planning = others.get("planning")
    if isinstance(planning, dict):
        row = planning["rows"][-1]
        rows.append((f"planning: best-of-{row['num_candidates']} x ensemble, batched vs sequential",
                     _x(row["speedup"]), "", ""))
    else:
        rows.append(("planning bench", str(planning), "", ""))
    compiled = others.get("compile")
    if isinstance(compiled, dict) and compiled.get("compile", {}).get("compiled"):
        for batch, row in compiled["forward"].items():
            rows.append((f"torch.compile / eager, denoiser forward batch {batch} (tiny, CPU)",
                         _x(row["compiled_speedup"]), "", ""))
        chunk = compiled["chunk"]
        rows.append(("torch.compile / eager, one chunk (infer, tiny, CPU)",
                     _x(chunk["eager"]["wall_ms"] / chunk["compiled"]["wall_ms"]), "", ""))
        rows.append(("VAE encode full video / conditioned prefix (tiny, CPU)",
                     _x(chunk["vae_encode"]["full_vae_ms"] / chunk["vae_encode"]["prefix_vae_ms"]), "", ""))
    else:
        rows.append(("compile bench", str(compiled if not isinstance(compiled, dict) else compiled["compile"]), "", ""))
    return rows


# ---------------------------------------------------------------------- report
def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def table_rows(results: dict) -> list[tuple[str, str, str, str]]:
    onnx, overhead, ticks = results["onnx"], results["overhead"], results["executor_ticks"]
    target_x = TARGETS["onnx_speedup"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    speed = onnx["speedup"]
    rows = [
        ("ONNX Runtime / torch eager, per denoising step (batch 1)", _x(speed["step"]), f">= {target_x}x",
         verdict(speed["step"] >= target_x)),
        ("ONNX Runtime / torch eager, per chunk (10 steps, denoise)", _x(speed["chunk_denoise"]), f">= {target_x}x",
         verdict(speed["chunk_denoise"] >= target_x)),
        ("ONNX Runtime / torch eager, per chunk (infer; VAE in torch)", _x(speed["chunk_infer"]), "", ""),
        (f"best-of-{onnx['num_candidates']} batched vs sequential, torch",
         _x(speed["best_of_n_batched_vs_sequential_torch"]), "", ""),
        (f"best-of-{onnx['num_candidates']} batched vs sequential, ONNX Runtime",
         _x(speed["best_of_n_batched_vs_sequential_onnx"]), "", ""),
    ]
    limit = TARGETS["overhead_fraction"]
    rows.append(("overhead / model time, observation -> chunk (no transport)",
                 f"{overhead['overhead_fraction']:.1%}", f"<= {limit:.0%}", verdict(overhead["overhead_fraction"] <= limit)))
    ros = overhead.get("ros")
    if isinstance(ros, dict):
        rows.append(("overhead / model time, with rclpy round trips (3 Images + chunk)",
                     f"{ros['overhead_fraction']:.1%}", f"<= {limit:.0%}", verdict(ros["overhead_fraction"] <= limit)))
    else:
        rows.append(("overhead with rclpy round trips", str(ros), "", ""))
    p99 = TARGETS["p99_period_error_ms"]
    for name, label in (("idle", "no inference"), ("inference_same_process", "inference in-process"),
                        ("inference_separate_process", "inference in another process")):
        tick = ticks.get(name)
        if isinstance(tick, dict):
            rows.append((f"50 Hz executor period error p50 / p99, {label}", f"{tick['p50_ms']:.2f} / {tick['p99_ms']:.2f} ms",
                         f"p99 < {p99:g} ms", verdict(tick["p99_ms"] < p99)))
        else:
            rows.append((f"50 Hz executor, {label}", str(tick), "", ""))
    return rows + _other_rows(results["other_benches"])


def print_table(rows: list[tuple[str, str, str, str]]) -> str:
    width = max(len(r[0]) for r in rows)
    lines = [f"| {'measure':<{width}} | {'value':>17} | {'target':<12} | {'':<6} |",
             f"|{'-' * (width + 2)}|{'-' * 19}|{'-' * 14}|{'-' * 8}|"]
    lines += [f"| {m:<{width}} | {v:>17} | {t:<12} | {s:<6} |" for m, v, t, s in rows]
    text = "\n".join(lines)
    print(text)
    return text


def save_plot(results: dict, path: Path) -> None:
    """Three bar panels (speedups, overhead, tick error) with target lines, drawn with Pillow."""
    from PIL import Image, ImageDraw

    onnx, overhead, ticks = results["onnx"], results["overhead"], results["executor_ticks"]
    ros = overhead.get("ros") if isinstance(overhead.get("ros"), dict) else None
    panels = [
        ("ONNX Runtime / torch (x), target >= 1.5", TARGETS["onnx_speedup"],
         [("step", onnx["speedup"]["step"]), ("chunk", onnx["speedup"]["chunk_denoise"]),
          ("infer", onnx["speedup"]["chunk_infer"]),
          ("best-of-N torch", onnx["speedup"]["best_of_n_batched_vs_sequential_torch"]),
          ("best-of-N onnx", onnx["speedup"]["best_of_n_batched_vs_sequential_onnx"])]),
        ("overhead / model time (%), target <= 5", TARGETS["overhead_fraction"] * 100,
         [("no transport", overhead["overhead_fraction"] * 100)] + ([("rclpy", ros["overhead_fraction"] * 100)] if ros else [])),
        ("50 Hz tick period error p99 (ms), target < 2", TARGETS["p99_period_error_ms"],
         [(name, tick["p99_ms"]) for name, tick in (("idle", ticks.get("idle")),
                                                    ("in-process", ticks.get("inference_same_process")),
                                                    ("separate", ticks.get("inference_separate_process")))
          if isinstance(tick, dict)]),
    ]
    panel_w, panel_h, margin = 420, 320, 40
    image = Image.new("RGB", (panel_w * len(panels), panel_h + 40), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 5), f"cosmos_policy_ros bench {results['machine']['date']} ({results['machine']['host_cpu']})", fill="black")
    for p, (title, target, bars) in enumerate(panels):
        x0, y0 = p * panel_w + margin, 40
        plot_h = panel_h - 2 * margin
        top = max([target * 1.2] + [v * 1.1 for _, v in bars])
        draw.text((x0, y0), title, fill="black")
        base = y0 + 20 + plot_h
        draw.line((x0, base, x0 + panel_w - 2 * margin, base), fill="black")
        bar_w = (panel_w - 2 * margin) / max(len(bars), 1)
        for i, (label, value) in enumerate(bars):
            height = plot_h * value / top
            left = x0 + i * bar_w + 6
            draw.rectangle((left, base - height, left + bar_w - 12, base), fill=(70, 120, 190))
            draw.text((left, base - height - 12), f"{value:.2f}", fill="black")
            draw.text((left, base + 4), label[:14], fill="black")
        y_target = base - plot_h * target / top
        draw.line((x0, y_target, x0 + panel_w - 2 * margin, y_target), fill=(200, 40, 40), width=2)
    image.save(path)


def main() -> int:
    started = time.perf_counter()
    torch.set_num_threads(THREADS)
    results: dict = {"machine": machine(), "threads": THREADS}
    print(f"[bench] {results['machine']['date']} on {results['machine']['host_cpu']}, "
          f"{results['machine']['cpus_available']} CPUs, load {results['machine']['load_average_start']}", flush=True)
    torch_policy, onnx_policy, setup_s = build_policies(threads=THREADS)
    checkpoint = str(default_checkpoint())
    print("[bench] torch eager vs ONNX Runtime ...", flush=True)
    results["onnx"] = run_onnx_bench(policies=(torch_policy, onnx_policy, setup_s), threads=THREADS)
    print("[bench] observation -> chunk overhead ...", flush=True)
    results["overhead"] = run_overhead_bench(onnx_policy)
    print(f"[bench] 50 Hz executor ticks ({TICK_SECONDS:g} s x 3) ...", flush=True)
    results["executor_ticks"] = run_tick_bench(onnx_policy, checkpoint)
    results["other_benches"] = {}
    for name, (module, function, kwargs, limit) in OTHER_BENCHES.items():
        print(f"[bench] {name} ({module}.{function}, limit {limit} s) ...", flush=True)
        results["other_benches"][name] = run_other(module, function, kwargs, limit)
    results["machine"]["load_average_end"] = os.getloadavg()
    results["wall_s"] = time.perf_counter() - started

    print()
    results["table"] = print_table(table_rows(results))
    out_dir = BENCH_DIR / "results"
    out_dir.mkdir(exist_ok=True)
    stem = dt.date.today().isoformat()
    (out_dir / f"{stem}.json").write_text(json.dumps(results, indent=2, default=str))
    try:
        save_plot(results, out_dir / f"{stem}.png")
    except Exception as err:  # noqa: BLE001 - a plot must not lose the numbers
        print(f"[bench] plot not written: {err!r}")
    print(f"\n[bench] {results['wall_s']:.0f} s; results in {out_dir / stem}.json and .png; load average "
          f"{results['machine']['load_average_start']} -> {results['machine']['load_average_end']} "
          "(a busy machine inflates medians and tick errors)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
