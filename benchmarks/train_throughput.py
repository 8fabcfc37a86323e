"""Training throughput (env-steps consumed per second over whole iterations), matched to the reference.

Each configuration mirrors what ``shared/bench/reference_warpdrive.py`` runs for the reference WarpDrive:
the same env parameters (its shipped training YAMLs), the same number of envs, the same batch per
iteration (``train_batch_size`` = envs x rollout length), the same models (the reference's ``fully_connected``: one ReLU
trunk shared by the policy heads and the value head; two 256x256 policies, taggers and runners, for
Tag-continuous; one shared 32x32 policy for Tag-gridworld, as its YAMLs) and the
same algorithm (A2C: one gradient step per iteration). PPO (4 epochs, 4 minibatches) is reported beside.
Setup (env, models, compilation from the warm cache, CUDA-graph capture) is timed separately; the rate is
the median over timed iterations after one warm-up iteration.

    python benchmarks/train_throughput.py [NAME ...] [--algorithms a2c ppo] [--iterations 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from env_throughput import TAG_CONTINUOUS_TRAINING, TAG_GRIDWORLD_TRAINING

# name: (env, env kwargs, num_envs, reference train_batch_size, hidden sizes, groups)
CONFIGS = {
    "tc_default": ("tag_continuous", {"num_taggers": 10, "num_runners": 100}, 100, 25000, 256, True),
    "tc_mid": ("tag_continuous", {"num_taggers": 10, "num_runners": 90}, 1000, 100000, 256, True),
    "tc_many_envs": ("tag_continuous", {"num_taggers": 2, "num_runners": 8}, 2000, 200000, 256, True),
    "gw_default": ("tag_gridworld", {"num_taggers": 4}, 2000, 200000, 32, False),
    "gw_1000_agents": ("tag_gridworld", {"num_taggers": 999, "use_full_observation": False}, 2000, 8000, 32, False),
    # the reference cannot set this one up (see shared/bench/README.md); 10M agent rows per iteration
    "tc_1000_agents": ("tag_continuous", {"num_taggers": 100, "num_runners": 900}, 2000, 10000, 256, True),
}
# The reference's A2C hyperparameters (its YAMLs): lr 0.005 runners / 0.001 taggers (0.001 shared),
# entropy 0.05, value coefficient 1, gradient clip 0.5 (3 for the gridworld), gamma 0.98.
REFERENCE_LR = {"runners": 0.005, "taggers": 0.001, "shared": 0.001}


def train_config(name: str, algorithm: str, mixed_precision: str) -> dict:
    env_name, kwargs, num_envs, batch, hidden, per_group = CONFIGS[name]
    base = TAG_CONTINUOUS_TRAINING if env_name == "tag_continuous" else TAG_GRIDWORLD_TRAINING
    rollout = batch // num_envs
    grad_clip = 0.5 if env_name == "tag_continuous" else 3.0
    groups = ["taggers", "runners"] if per_group else ["shared"]
    policies = {}
    for group in groups:
        spec = {
            "algorithm": algorithm,
            # the reference's FullyConnected: one trunk shared by the policy heads and the value head
            "model": {"hidden_sizes": [hidden, hidden], "activation": "relu", "shared_trunk": True},
            "optimizer": {"lr": REFERENCE_LR[group]},
        }
        if algorithm == "a2c":
            spec["a2c"] = {"gamma": 0.98, "ent_coef": 0.05, "vf_coef": 1.0, "max_grad_norm": grad_clip}
        else:
            spec["ppo"] = {"gamma": 0.98, "ent_coef": 0.05, "vf_coef": 1.0, "max_grad_norm": grad_clip,
                           "update_epochs": 4, "num_minibatches": 4}
        policies[group] = spec
    return {
        "env": {"name": env_name, "num_envs": num_envs, "kwargs": {**base, **kwargs}},
        "total_env_steps": 10**12,
        "rollout_length": rollout,
        "seed": 0,
        "mixed_precision": mixed_precision,
        "policies": policies,
        "logging": {"tensorboard": False, "progress": False, "learning_curve": False, "root": "/tmp/wd-bench-runs"},
        "checkpoint": {"every": 0, "at_end": False},
    }


def measure(name: str, algorithm: str, mixed_precision: str, iterations: int, update_graph: bool = True) -> dict:
    import torch

    from warpdrive.training.config import load_config
    from warpdrive.training.trainer import Trainer

    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.zeros(1, device="cuda")
    t0 = time.perf_counter()
    trainer = Trainer(load_config(train_config(name, algorithm, mixed_precision)))
    for policy in trainer.policies:
        policy.algorithm.cuda_graph = policy.algorithm.cuda_graph and update_graph
    # warm-up: compilation from cache, lazy init, the rollout's graph capture (first iteration) and the
    # updates' (second)
    for _ in range(2):
        trainer.train_iteration()
    sync()
    setup_s = time.perf_counter() - t0
    steps_per_iteration = trainer.config.env.num_envs * trainer.config.rollout_length
    rates, rollout_s, update_s = [], [], []
    for _ in range(iterations):
        sync()
        start = time.perf_counter()
        metrics = trainer.train_iteration()
        sync()
        rates.append(steps_per_iteration / (time.perf_counter() - start))
        rollout_s.append(metrics.get("time/rollout_s", float("nan")))
        update_s.append(metrics.get("time/update_s", float("nan")))
    env = trainer.env
    return {
        "name": name, "algorithm": algorithm, "mixed_precision": mixed_precision, "agents": env.num_agents,
        "envs": env.num_envs, "batch_env_steps": steps_per_iteration,
        "batch_agent_rows": steps_per_iteration * env.num_agents,
        "setup_s": round(setup_s, 2), "train_env_steps_per_s": round(statistics.median(rates)),
        "rollout_s": round(statistics.median(rollout_s), 4), "update_s": round(statistics.median(update_s), 4),
        "cuda_graph": trainer.uses_cuda_graph,
        "update_graph": all(getattr(p.algorithm, "update_captured", False) for p in trainer.policies
                            if p.storage is not None),
        "device": torch.cuda.get_device_name() if cuda else "cpu",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"configurations (default: all of {list(CONFIGS)})")
    parser.add_argument("--algorithms", nargs="+", default=["a2c", "ppo"], choices=["a2c", "ppo"])
    parser.add_argument("--precision", nargs="+", default=["none", "tf32", "bf16"], choices=["none", "tf32", "bf16"])
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--update-graph", nargs="+", default=["on"], choices=["on", "off"],
                        help="capture the updates in CUDA graphs (both: an A/B in one call)")
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=os.environ.get("OUT"), help="folder for train_throughput.jsonl")
    args = parser.parse_args()
    if args.one:
        name, algorithm, precision, update_graph = args.one
        try:
            result = measure(name, algorithm, precision, args.iterations, update_graph == "on")
        except Exception as error:  # report and go on with the other configurations
            result = {"name": name, "algorithm": algorithm, "mixed_precision": precision, "error": repr(error)[:400]}
        print(json.dumps(result), flush=True)
        return
    results = []
    for name in args.names or list(CONFIGS):
        for algorithm in args.algorithms:
            for precision in args.precision:
                for update_graph in args.update_graph:
                    command = [sys.executable, __file__, "--one", name, algorithm, precision, update_graph,
                               f"--iterations={args.iterations}"]
                    proc = subprocess.run(command, capture_output=True, text=True)
                    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
                    result = json.loads(lines[-1]) if lines else {"name": name, "algorithm": algorithm,
                                                                   "error": proc.stderr[-400:]}
                    print(json.dumps(result), flush=True)
                    results.append(result)
    if args.out:
        with open(os.path.join(args.out, "train_throughput.jsonl"), "a") as handle:
            for result in results:
                handle.write(json.dumps(result) + "\n")
    print(f"\n{'config':14s} {'algo':5s} {'prec':5s} {'graph':5s} {'env-steps/s':>12s} {'rollout s':>9s} "
          f"{'update s':>9s} {'setup s':>8s}")
    for r in results:
        if "error" in r:
            print(f"{r['name']:14s} {r['algorithm']:5s} ERROR {r['error'][:90]}")
        else:
            graph = "yes" if r["update_graph"] else "no"
            print(f"{r['name']:14s} {r['algorithm']:5s} {r['mixed_precision']:5s} {graph:5s} "
                  f"{r['train_env_steps_per_s']:>12,d} "
                  f"{r['rollout_s']:>9.3f} {r['update_s']:>9.3f} {r['setup_s']:>8.2f}")


if __name__ == "__main__":
    main()
