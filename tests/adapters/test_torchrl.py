"""The TorchRL adapter: TorchRL's spec check for every env, its resets, and its PPO on Tag's agent groups."""

from __future__ import annotations

import pytest
import torch
from forced_choice import ForcedChoice
from small_envs import SMALL
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch.distributions import Categorical
from torchrl.collectors import Collector
from torchrl.envs.utils import check_env_specs
from torchrl.modules import MultiAgentMLP, ProbabilisticActor
from torchrl.objectives import ClipPPOLoss, ValueEstimators

from warpdrive.adapters.torchrl import WarpDriveTorchRLEnv
from warpdrive.core.device import cuda_available
from warpdrive.envs import REGISTRY, make


def test_every_registered_env_is_covered():
    assert set(SMALL) == set(REGISTRY)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_torchrls_spec_check_passes(name: str):
    env = WarpDriveTorchRLEnv(make(name, num_envs=3, device="cpu", **SMALL[name]))
    check_env_specs(env, seed=0)
    rollout = env.rollout(5, break_when_any_done=False)
    for group, ids in env.env.groups().items():
        assert rollout["next", group, "observation"].shape == (3, 5, len(ids), env.env.observation_size())
        assert rollout["next", group, "reward"].shape == (3, 5, len(ids), 1)
    assert rollout["next", "done"].shape == (3, 5, 1)


@pytest.mark.parametrize("two_heads", [False, True])
def test_action_masks_reach_the_observations_and_the_action_spec(two_heads: bool):
    env = WarpDriveTorchRLEnv(ForcedChoice(num_envs=3, device="cpu", two_heads=two_heads))
    check_env_specs(env, seed=0)  # its random actions pass the env's validation only if drawn under the mask
    rollout = env.rollout(7, break_when_any_done=False)
    mask = rollout["agents", "action_mask"]  # [envs, steps, agents, choices]
    assert mask.shape == (3, 7, 3, 5 if two_heads else 3)
    head_0 = rollout["agents", "action"] if not two_heads else rollout["agents", "action"][..., 0]
    assert bool(mask.gather(-1, head_0.unsqueeze(-1)).all())
    assert torch.equal(head_0, (env.env.store["t"].new_tensor([0, 1, 2, 3, 4, 0, 1]) % 3).expand(3, 3, 7).mT)


def test_torchrl_restarts_exactly_the_finished_replicas():
    """TorchRL sees each episode's last observation, then resets the finished replicas through ``"_reset"``."""
    env = WarpDriveTorchRLEnv(make("cartpole", num_envs=4, device="cpu", episode_length=8))
    env.set_seed(1)
    rollout = env.rollout(30, break_when_any_done=False)  # random actions: episodes end at 8 steps or earlier
    done = rollout["next", "done"].squeeze(-1)  # [envs, steps]
    assert done.any()
    step = rollout["next", "agents", "observation"].squeeze(-2)  # [envs, steps, 4]: after each step
    following = rollout["agents", "observation"].squeeze(-2)[:, 1:]  # what the next step started from
    ended = done[:, :-1]
    # a finished episode's last observation is past CartPole's limits, or it hit the 8-step limit
    lengths = torch.zeros(4, dtype=torch.long)
    for e in range(4):
        for t in range(30):
            lengths[e] += 1
            if done[e, t]:
                fell = step[e, t, 0].abs() > 2.4 or step[e, t, 2].abs() > 12 * 2 * torch.pi / 360
                assert fell or lengths[e] == 8
                lengths[e] = 0
    assert bool((following[ended].abs() <= 0.05).all())  # fresh starts, where episodes ended
    assert torch.equal(following[~ended], step[:, :-1][~ended])  # the others carry on
    assert torch.equal(env.env.store["episode"], 1 + done.sum(1))
    # a reset without "_reset" starts every replica afresh, carrying its random stream on
    assert torch.equal(env.reset()["agents", "observation"], env.env.obs) and bool((env.env.store["t"] == 0).all())
    assert torch.equal(env.env.store["episode"], 2 + done.sum(1))
    # after set_seed, the same starts as at first
    env.set_seed(1)
    assert torch.equal(env.reset()["agents", "observation"], rollout[:, 0]["agents", "observation"])


def _group_actor_and_loss(env: WarpDriveTorchRLEnv, group: str) -> tuple[ProbabilisticActor, ClipPPOLoss]:
    """A policy and a critic shared by the agents of ``group``, and ClipPPOLoss with GAE on its nested keys."""
    n_agents, obs_size = len(env.group_map[group]), env.env.observation_size()
    action_spec = env.full_action_spec[group, "action"]
    logits = MultiAgentMLP(n_agent_inputs=obs_size, n_agent_outputs=int(action_spec.space.n), n_agents=n_agents,
                           centralized=False, share_params=True, depth=1, num_cells=32)
    actor = ProbabilisticActor(
        TensorDictModule(logits, in_keys=[(group, "observation")], out_keys=[(group, "logits")]),
        spec=action_spec, in_keys={"logits": (group, "logits")}, out_keys=[(group, "action")],
        distribution_class=Categorical, return_log_prob=True, log_prob_key=(group, "action_log_prob"),
    )
    value = MultiAgentMLP(n_agent_inputs=obs_size, n_agent_outputs=1, n_agents=n_agents, centralized=False,
                          share_params=True, depth=1, num_cells=32)
    critic = TensorDictModule(value, in_keys=[(group, "observation")], out_keys=[(group, "state_value")])
    loss = ClipPPOLoss(actor, critic, entropy_coeff=0.01, normalize_advantage=False)
    loss.set_keys(reward=(group, "reward"), action=(group, "action"), sample_log_prob=(group, "action_log_prob"),
                  value=(group, "state_value"), done=(group, "done"), terminated=(group, "terminated"),
                  advantage=(group, "advantage"), value_target=(group, "value_target"))
    loss.make_value_estimator(ValueEstimators.GAE, gamma=0.95, lmbda=0.9)
    return actor, loss


def test_ppo_with_torchrls_collector_trains_tag_agent_groups():
    """The shape of TorchRL's multi-agent PPO example: one actor, critic and loss per agent group."""
    torch.manual_seed(0)
    env = WarpDriveTorchRLEnv(make("tag_gridworld", num_envs=16, device="cpu", seed=0, num_taggers=2,
                                   grid_length=5, episode_length=10))
    actors, losses = {}, {}
    for group in env.group_map:
        actors[group], losses[group] = _group_actor_and_loss(env, group)
    parameters = [p for loss in losses.values() for p in loss.parameters()]
    before = [p.detach().clone() for p in parameters]
    optimizer = torch.optim.Adam(parameters, lr=3e-3)
    iterations, steps = 4, 20
    collector = Collector(env, TensorDictSequential(*actors.values()), frames_per_batch=16 * steps,
                          total_frames=16 * steps * iterations, auto_register_policy_transforms=False)
    batches = 0
    for data in collector:
        assert data.batch_size == (16, steps)
        for group, loss in losses.items():
            for flag in ("done", "terminated"):  # the replica's flags, for each agent of the group
                shape = data.get_item_shape(("next", group, "reward"))
                data.set(("next", group, flag), data["next", flag].unsqueeze(-1).expand(shape))
            with torch.no_grad():
                loss.value_estimator(data, params=loss.critic_network_params,
                                     target_params=loss.target_critic_network_params)
        flat = data.reshape(-1)
        for _ in range(2):
            for minibatch in torch.randperm(flat.numel()).split(80):
                total = sum(value for loss in losses.values() for key, value in loss(flat[minibatch]).items()
                            if key.startswith("loss_"))
                assert torch.isfinite(total)
                optimizer.zero_grad()
                total.backward()
                optimizer.step()
        collector.update_policy_weights_()
        batches += 1
    collector.shutdown()
    assert batches == iterations
    assert all(not torch.equal(p, q) for p, q in zip(parameters, before, strict=True))
    assert int(env.env.store["episode"].min()) >= iterations * steps // 10  # episodes ran out and restarted


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["tag_gridworld", "simple_spread"])
def test_data_stays_on_the_gpu_without_host_syncs(name: str):
    env = WarpDriveTorchRLEnv(make(name, num_envs=3, device="cuda", **SMALL[name]))
    check_env_specs(env, seed=0)
    rollout = env.rollout(5, break_when_any_done=False)
    assert all(leaf.is_cuda for leaf in rollout.values(include_nested=True, leaves_only=True))
    state = env.rand_action(env.reset())
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # a host sync in the adapter's step raises
    try:
        out = env._step(state)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert all(leaf.is_cuda for leaf in out.values(include_nested=True, leaves_only=True))
