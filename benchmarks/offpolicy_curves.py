"""Learning curves of the off-policy algorithms for continuous actions on MPE simple_spread: MADDPG and MASAC
(centralised critics) against independent DDPG (one shared actor and a local critic) and random actions.

Each algorithm trains from its packaged config (``warpdrive/envs/simple_spread/{maddpg,masac}.yaml``; DDPG from
MADDPG's with ``algorithm: ddpg`` and the same settings counted per agent: batches of 256 env-steps are 256 * N
transitions) for ``--steps`` env-steps per seed; the curve is the mean episodic return per agent of the
episodes that ended in each iteration (``charts/episodic_return/agents``), and after training the policy acts
deterministically for one episode in each of 200 fresh envs. Random actions are evaluated on the same 200.

Writes one JSON line per (algorithm, seed, iteration) (``"kind": "curve"``) and per (algorithm, seed)
(``"kind": "final"``) to ``<out>/offpolicy_curves.jsonl``, and the curves (mean over seeds) to
``<out>/offpolicy_curves.png``.

    python benchmarks/offpolicy_curves.py --steps 300000 --seeds 0 1 2 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import warpdrive
from warpdrive.training.config import load_config
from warpdrive.training.evaluate import evaluate
from warpdrive.training.seeds import plot_seed_curves
from warpdrive.training.trainer import Trainer

CONFIGS = Path(warpdrive.__file__).parent / "envs" / "simple_spread"
METRIC = "charts/episodic_return/agents"
EVAL_ENVS = 200


def algorithm_runs(num_agents: int) -> dict[str, tuple[Path, list[str]]]:
    """name -> (config file, overrides): DDPG's batch and warm-up are MADDPG's in env-steps, times the agents."""
    ddpg = ["policies.shared.algorithm=ddpg", "policies.shared.ddpg.gamma=0.95", "policies.shared.ddpg.tau=0.01",
            f"policies.shared.ddpg.batch_size={256 * num_agents}",
            f"policies.shared.ddpg.learning_starts={2000 * num_agents}", "policies.shared.ddpg.gradient_steps=25",
            "policies.shared.ddpg.policy_frequency=1", "policies.shared.ddpg.max_grad_norm=0.5"]
    return {"maddpg": (CONFIGS / "maddpg.yaml", []), "masac": (CONFIGS / "masac.yaml", []),
            "ddpg": (CONFIGS / "maddpg.yaml", ddpg)}


def train_one(path: Path, overrides: list[str]) -> tuple[list[tuple[int, float]], float, float, float]:
    """Train; returns the curve [(env_steps, mean return)], the final deterministic return, the random
    actions' return (on the same envs) and the training time in seconds."""
    trainer = Trainer(load_config(str(path), overrides))
    curve = []
    start = time.perf_counter()
    while not trainer.done:
        metrics = trainer.train_iteration()
        if METRIC in metrics:
            curve.append((trainer.env_steps, metrics[METRIC]))
    seconds = time.perf_counter() - start
    judge = Trainer(load_config(str(path), [*overrides, f"env.num_envs={EVAL_ENVS}"]))
    judge.load_model_tensors(trainer.model_tensors())
    trained = evaluate(judge, deterministic=True, seed=999)["return/agents"]
    random = evaluate(judge, random_actions=True, seed=999)["return/agents"]
    return curve, trained, random, seconds


def plot(rows: list[dict], random_return: float, path: Path) -> None:
    """Each algorithm's training return against env-steps: the mean over seeds and its 95% bootstrap interval."""
    curves: dict[str, dict[int, list[float]]] = {}
    for r in rows:
        curves.setdefault(r["algorithm"], {}).setdefault(r["env_steps"], []).append(r["return"])
    plot_seed_curves(curves, path, "simple_spread, continuous actions", "episodic return per agent",
                     baseline=("random actions", random_return))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300_000, help="env-steps per training run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--agents", type=int, default=3, help="simple_spread's N")
    parser.add_argument("--algorithms", nargs="+", default=["maddpg", "masac", "ddpg"],
                        choices=["maddpg", "masac", "ddpg"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("overrides", nargs="*", help="more config overrides for every run (key.path=value)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    runs = algorithm_runs(args.agents)
    curves: list[dict] = []
    randoms = []
    with open(args.out / "offpolicy_curves.jsonl", "w") as out:
        for name in args.algorithms:
            path, extra = runs[name]
            for seed in args.seeds:
                overrides = [f"total_env_steps={args.steps}", f"seed={seed}",
                             f"env.kwargs.num_agents={args.agents}", *extra, *args.overrides]
                curve, trained, random, seconds = train_one(path, overrides)
                randoms.append(random)
                for steps, value in curve:
                    row = {"kind": "curve", "algorithm": name, "seed": seed, "env_steps": steps, "return": value}
                    curves.append(row)
                    out.write(json.dumps(row) + "\n")
                final = {"kind": "final", "algorithm": name, "seed": seed, "env_steps": args.steps,
                         "trained_return": trained, "random_return": random, "train_seconds": round(seconds, 1)}
                out.write(json.dumps(final) + "\n")
                out.flush()
                print(json.dumps(final), flush=True)
    plot(curves, float(np.mean(randoms)), args.out / "offpolicy_curves.png")


if __name__ == "__main__":
    main()
