"""The gymnasium view of the task families, checked by gymnasium's own env checker."""

import numpy as onp
import pytest

gymnasium = pytest.importorskip("gymnasium")

from ssmref.metarl.envs import Navigation2D, navigation_transition  # noqa: E402
from ssmref.metarl.envs.gymview import BanditEnv, NavigationEnv, register  # noqa: E402
from gymnasium.utils.env_checker import check_env  # noqa: E402


@pytest.mark.parametrize("make", [NavigationEnv, BanditEnv, lambda: NavigationEnv(horizon=5)])
def test_gymnasium_env_checker_passes(make):
    check_env(make(), skip_render_check=True)


def test_reset_and_step_follow_the_family():
    env = NavigationEnv()
    obs, info = env.reset(seed=3)
    assert obs.shape == (2,) and onp.all(obs == 0) and info["task"]["goal"].shape == (2,)
    again, info2 = env.reset(seed=3)
    assert onp.array_equal(info["task"]["goal"], info2["task"]["goal"])
    goal = info["task"]["goal"]
    obs, reward, terminated, truncated, info = env.step(onp.array([0.5, -0.3]))
    pos, r, _ = navigation_transition(onp.zeros((1, 2)), goal[None], onp.array([[0.5, -0.3]]))
    assert onp.array_equal(obs, pos[0]) and reward == r[0] and info["distance"] == -r[0]
    assert not terminated and not truncated
    # a fixed task, reached exactly: terminated; the horizon: truncated
    env = NavigationEnv(task={"goal": onp.array([0.1, 0.0])}, horizon=3)
    env.reset(seed=0)
    assert env.step(onp.array([1.0, 0.0]))[2] is True
    env.reset(options={"task": {"goal": onp.array([0.4, 0.4])}})
    ends = [env.step(onp.zeros(2))[2:4] for _ in range(3)]
    assert ends == [(False, False), (False, False), (False, True)]
    assert Navigation2D().horizon == NavigationEnv().family.horizon


def test_bandit_rewards_are_seeded_and_episodes_end_at_the_horizon():
    env = BanditEnv(num_arms=3, horizon=4)

    def episode(seed):
        env.reset(seed=seed)
        return [env.step(a) for a in (0, 1, 2, 0)]
    a, b = episode(7), episode(7)
    assert [s[1] for s in a] == [s[1] for s in b]
    assert [s[3] for s in a] == [False, False, False, True] and not any(s[2] for s in a)
    assert all(0 <= s[4]["p_action"] <= 1 for s in a)


def test_gymnasium_make():
    register()
    env = gymnasium.make("ssmref/Navigation2D-v0", horizon=10)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    env = gymnasium.make("ssmref/Bandit-v0", num_arms=4)
    env.reset(seed=0)
    assert env.action_space.n == 4
