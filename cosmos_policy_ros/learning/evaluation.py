"""`cosmos-policy-ros eval`: a policy's success rate over seeded, held-out sim episodes.

Runs the full ROS graph (sim_node -> policy_node -> chunk_executor_node -> sim_node) via
the `demo` machinery in eval mode (`sim.eval_mode`, blocking trigger): sim time stops
while the executor has no chunk, so a slow CPU gives the outcome a fast GPU would.

Seeds: demonstrations (`demos`, `embedded-model`) use seeds below HELD_OUT_SEED_START;
eval starts there, so its cube positions were never in the training demos.

With ``--planning`` the policy node plans best-of-N through planner_node with the config's
settings (official ALOHA: N = 8, 3 future x 5 value samples, majority mean) and the
planning checkpoint ``--planning-checkpoint`` (default: the policy checkpoint itself, its
own world model and value head); the policy waits for the planner instead of falling back
(sim time stands still meanwhile), and fallbacks, if any, are reported.

Writes out/eval.json (settings, per-episode results, summary with the success rate's 95 %
Wilson interval and the planning settings) and out/eval.png (success per seed; predicted
value and reward over time for the first few episodes).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import numpy as np

HELD_OUT_SEED_START = 100_000
ROLLOUT_SEED_START = 200_000  # collect-rollouts: seeds of rollouts for the planning model start here
PLOTTED_EPISODES = 4


def wilson_interval(successes: int, episodes: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a success rate (default 95 %); (0, 1) for no episodes.
    Unlike the normal approximation it stays inside [0, 1] and is not empty at 0/n or n/n."""
    if episodes <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= episodes:
        raise ValueError(f"successes must be in [0, {episodes}], got {successes}")
    p = successes / episodes
    denominator = 1 + z * z / episodes
    centre = (p + z * z / (2 * episodes)) / denominator
    half = z * math.sqrt(p * (1 - p) / episodes + z * z / (4 * episodes * episodes)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def summarize(results: list[dict], wall_s: float, chunk_latency_ms: float | None) -> dict:
    successes = sum(bool(r["success"]) for r in results)
    low, high = wilson_interval(successes, len(results))
    return {"episodes": len(results), "successes": successes,
            "success_rate": successes / len(results) if results else 0.0,
            "success_rate_ci95": [round(low, 4), round(high, 4)], "ci_method": "Wilson score, 95 %",
            "mean_max_reward": float(np.mean([r["max_reward"] for r in results])) if results else 0.0,
            "wall_s": round(wall_s, 1), "chunk_latency_ms": chunk_latency_ms,
            "mode": results[0].get("mode", "realtime") if results else "unknown"}


def format_table(summary: dict) -> str:
    latency = "-" if summary["chunk_latency_ms"] is None else f"{summary['chunk_latency_ms']:.0f}"
    low, high = summary.get("success_rate_ci95", (0.0, 1.0))
    header = (f"{'episodes':>8} {'successes':>9} {'rate':>6} {'95% CI':>11} {'mean max reward':>15} {'wall s':>7} "
              f"{'chunk latency ms':>16}")
    row = (f"{summary['episodes']:>8} {summary['successes']:>9} {summary['success_rate']:>6.0%} "
           f"{f'{low:.0%}-{high:.0%}':>11} {summary['mean_max_reward']:>13.2f}/4 {summary['wall_s']:>7.1f} "
           f"{latency:>16}")
    lines = [header, row, f"mode: {summary['mode']}"]
    planning = summary.get("planning")
    if planning:
        stats = planning.get("stats") or {}
        noise = planning.get("candidate_noise_rad") or 0.0
        moved = f", candidates 1.. moved by {noise:g} rad" if noise else ""
        lines.append(f"planning: best of {planning['num_candidates']}{moved} with {planning['checkpoint']} "
                     f"({planning['num_future_samples']} future x {planning['num_value_samples']} value samples, "
                     f"{planning['aggregation']}); requests {stats.get('requests', '?')}, planned "
                     f"{stats.get('planned', '?')}, fallbacks {stats.get('fallbacks', '?')}")
    else:
        lines.append("planning: off (the policy's own chunks)")
    return "\n".join(lines)


def planning_stats(policy_log: Path) -> dict | None:
    """The policy node's last planning line: requests, planned, fallbacks, chosen indices."""
    try:
        lines = [line for line in policy_log.read_text(errors="replace").splitlines() if "planning: requests" in line]
    except OSError:
        return None
    if not lines:
        return None
    found = re.search(r"requests (\d+), planned (\d+), fallbacks (.*?) \(max wait.*?chosen (.*?), planner time "
                      r"(.*?), last values", lines[-1])
    if not found:
        return None
    return {"requests": int(found[1]), "planned": int(found[2]), "fallbacks": found[3], "chosen": found[4],
            "planner_time": found[5]}


PLANNING_SUFFIX = "_planning"


def companion_planning_checkpoint(policy_checkpoint: str | Path) -> Path | None:
    """The planning model fine-tuned for ``policy_checkpoint``: the folder of the same name plus
    ``_planning`` beside it (``make embedded-planning-model`` writes the shipped one there), or None."""
    if not policy_checkpoint:
        return None
    folder = Path(policy_checkpoint)
    companion = folder.with_name(folder.name + PLANNING_SUFFIX)
    return companion if (companion / "cosmos_policy.json").is_file() else None


def planning_overrides(config) -> dict:
    """Eval mode with planning: the policy waits for the planner (up to most of the sim's
    longest chunk wait) instead of falling back to candidate 0 after the real-time deadline;
    sim time stands still meanwhile, so the chunk is not stale. No imagination decoding
    (CPU time, no effect on outcomes)."""
    deadline = 0.9 * config.sim.eval_max_wait_s
    return {"planning.deadline_s": deadline,
            "execution.max_chunk_age_s": max(config.execution.max_chunk_age_s, deadline + 10.0),
            "planning.publish_imagination": False}


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
    parser.add_argument("--planning", action="store_true",
                        help="plan best-of-N with planner_node, the config's settings (official ALOHA: N = 8, "
                             "3 future x 5 value samples, majority mean)")
    parser.add_argument("--planning-checkpoint", default="",
                        help="planning model folder (default: the policy checkpoint's '<name>_planning' folder beside "
                             "it when there, as for the shipped embedded model, else the policy checkpoint's own "
                             "world model + value; pass the policy checkpoint to force that)")
    parser.add_argument("--candidate-noise", type=float, default=None, metavar="RAD",
                        help="with --planning: planning.candidate_noise_rad (candidates 1..N-1 moved by one Gaussian "
                             "offset per arm joint; default: the config's)")
    parser.add_argument("--episode-length", type=float, default=0.0, help="sim seconds per episode (default: config)")
    parser.add_argument("--out", default="out/eval", help="eval.json, eval.png and logs go here")
    parser.add_argument("--timeout", type=float, default=0.0, help="give up after this many seconds")


def run_eval(args: argparse.Namespace) -> int:
    import time

    from cosmos_policy_ros.cli import run_demo
    from cosmos_policy_ros.config import load_config

    if args.episodes <= 0:
        print(f"[eval] --episodes must be positive, got {args.episodes}", file=sys.stderr)
        return 2
    if args.seed < HELD_OUT_SEED_START:
        print(f"[eval] warning: seeds from {args.seed} may overlap demonstration seeds (< {HELD_OUT_SEED_START})",
              file=sys.stderr)
    if args.seed + args.episodes - 1 >= ROLLOUT_SEED_START:
        print(f"[eval] warning: seeds up to {args.seed + args.episodes - 1} may overlap the rollouts a planning model "
              f"was trained on (collect-rollouts seeds >= {ROLLOUT_SEED_START})", file=sys.stderr)
    out = Path(args.out)
    config = load_config(args.config)
    checkpoint = args.checkpoint or config.policy.checkpoint
    if not checkpoint and args.policy == "cosmos":
        from cosmos_policy_ros.control.policies import default_checkpoint

        checkpoint = str(default_checkpoint())
    planning_checkpoint = getattr(args, "planning_checkpoint", "") or ""
    overrides = {}
    if args.planning:
        if not planning_checkpoint:
            companion = companion_planning_checkpoint(checkpoint)
            planning_checkpoint = str(companion) if companion else checkpoint
            print(f"[eval] planning checkpoint: {planning_checkpoint} "
                  f"({'the policy checkpoint ' + PLANNING_SUFFIX + ' folder beside it' if companion else 'the policy checkpoint itself: its own world model + value'})")
        overrides = planning_overrides(config)
        from cosmos_policy_ros.model.hub import looks_like_hub_id

        if not Path(planning_checkpoint).is_dir() and not looks_like_hub_id(planning_checkpoint):
            print(f"[eval] --planning-checkpoint {planning_checkpoint}: not a checkpoint folder", file=sys.stderr)
            return 2
        noise = getattr(args, "candidate_noise", None)
        if noise is not None:
            if not noise >= 0:
                print(f"[eval] --candidate-noise must be >= 0 rad, got {noise}", file=sys.stderr)
                return 2
            overrides["planning.candidate_noise_rad"] = float(noise)
    elif planning_checkpoint:
        print("[eval] --planning-checkpoint without --planning: planning stays off", file=sys.stderr)
        planning_checkpoint = ""
    demo_args = argparse.Namespace(
        config=args.config, episodes=args.episodes, seed=args.seed, policy=args.policy, checkpoint=checkpoint,
        backend=args.backend, planning=args.planning, planning_checkpoint=planning_checkpoint,
        episode_length=args.episode_length, record="", out=str(out), timeout=args.timeout, eval_mode=True,
        overrides=overrides)
    started = time.perf_counter()
    code = run_demo(demo_args)
    wall = time.perf_counter() - started
    if code != 0:
        return code
    results = json.loads((out / "results.json").read_text())
    summary = summarize(results, wall, chunk_latency_ms(results, out / "logs" / "policy_node.log"))
    summary["checkpoint"] = checkpoint
    if args.planning:
        p = load_config(out / "config.yaml").planning
        summary["planning"] = {
            "checkpoint": planning_checkpoint, "num_candidates": p.num_candidates,
            "num_future_samples": p.num_future_samples, "num_value_samples": p.num_value_samples,
            "aggregation": p.aggregation, "ensemble_steps": p.ensemble_steps, "deadline_s": p.deadline_s,
            "candidate_noise_rad": p.candidate_noise_rad,
            "stats": planning_stats(out / "logs" / "policy_node.log")}
    plotter = plot_eval(results, out / "eval.png")
    (out / "eval.json").write_text(json.dumps({
        "settings": {k: v for k, v in vars(args).items()}, "seeds": [args.seed, args.seed + args.episodes - 1],
        "summary": summary, "episodes": results}, indent=2))
    print(format_table(summary))
    fallbacks = (summary.get("planning") or {}).get("stats") or {}
    if args.planning and fallbacks.get("fallbacks") not in (None, "none"):
        print(f"[eval] warning: planning fell back to candidate 0 for {fallbacks['fallbacks']}; "
              f"see {out / 'logs' / 'policy_node.log'}", file=sys.stderr)
    print(f"[eval] wrote {out / 'eval.json'} and {out / 'eval.png'} ({plotter})")
    return 0


def comparison_table(reports: dict[str, dict]) -> str:
    """A markdown table of several eval.json reports (name -> report) run on the same seeds;
    ValueError when their seeds differ (rates on different cube positions do not compare)."""
    seeds = {name: tuple(report["seeds"]) for name, report in reports.items()}
    if len(set(seeds.values())) > 1:
        raise ValueError(f"the evaluations ran on different seeds: {seeds}")
    header = ("| policy | planning checkpoint | episodes | successes | success rate | 95 % interval (Wilson) | "
              "mean max reward |")
    rows = [header, "|---|---|---:|---:|---:|---:|---:|"]
    for name, report in reports.items():
        s = report["summary"]
        planning = s.get("planning")
        low, high = s["success_rate_ci95"]
        rows.append(f"| {name} | {planning['checkpoint'] if planning else '- (no planning)'} | {s['episodes']} | "
                    f"{s['successes']} | {s['success_rate']:.0%} | {low:.0%}-{high:.0%} | "
                    f"{s['mean_max_reward']:.2f} / 4 |")
    first, last = next(iter(seeds.values()))
    rows.append(f"\nseeds {first}-{last}, eval mode")
    return "\n".join(rows)


def add_eval_table_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("reports", nargs="+", metavar="NAME=EVAL_JSON",
                        help="eval.json files, each optionally named (plain=out/eval_plain/eval.json)")


def run_eval_table(args: argparse.Namespace) -> int:
    reports = {}
    for item in args.reports:
        name, _, path = item.rpartition("=") if "=" in item else (Path(item).parent.name, "", item)
        try:
            reports[name] = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            print(f"[eval-table] {path}: {err}", file=sys.stderr)
            return 2
    try:
        print(comparison_table(reports))
    except (ValueError, KeyError) as err:
        print(f"[eval-table] {err!r}", file=sys.stderr)
        return 2
    return 0
