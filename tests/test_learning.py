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


class Brightness:
    """Toy reward: sign * mean brightness of frames 1..T-1 (same interface as RewardModel.terms)."""

    def __init__(self, sign: float):
        self.sign = sign

    def terms(self, stylized, originals, flows):
        r = self.sign * stylized[1:].mean(dim=(1, 2, 3))                      # (T-1,)
        zero = torch.zeros_like(r)
        return {"style": zero, "content": zero, "temporal": zero, "reward": r}


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["brighter", "darker"])
def test_policy_learns_the_rewarded_direction(vst_home, monkeypatch, sign):
    import vstlib.train as train_mod
    from vstlib import rollout
    from vstlib.data import load_manifest, prepare
    from vstlib.utils import read_jsonl

    cfg = get_config("smoke", **TOY)
    prepare(cfg)
    real_env = rollout.make_env

    def toy_env(cfg, device=None):
        stylizer, _, style = real_env(cfg, device)
        return stylizer, Brightness(sign), style

    monkeypatch.setattr(train_mod, "make_env", toy_env)
    out = train_mod.train(cfg, run=f"toy{sign:+.0f}")

    adv = np.array([r["advantage"] for r in read_jsonl(out / "log.jsonl")])
    q = len(adv) // 4
    assert adv[-q:].mean() > adv[:q].mean() and adv[-q:].mean() > 0      # advantage climbs above 0

    stylizer, _, _ = toy_env(cfg)
    policy = train_mod.load_policy(out / "policy.safetensors", cfg)
    ep = rollout.build_episode(cfg, load_manifest(cfg.profile)["test"][0], stylizer, Brightness(sign))
    with torch.no_grad():
        S = rollout.policy_frames(policy, stylizer, ep.base)                   # (T,3,H,W), mean action
    gain = sign * (S[1:].mean() - ep.base.images[1:].mean()).item()
    assert gain > 0, f"mean action moved the frames against the reward ({gain:.2e})"
