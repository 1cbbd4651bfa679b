"""`cosmos-policy-ros` command line: the closed-loop demo and the offline tools.

Subcommands: demo, label, recover, and the tools in TOOLS (checkpoints, datasets, training,
rollout collection, evaluation). Each tool module exposes `add_*_arguments(parser)` and `run_*(args)`.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

# subcommand -> (module, add-arguments function, run function, help)
TOOLS = {
    "make-tiny-checkpoint": ("cosmos_policy_ros.model.tiny", "add_tiny_arguments",
                             "run_tiny", "write the tiny random Cosmos checkpoint folder"),
    "convert-checkpoint": ("cosmos_policy_ros.model.convert", "add_convert_arguments",
                           "run_convert", "official Cosmos Policy checkpoint -> checkpoint folder"),
    "bags-to-dataset": ("cosmos_policy_ros.learning.bags_to_dataset", "add_bags_to_dataset_arguments",
                        "run_bags_to_dataset", "recorded rosbag2 episodes -> ALOHA HDF5 training episodes"),
    "train": ("cosmos_policy_ros.learning.training", "add_train_arguments", "run_train",
              "fine-tune a checkpoint folder (policy / world model / value objectives)"),
    "pack-dataset": ("cosmos_policy_ros.learning.packed_dataset", "add_pack_dataset_arguments", "run_pack_dataset",
                     "episode folders -> one small file of preprocessed samples (train on another host)"),
    "export-onnx": ("cosmos_policy_ros.model.onnx_backend", "add_export_onnx_arguments", "run_export_onnx",
                    "export a checkpoint's denoiser to ONNX"),
    "demos": ("cosmos_policy_ros.learning.demos", "add_demos_arguments", "run_demos",
              "scripted-expert transfer-cube demonstrations -> training HDF5 episodes (in-process sim)"),
    "train-vae": ("cosmos_policy_ros.learning.vae", "add_train_vae_arguments", "run_train_vae",
                  "train a small Wan VAE on a dataset's camera frames (embedded checkpoints)"),
    "embedded-model": ("cosmos_policy_ros.learning.embedded_model", "add_embedded_model_arguments",
                       "run_embedded_model", "rebuild the embedded default checkpoint: demos -> VAE -> policy"),
    "offline-eval": ("cosmos_policy_ros.learning.offline_eval", "add_offline_eval_arguments", "run_offline_eval",
                     "action / world-model L1 on demonstrations and in-process closed-loop episodes"),
    "eval": ("cosmos_policy_ros.learning.evaluation", "add_eval_arguments", "run_eval",
             "success rate over held-out seeds through the ROS graph (eval mode)"),
    "eval-table": ("cosmos_policy_ros.learning.evaluation", "add_eval_table_arguments", "run_eval_table",
                   "markdown table of eval.json reports on the same seeds (plain vs planning)"),
    "collect-rollouts": ("cosmos_policy_ros.learning.rollouts", "add_collect_rollouts_arguments",
                         "run_collect_rollouts",
                         "policy rollouts through the ROS graph, recorded, sim-labelled -> training dataset"),
    "embedded-planning-model": ("cosmos_policy_ros.learning.planning_model", "add_embedded_planning_model_arguments",
                                "run_embedded_planning_model",
                                "rebuild the embedded planning checkpoint: demos + rollouts -> planning fine-tune"),
    "planning-diagnostics": ("cosmos_policy_ros.learning.planning_diagnostics",
                             "add_planning_diagnostics_arguments", "run_planning_diagnostics",
                             "what best-of-N chooses from: candidate diversity, value ranges, a seed-only control"),
    "average-checkpoints": ("cosmos_policy_ros.learning.checkpoint_average", "add_average_checkpoints_arguments",
                            "run_average_checkpoints",
                            "mean of the transformer weights of fine-tunes of one checkpoint (a model soup)"),
    "value-eval": ("cosmos_policy_ros.learning.value_eval", "add_value_eval_arguments", "run_value_eval",
                   "value AUROC and world-model L1 of planning checkpoints on held-out rollouts"),
}


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="aloha", help="robot YAML (path or name in config/)")
    parser.add_argument("--episodes", type=int, default=1, help="sim episodes to run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    parser.add_argument("--policy", default="", help="override policy.type (scripted_transfer_cube | replay | cosmos)")
    parser.add_argument("--checkpoint", default="", help="Cosmos checkpoint folder (policy cosmos)")
    parser.add_argument("--backend", default="", help="torch | onnx (policy cosmos)")
    parser.add_argument("--planning", action="store_true", help="start planner_node and plan best-of-N")
    parser.add_argument("--planning-checkpoint", default="", help="planning model folder (default: the config's planning.checkpoint; `eval --planning` "
                             "defaults to the policy checkpoint)")
    parser.add_argument("--episode-length", type=float, default=0.0, help="sim seconds per episode (default: config)")
    parser.add_argument("--record", default="", help="record rollouts (rosbag2 MCAP) into this folder")
    parser.add_argument("--out", default="out/demo", help="logs and results.json go here")
    parser.add_argument("--timeout", type=float, default=0.0, help="give up after this many seconds (default: generous)")
    parser.add_argument("--eval-mode", action="store_true",
                        help="sim time stops while the executor waits for a chunk (blocking trigger)")


# Eval mode: the sim stops while the executor has no chunk, and the policy asks for the
# next chunk only when the running one is done, so compute time cannot change the outcome.
EVAL_MODE_OVERRIDES = {"sim.eval_mode": True, "policy.trigger": "blocking"}


def write_effective_config(config_path: str, overrides: dict, out: Path) -> Path:
    """The robot YAML with `overrides` ('section.key' -> value) applied, written to
    out/config.yaml (validated) so every node reads the same settings."""
    import yaml

    from cosmos_policy_ros.config import load_config, resolve_config_path

    raw = yaml.safe_load(resolve_config_path(config_path).read_text()) or {}
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        raw.setdefault(section, {})[key] = value
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    load_config(path)
    return path


class EpisodeProgress:
    """Prints each episode's outcome as the sim appends it to its results file."""

    def __init__(self, results_file: Path, episodes: int, interval_s: float = 1.0) -> None:
        self.results_file = results_file
        self.episodes = episodes
        self.interval_s = interval_s
        self.printed = 0
        self._last = 0.0

    def __call__(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._last < self.interval_s:
            return
        self._last = time.monotonic()
        try:
            results = json.loads(self.results_file.read_text())
        except (OSError, ValueError):
            return
        for r in results[self.printed:]:
            if "error" not in r:
                print(f"[demo] episode {self.printed + 1}/{self.episodes or '?'} seed {r['seed']}: "
                      f"{'success' if r['success'] else 'failure'} (max reward {r['max_reward']}/4), "
                      f"wall {r['wall_s']:.1f} s", flush=True)
            self.printed += 1


def run_demo(args: argparse.Namespace) -> int:
    from cosmos_policy_ros.config import load_config
    from cosmos_policy_ros.nodes.launcher import Graph, ros_env, tail

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = load_config(args.config)
    # Callers (eval, collect-rollouts) add their own 'section.key' overrides.
    overrides = dict(EVAL_MODE_OVERRIDES) if getattr(args, "eval_mode", False) else {}
    overrides.update(getattr(args, "overrides", None) or {})
    if overrides:
        config = load_config(write_effective_config(args.config, overrides, out))
    mode = "eval (sim time stops while no chunk runs)" if config.sim.eval_mode else "real time"
    results_file = out / "results.json"
    results_file.unlink(missing_ok=True)
    common = {"config_file": str(config.path.resolve())}
    policy_params = dict(common, use_sim_time=True)
    for param, value in (("policy_type", args.policy), ("checkpoint", args.checkpoint), ("backend", args.backend)):
        if value:
            policy_params[param] = value
    if args.planning:
        policy_params["planning"] = True
    sim_params = dict(common, num_episodes=args.episodes, seed=args.seed, results_file=str(results_file.resolve()))
    episode_s = args.episode_length or config.sim.episode_length_s
    sim_params["episode_length_s"] = episode_s
    timeout = args.timeout or (60.0 + args.episodes * episode_s * 8.0)

    print(f"[demo] robot config {config.path}; policy {args.policy or config.policy.type}; "
          f"{args.episodes} episode(s) of {episode_s:g} s sim; mode {mode}; logs in {out}/", flush=True)
    started = time.perf_counter()
    with Graph(ros_env(), out / "logs") as graph:
        graph.start("chunk_executor_node", dict(common, use_sim_time=True))
        graph.start("policy_node", policy_params)
        if args.planning:
            planner = dict(common, use_sim_time=True)
            if args.planning_checkpoint:
                planner["checkpoint"] = args.planning_checkpoint
            graph.start("planner_node", planner)
        if args.record:
            graph.start("recorder_node", dict(common, use_sim_time=True, output_dir=str(Path(args.record).resolve())))
        graph.start("sim_node", sim_params)
        progress = EpisodeProgress(results_file, args.episodes)
        try:
            code = graph.wait("sim_node", timeout, poll=progress)
        except RuntimeError as exc:
            print(f"[demo] FAILED: {exc}", file=sys.stderr)
            return 1
        if code is None:
            print(f"[demo] FAILED: no result after {timeout:.0f} s; sim log:\n{tail(graph.nodes['sim_node'].log_path)}",
                  file=sys.stderr)
            return 1
        logs = {name: node.log_path for name, node in graph.nodes.items()}
    wall = time.perf_counter() - started
    if not results_file.exists():
        print(f"[demo] FAILED: the sim wrote no results; sim log:\n{tail(logs['sim_node'])}", file=sys.stderr)
        return 1
    results = json.loads(results_file.read_text())
    progress(force=True)
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        print(f"[demo] FAILED: the simulation stopped: {errors[0]}; sim log:\n{tail(logs['sim_node'])}", file=sys.stderr)
        return 1
    print(f"[demo] {'episode':<28} {'result':<8} {'max reward':>10} {'sim s':>6} {'wall s':>7}")
    for r in results:
        print(f"[demo] {r['episode_id']:<28} {'success' if r['success'] else 'failure':<8} "
              f"{r['max_reward']:>8}/4 {r['sim_s']:>6.1f} {r['wall_s']:>7.1f}")
    successes = sum(r["success"] for r in results)
    rtf = sum(r["sim_s"] for r in results) / max(1e-9, sum(r["wall_s"] for r in results))
    print(f"[demo] {successes}/{len(results)} succeeded; total wall {wall:.1f} s (real-time factor {rtf:.2f} "
          f"while running); mode {mode}; executor/policy statistics in {out}/logs/", flush=True)
    for name in ("policy_node", "chunk_executor_node"):
        stats = [line for line in logs[name].read_text(errors="replace").splitlines() if "chunks" in line]
        if stats:
            print(f"[demo] {name}: {stats[-1].split(']: ')[-1]}")
    return 0


def add_label_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bags", nargs="+", help="episode bag folders written by recorder_node")
    outcome = parser.add_mutually_exclusive_group(required=True)
    outcome.add_argument("--success", action="store_true", help="the episode succeeded")
    outcome.add_argument("--failure", action="store_true", help="the episode failed")
    parser.add_argument("--score", type=float, default=None, help="graded outcome in [0, 1] (optional)")
    parser.add_argument("--note", default="", help="free text kept with the label")


def run_label(args: argparse.Namespace) -> int:
    """Set or correct recorded episodes' outcomes (outcome.yaml; earlier labels are kept)."""
    from cosmos_policy_ros.recording import label_episode

    for bag in args.bags:
        try:
            label_episode(bag, success=bool(args.success), score=args.score, note=args.note)
        except (OSError, ValueError) as exc:
            print(f"[label] {bag}: {exc}", file=sys.stderr)
            return 2
        print(f"[label] {bag}: {'success' if args.success else 'failure'}"
              + (f" (score {args.score:g})" if args.score is not None else ""))
    return 0


def add_recover_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bags", nargs="+", help="episode bag folders of a recorder that was killed")


def run_recover(args: argparse.Namespace) -> int:
    """Make killed recorders' bags readable (complete MCAP records kept, torn tail dropped)."""
    from cosmos_policy_ros.recording import RecorderError, recover

    status = 0
    for bag in args.bags:
        try:
            result = recover(bag)
        except (OSError, RecorderError) as exc:
            print(f"[recover] {bag}: {exc}", file=sys.stderr)
            status = 2
            continue
        if result.already_closed:
            print(f"[recover] {bag}: already closed ({result.messages} messages), left untouched")
        else:
            print(f"[recover] {bag}: recovered {result.messages} messages, "
                  f"{result.dropped_tail_bytes} torn bytes dropped")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cosmos-policy-ros", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="simulated ALOHA closed loop through the ROS graph")
    add_demo_arguments(demo)
    demo.set_defaults(run=run_demo)
    label = sub.add_parser("label", help="set or correct the outcome of recorded episodes")
    add_label_arguments(label)
    label.set_defaults(run=run_label)
    recover = sub.add_parser("recover", help="make the bags of a killed recorder readable")
    add_recover_arguments(recover)
    recover.set_defaults(run=run_recover)
    for name, (module, add, run, help_text) in TOOLS.items():
        tool = sub.add_parser(name, help=help_text)
        tool.set_defaults(module=module, add=add, run_name=run)
    # Tool modules import torch; only import the one asked for.
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in TOOLS:
        module, add, run, help_text = TOOLS[argv[0]]
        mod = importlib.import_module(module)
        tool = argparse.ArgumentParser(prog=f"cosmos-policy-ros {argv[0]}", description=help_text)
        getattr(mod, add)(tool)
        return int(getattr(mod, run)(tool.parse_args(argv[1:])) or 0)
    args = parser.parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
