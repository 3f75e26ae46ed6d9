"""REINFORCE follows the reward: on a toy reward with a known optimum, the trained policy's
mean action moves the frames the right way (a sign error in the loss or the advantage would
move them the other way)."""
import numpy as np
import pytest
import torch

from vstlib.config import get_config

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

# gate open (0.0) and a large lr: the toy signal is small, the run must move within ~300 updates
TOY = dict(
    data={"n_clips": 3, "n_frames": 4, "size": 32, "motion_threshold": 0.0, "train_fraction": 0.67},
    backbone={"resolution": 32, "num_inference_steps": 2, "num_inversion_steps": 2, "batch_size": 4},
    policy={"hidden": 8, "gate_init": 0.0},
    train={"epochs": 150, "accumulation": 3, "checkpoint_every": 1000, "lr": 1e-2, "device": "cpu"},
)


class Darkness(torch.nn.Module):
    """Toy reward term: mean brightness of frames 1..T-1, as a loss (weight +1: darker is better;
    weight -1: brighter is better). Registered by name like the paper's terms."""

    def score(self, cur, prev, originals, flows):
        return cur.mean(dim=(1, 2, 3))                                         # (B,)


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["brighter", "darker"])
def test_policy_learns_the_rewarded_direction(vst_home, monkeypatch, sign):
    from vstlib import rewards, rollout
    from vstlib.checkpoint import load_policy
    from vstlib.clips import load_manifest
    from vstlib.data import prepare
    from vstlib.train import train
    from vstlib.utils import read_jsonl

    # reward = -(w * darkness) = sign * brightness: the toy term picked by name from the config
    monkeypatch.setitem(rewards.REWARDS, "darkness", lambda cfg_reward, style, device: Darkness())
    cfg = get_config("smoke", **TOY, reward={"terms": ["darkness"], "weights": {"darkness": -sign}})
    prepare(cfg)
    out = train(cfg, run=f"toy{sign:+.0f}")

    adv = np.array([r["advantage"] for r in read_jsonl(out / "log.jsonl")])
    q = len(adv) // 4
    assert adv[-q:].mean() > adv[:q].mean() and adv[-q:].mean() > 0      # advantage climbs above 0

    stylizer, reward_model, _ = rollout.make_env(cfg)
    assert reward_model.names == ("darkness",)
    policy = load_policy(out / "policy.safetensors", cfg.policy)
    ep = rollout.build_episode(cfg, load_manifest(cfg.profile)["test"][0], stylizer, reward_model)
    with torch.no_grad():
        S = rollout.policy_frames(policy, stylizer, ep.base)                   # (T,3,H,W), mean action
    gain = sign * (S[1:].mean() - ep.base.images[1:].mean()).item()
    assert gain > 0, f"mean action moved the frames against the reward ({gain:.2e})"
