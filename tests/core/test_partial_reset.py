"""``Env.reset(mask=...)``: only the masked replicas restart, on the device, for every registered env."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from small_envs import SMALL

from warpdrive.core.sampling import uniform_actions
from warpdrive.envs import REGISTRY, make

# Tiny instances: what matters is the bookkeeping of the reset, not the size.
NUM_ENVS = 4
MASK = torch.tensor([True, False, True, False])
# After a step, these hold the step's outputs or finished-episode records, which a reset leaves alone.
STEP_RECORDS = ("actions", "rewards", "terminated", "truncated", "done", "final_obs", "final_metrics",
                "final_length", "final_return", "finished_episodes", "finished_length", "finished_return",
                "finished_metrics")


def test_every_registered_env_is_covered():
    assert set(SMALL) == set(REGISTRY)


def _mid_episode(name: str, backend: str = "cpu", steps: int = 3, **overrides: Any):
    """An env reset with seed 7 and stepped ``steps`` times with seeded random actions, no autoreset."""
    env = make(name, num_envs=NUM_ENVS, backend=backend, seed=7, **SMALL[name], **overrides)
    env.reset(seed=7)
    # drawn on the CPU and copied: the same actions whatever the env's device
    generator = torch.Generator().manual_seed(0)
    actions = torch.empty(env.actions.shape, dtype=env.actions.dtype)
    for _ in range(steps):
        mask = None if env.action_mask is None else env.action_mask.cpu()  # (for the current observation)
        env.actions.copy_(uniform_actions(env.single_action_space(), actions, generator, mask=mask))
        env.step_without_reset()
    return env


def _per_env_arrays(env) -> list[str]:
    return [n for n, spec in env.store.specs.items() if spec.per != "global" and spec.role != "scratch"]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_masked_replicas_restart_and_the_others_are_untouched(name: str):
    env = _mid_episode(name)
    before = env.store.state_dict()
    assert torch.equal(before["episode"], torch.ones(NUM_ENVS, dtype=torch.int64))
    assert bool((before["t"] == 3).all())

    env.reset(mask=MASK)
    after = env.store.state_dict()
    keep = ~MASK
    for array in before:
        if env.store.specs[array].per == "global":
            assert torch.equal(after[array], before[array]), array
        else:
            assert torch.equal(after[array][keep], before[array][keep]), f"{array} of an unmasked replica changed"

    assert bool((after["t"][MASK] == 0).all())
    assert torch.equal(after["episode"][MASK], torch.full((2,), 2, dtype=torch.int64))
    assert bool((after["episode_return"][MASK] == 0).all()) and bool((after["metrics"][MASK] == 0).all())
    assert not torch.equal(after["obs"][MASK], before["obs"][MASK])

    # The restarted replicas are where an autoreset into their second episode puts them: an env whose
    # episodes last one step has autoreset every replica into episode 2 after one step.
    reference = _mid_episode(name, steps=0, episode_length=1)
    reference.sample_actions(torch.Generator().manual_seed(0))
    reference.step()
    assert bool(reference.store["done"].all())
    expected = reference.store.state_dict()
    for array in _per_env_arrays(env):
        if array not in STEP_RECORDS:
            assert torch.equal(after[array][MASK], expected[array][MASK]), array


@pytest.mark.parametrize("name", sorted(SMALL))
def test_a_full_reset_after_a_masked_one_restarts_every_replica(name: str):
    env = _mid_episode(name)
    env.reset(mask=MASK)
    env.reset(seed=7)
    fresh = _mid_episode(name, steps=0)
    for array in _per_env_arrays(env):
        if array not in STEP_RECORDS:
            assert torch.equal(env.store[array], fresh.store[array]), array


@pytest.mark.cudasim
@pytest.mark.parametrize("name", sorted(SMALL))
def test_cpu_and_cuda_compilations_agree(name: str, gpu_backend: str):
    envs = [_mid_episode(name, backend) for backend in ("cpu", gpu_backend)]
    for env in envs:
        env.reset(mask=MASK.to(env.device))
        env.reset(mask=torch.tensor([False, False, True, True], device=env.device))
    cpu, gpu = (env.store.state_dict() for env in envs)
    for array in cpu:
        assert torch.equal(cpu[array], gpu[array].cpu()), array


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="a host sync can only be caught with a real GPU")
@pytest.mark.parametrize("name", ["cartpole", "tag_gridworld", "simple_spread"])
def test_a_masked_reset_on_the_gpu_does_not_wait_for_the_host(name: str):
    """TorchRL and SB3 reset finished replicas every step: with PyTorch's sync debug mode set to raise, a masked
    reset (after a first one that compiles) copies the mask and launches the reset kernel without a host sync,
    and it restarts exactly the masked replicas."""
    env = _mid_episode(name, "cuda")
    mask = MASK.to(env.device)
    env.reset(mask=mask)
    env.sample_actions()
    env.step_without_reset()
    before = env.store["t"].cpu()
    assert bool((before > 0).all())
    torch.cuda.set_sync_debug_mode("error")
    try:
        env.reset(mask=mask)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.equal(env.store["t"].cpu(), torch.where(MASK, 0, before))


def test_bad_masks_are_refused():
    env = make("cartpole", num_envs=3, backend="cpu")
    with pytest.raises(ValueError, match=r"mask has shape \(2,\), expected \(3,\)"):
        env.reset(mask=torch.ones(2, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"mask has dtype torch\.int64"):
        env.reset(mask=torch.ones(3, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"mask must be a torch\.Tensor"):
        env.reset(mask=[True, False, True])
    with pytest.raises(ValueError, match="seed=1 and a mask"):
        env.reset(seed=1, mask=torch.ones(3, dtype=torch.bool))
