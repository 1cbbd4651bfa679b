"""`cosmos-policy-ros eval`: a policy's success rate over seeded, held-out sim episodes.

Runs the full ROS graph (sim_node -> policy_node -> chunk_executor_node -> sim_node) via
the `demo` machinery in eval mode (`sim.eval_mode`, blocking trigger): sim time stops
while the executor has no chunk, so a slow CPU gives the outcome a fast GPU would.

Seeds: demonstrations (`demos`, `embedded-model`) use seeds below HELD_OUT_SEED_START;
eval starts there, so its cube positions were never in the training demos.

Writes out/eval.json (settings, per-episode results, summary) and out/eval.png (success
per seed; predicted value and reward over time for the first few episodes).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

HELD_OUT_SEED_START = 100_000
PLOTTED_EPISODES = 4


def summarize(results: list[dict], wall_s: float, chunk_latency_ms: float | None) -> dict:
    successes = sum(bool(r["success"]) for r in results)
    return {"episodes": len(results), "successes": successes,
            "success_rate": successes / len(results) if results else 0.0,
            "mean_max_reward": float(np.mean([r["max_reward"] for r in results])) if results else 0.0,
            "wall_s": round(wall_s, 1), "chunk_latency_ms": chunk_latency_ms,
            "mode": results[0].get("mode", "realtime") if results else "unknown"}


def format_table(summary: dict) -> str:
    latency = "-" if summary["chunk_latency_ms"] is None else f"{summary['chunk_latency_ms']:.0f}"
    header = f"{'episodes':>8} {'successes':>9} {'rate':>6} {'mean max reward':>15} {'wall s':>7} {'chunk latency ms':>16}"
    row = (f"{summary['episodes']:>8} {summary['successes']:>9} {summary['success_rate']:>6.0%} "
           f"{summary['mean_max_reward']:>13.2f}/4 {summary['wall_s']:>7.1f} {latency:>16}")
    return f"{header}\n{row}\nmode: {summary['mode']}"


def chunk_latency_ms(results: list[dict], policy_log: Path) -> float | None:
    """Wall time per chunk: in eval mode, the sim's mean pause per chunk wait (the policy's
    own latency figure is sim time, which stands still there); else the policy log's EMA."""
    paused = sum(r.get("paused_ticks", 0) for r in results)
    if paused:
        return 1e3 * sum(r.get("paused_wall_s", 0.0) for r in results) / paused
    try:
        found = re.findall(r"latency (\d+(?:\.\d+)?) ms", policy_log.read_text(errors="replace"))
    except OSError:
        return None
    return float(found[-1]) if found else None


def plot_eval(results: list[dict], path: Path) -> str:
    """Write the PNG with matplotlib when installed, else a plain PIL drawing; returns which."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _plot_with_pil(results, path)
        return "pil"
    shown = results[:PLOTTED_EPISODES]
    fig, axes = plt.subplots(1 + len(shown), 1, figsize=(8, 2.2 * (1 + len(shown))), squeeze=False)
    ax = axes[0, 0]
    ax.bar([str(r["seed"]) for r in results], [int(r["success"]) for r in results], color="tab:green")
    ax.set_title("success per seed"), ax.set_ylim(0, 1.1)
    for row, r in zip(axes[1:, 0], shown):
        if r.get("reward_trace"):
            t, reward = zip(*r["reward_trace"])
            row.step(t, np.asarray(reward) / 4.0, where="post", label="reward / 4")
        if r.get("predicted_values"):
            t, value = zip(*r["predicted_values"])
            row.plot(t, value, "o-", label="predicted value")
        row.set_title(f"seed {r['seed']}"), row.set_ylim(-0.05, 1.05), row.legend(loc="upper left", fontsize=7)
    axes[-1, 0].set_xlabel("sim time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return "matplotlib"


def _plot_with_pil(results: list[dict], path: Path) -> None:
    from PIL import Image, ImageDraw

    shown = results[:PLOTTED_EPISODES]
    width, panel = 640, 140
    image = Image.new("RGB", (width, panel * (1 + len(shown))), "white")
    draw = ImageDraw.Draw(image)
    draw.text((5, 2), "success per seed (green) / failure (red)", fill="black")
    bar = (width - 20) / max(1, len(results))
    for i, r in enumerate(results):
        x = 10 + i * bar
        draw.rectangle([x, 20, x + bar * 0.8, panel - 20], fill="green" if r["success"] else "red")
    for k, r in enumerate(shown):
        top = panel * (k + 1)
        draw.text((5, top + 2), f"seed {r['seed']}: reward/4 (blue), predicted value (orange)", fill="black")
        for key, colour, scale in (("reward_trace", "blue", 0.25), ("predicted_values", "orange", 1.0)):
            points = r.get(key) or []
            t_max = max([p[0] for p in r.get("reward_trace") or [(1.0, 0)]] + [1e-6])
            xy = [(10 + (width - 20) * p[0] / t_max, top + panel - 10 - (panel - 30) * min(1.0, p[1] * scale))
                  for p in points]
            if len(xy) > 1:
                draw.line(xy, fill=colour, width=2)
    image.save(path)


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="aloha", help="robot YAML (path or name in config/)")
    parser.add_argument("--episodes", type=int, default=20, help="K held-out episodes (default 20)")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED_START,
                        help=f"first seed (default {HELD_OUT_SEED_START}; demos use seeds below it)")
    parser.add_argument("--policy", default="cosmos", help="policy.type (default cosmos)")
    parser.add_argument("--checkpoint", default="", help="Cosmos checkpoint folder (default: the config's)")
    parser.add_argument("--backend", default="", help="torch | onnx")
    parser.add_argument("--planning", action="store_true", help="plan best-of-N with planner_node")
    parser.add_argument("--episode-length", type=float, default=0.0, help="sim seconds per episode (default: config)")
    parser.add_argument("--out", default="out/eval", help="eval.json, eval.png and logs go here")
    parser.add_argument("--timeout", type=float, default=0.0, help="give up after this many seconds")


def run_eval(args: argparse.Namespace) -> int:
    import time

    from cosmos_policy_ros.cli import run_demo

    if args.episodes <= 0:
        print(f"[eval] --episodes must be positive, got {args.episodes}", file=sys.stderr)
        return 2
    if args.seed < HELD_OUT_SEED_START:
        print(f"[eval] warning: seeds from {args.seed} may overlap demonstration seeds (< {HELD_OUT_SEED_START})",
              file=sys.stderr)
    out = Path(args.out)
    demo_args = argparse.Namespace(
        config=args.config, episodes=args.episodes, seed=args.seed, policy=args.policy, checkpoint=args.checkpoint,
        backend=args.backend, planning=args.planning, planning_checkpoint="", episode_length=args.episode_length,
        record="", out=str(out), timeout=args.timeout, eval_mode=True)
    started = time.perf_counter()
    code = run_demo(demo_args)
    wall = time.perf_counter() - started
    if code != 0:
        return code
    results = json.loads((out / "results.json").read_text())
    summary = summarize(results, wall, chunk_latency_ms(results, out / "logs" / "policy_node.log"))
    plotter = plot_eval(results, out / "eval.png")
    (out / "eval.json").write_text(json.dumps({
        "settings": {k: v for k, v in vars(args).items()}, "seeds": [args.seed, args.seed + args.episodes - 1],
        "summary": summary, "episodes": results}, indent=2))
    print(format_table(summary))
    print(f"[eval] wrote {out / 'eval.json'} and {out / 'eval.png'} ({plotter})")
    return 0
