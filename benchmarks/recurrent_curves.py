"""Learning curves of recurrent policies on a task that needs memory: GRU and LSTM cores for PPO, A2C and MAPPO
against a feed-forward PPO policy with the same budget.

The task is ``tests/memory_env.py:MemoryCue`` (an env written as users write theirs, loaded by path): each agent
sees a cue, one of ``--cues``, in the first observation of an episode only, and is rewarded 1 at the episode's
last step (``--episode-length``) if its action names the cue. Chance is ``1 / cues``; a policy without memory
cannot beat it, a recurrent one can reach 1. The curve is the evaluation return per agent (the fraction of fresh
episodes whose cue was named; the policy samples its actions, ``eval_return_greedy`` takes the most likely one).

    python benchmarks/recurrent_curves.py --out benchmarks/results                                   # GPU
    python benchmarks/recurrent_curves.py --device cpu --total-env-steps 20000 --seeds 0 --variants ppo_gru ppo

Writes one JSON line per evaluation and one summary line per variant to ``<out>/recurrent_curves.jsonl`` and the
curves (mean over seeds, 95% bootstrap interval) to ``<out>/recurrent_curves.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from value_decomposition_curves import evaluated_training, write_curves

from warpdrive.training.seeds import plot_seed_curves

MEMORY_ENV = str(Path(__file__).resolve().parent.parent / "tests" / "memory_env.py") + ":MemoryCue"

#: variant -> (algorithm, model.recurrent, agents, model.critic_input, replicas as a fraction of --num-envs)
#: A2C takes one gradient step per rollout, PPO 16: A2C gets fewer replicas, so more updates for the same env-steps.
VARIANTS = {
    "ppo": ("ppo", "none", 1, "local", 1),
    "ppo_gru": ("ppo", "gru", 1, "local", 1),
    "ppo_lstm": ("ppo", "lstm", 1, "local", 1),
    "a2c_gru": ("a2c", "gru", 1, "local", 1 / 8),
    "mappo_gru": ("ppo", "gru", 2, "global", 1),
}


def config(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """The training config of ``variant`` on the memory task."""
    algorithm, recurrent, agents, critic_input, share = VARIANTS[variant]
    return {
        "env": {"name": MEMORY_ENV, "num_envs": max(1, int(args.num_envs * share)),
                "kwargs": {"num_agents": agents, "num_cues": args.cues, "episode_length": args.episode_length}},
        "total_env_steps": args.total_env_steps, "rollout_length": args.episode_length * 2, "device": args.device,
        "policies": {"shared": {"algorithm": algorithm, "optimizer": {"lr": args.lr},
                                "model": {"hidden_sizes": [64], "recurrent": recurrent,
                                          "critic_input": critic_input}}},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    # Defaults: 1M env-steps at lr 1e-3, 256 envs and 16-step episodes left LSTM-PPO and A2C-GRU at chance and
    # GRU-PPO above it in one seed of three (H200, 2026-12-02); these learn every variant on the CPU in 150k.
    parser.add_argument("--cues", type=int, default=8, help="cues (and actions): chance is 1 / cues")
    parser.add_argument("--episode-length", type=int, default=8, help="the step whose action is scored")
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--total-env-steps", type=int, default=400_000)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--eval-every", type=int, default=10, help="iterations between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for the JSON and PNG")
    parser.add_argument("overrides", nargs="*", help="config overrides for every run (key.path=value)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    rows = [row for variant in args.variants for seed in args.seeds
            for row in evaluated_training(variant, config(variant, args), args.overrides, seed, args.eval_every,
                                          args.eval_episodes)]
    write_curves(rows, args.out / "recurrent_curves.jsonl", chance=round(1 / args.cues, 4), device=args.device)
    curves: dict[str, dict[int, list[float]]] = {}
    for r in rows:
        curves.setdefault(r["algorithm"], {}).setdefault(r["env_steps"], []).append(r["eval_return"])
    plot_seed_curves(curves, args.out / "recurrent_curves.png",
                     f"memory task: {args.cues} cues, scored at step {args.episode_length}",
                     "fraction of episodes whose cue was named", baseline=("chance", 1 / args.cues))


if __name__ == "__main__":
    main()
