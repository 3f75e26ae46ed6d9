"""Every learner follows the reward: on a toy reward with a known optimum, the trained policy's
mean action moves toward it. The toy term is the MSE between S_t and render(L_t + c) for a fixed
latent offset c (the optimum is delta = c exactly, a constant the head's bias can represent);
the test measures the share of the way from 0 to c that the mean action went, on the train clips
(what the learners saw). Each case also runs with its loss's sign flipped and must then fail: the
criterion tells a learner from drift.
"""
import pytest
import torch
from conftest import tiny

from vstlib.config import get_config
from vstlib.rl import rewards
from vstlib.rl.checkpoint import load_policy
from vstlib.rl.episodes import build_episode, make_env
from vstlib.rl.learners import LEARNERS, Learner, gradient_cosine
from vstlib.rl.policy import LatentPolicy
from vstlib.rl.step import unroll
from vstlib.rl.train import train
from vstlib.video import clips
from vstlib.video.clips import load_manifest
from vstlib.video.prepare import prepare

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

TOY = tiny(data={"n_clips": 2, "train_fraction": 0.5}, policy={"sigma_init": 0.3},
           train={"epochs": 40, "accumulation": 3, "checkpoint_every": 1000, "lr": 5e-2, "samples": 4})
# learner -> overrides: the paper's REINFORCE, RLOO (normalised advantages, normalised reward),
# and pathwise with the flow-aware observation (the sequential rollout)
CASES = {
    "reinforce": {},
    "rloo": {"train": {"epochs": 15, "normalize_advantage": True}, "reward": {"normalize": "baseline"}},
    "pathwise": {"train": {"epochs": 30}, "policy": {"observation": "flow"}},
    # the gated-blend head (starts at the latent blend: its residual must still find c) and the
    # constant-offset control (c is exactly what it can represent), both trained pathwise
    "pathwise_blend": {"train": {"epochs": 30, "learner": "pathwise"},
                       "policy": {"observation": "flow", "head": "blend", "blend_init": -2.0}},
    "constant": {"train": {"epochs": 30, "learner": "pathwise"}, "policy": {"head": "constant"}},
}
OFFSET = 0.5     # |c| per latent channel
COS_SAMPLES, COS_MIN = 128, 0.2   # 128 rollouts: the estimate's noise well under its signal on every seed tried
PROGRESS = 0.1   # share of the way from 0 to c that the mean action must reach


class Target(torch.nn.Module):
    """Toy reward term with a known optimum: MSE between S_t and render(L_t + c), a target built
    from a fixed latent offset c (frames looked up by their original frame). The reward is best
    (0) exactly at delta = c, a constant the head's bias can represent."""

    def __init__(self, targets: dict):
        super().__init__()
        self.targets = targets                                                 # key(I_t) -> (3,H,W)

    def score(self, cur, prev, originals, flows):
        tgt = torch.stack([self.targets[_key(o)] for o in originals]).to(cur)  # (B,3,H,W)
        return (cur - tgt).pow(2).mean(dim=(1, 2, 3))                          # (B,)


def _key(frame: torch.Tensor) -> bytes:
    return (frame.detach().cpu() * 255).round().to(torch.uint8).numpy().tobytes()


@pytest.fixture(scope="module")
def toy_home(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("VSTLIB_HOME", str(tmp_path_factory.mktemp("toy")))
    prepare(get_config("smoke", **TOY))
    yield
    mp.undo()


def _merge(a: dict, b: dict) -> dict:
    out = {k: dict(v) for k, v in a.items()}
    for k, v in b.items():
        out.setdefault(k, {}).update(v)
    return out


@pytest.mark.parametrize("flip", [False, True], ids=["loss", "flipped"])
@pytest.mark.parametrize("learner", ["pathwise", "pathwise_blend", "constant"])
def test_learner_moves_toward_the_known_optimum(toy_home, monkeypatch, learner, flip):
    over = _merge(TOY, CASES[learner])
    over["reward"] = {**over.get("reward", {}), "terms": ["target"], "weights": {"target": 1.0}}
    over["train"].setdefault("learner", learner)
    cfg = get_config("smoke", **over)
    c = torch.tensor([OFFSET, -OFFSET, OFFSET, -OFFSET]).view(1, 4, 1, 1)    # the optimum: delta = c
    targets = {}                                                              # filled below, read by the term
    monkeypatch.setitem(rewards.REWARDS, "target", lambda cfg_reward, style, device: Target(targets))
    env = make_env(cfg)
    for cid in load_manifest(cfg.profile)["train"]:
        frames = clips.load_clip(cfg.profile, cid)                            # (T,3,H,W)
        base = env.stylizer.stylize(frames, env.style)
        L = env.stylizer.policy_latents(base).float()                          # (T,4,h,w)
        with torch.no_grad():
            S = env.stylizer.render(L + c, base, torch.arange(L.shape[0])).float()  # (T,3,H,W) the optimum
        targets.update({_key(o): s_ for o, s_ in zip(frames, S)})
    if flip:                                                                   # the same learner, sign flipped
        spec = LEARNERS[cfg.train.learner]
        flipped = lambda *a: (lambda loss, info: (-loss, info))(*spec.loss(*a))  # noqa: E731
        monkeypatch.setitem(LEARNERS, cfg.train.learner, Learner(spec.name, spec.collect, flipped))
    out = train(cfg, run=f"toy_{learner}_{'flipped' if flip else 'loss'}", resume=False)
    env = make_env(cfg)
    policy = load_policy(out / "policy.safetensors", cfg.policy)
    assert policy.observation == cfg.policy.observation
    progress, distance = [], []
    with torch.no_grad():
        for cid in load_manifest(cfg.profile)["train"]:
            a = unroll(policy, build_episode(cfg, cid, env).clip, "mean").actions[0]   # (T-1,4,h,w)
            mean_action = a.mean(dim=(0, 2, 3), keepdim=True)                  # (1,4,1,1)
            progress.append(((mean_action * c).sum() / (c * c).sum()).item())  # share of the way to c
            distance.append(((mean_action - c).norm() / c.norm()).item())      # 1 at the start (delta = 0)
    prog, dist = sum(progress) / len(progress), sum(distance) / len(distance)
    # closer to c than where it started: overshooting far past c (a learner that maximises the
    # distance on a saturating decoder) fails even when its projection on c is positive
    learned = prog > PROGRESS and dist < 1 - PROGRESS / 2
    assert learned != flip, f"{learner} (flipped={flip}): {prog:.3f} of the way to c, {dist:.3f} x |c| from it"


def test_leave_one_out_advantage_matches_hand_computed_values():
    from types import SimpleNamespace

    from vstlib.rl.learners import leave_one_out_advantage

    r = torch.tensor([[1.0, 0.0], [2.0, 0.0], [6.0, 3.0]])                     # (K=3, n=2)
    adv = leave_one_out_advantage(r, None, SimpleNamespace(normalize_advantage=False))
    # k=0: 1 - (2+6)/2 = -3; k=1: 2 - 3.5 = -1.5; k=2: 6 - 1.5 = 4.5; column 2: -1.5, -1.5, 3
    assert torch.allclose(adv, torch.tensor([[-3.0, -1.5], [-1.5, -1.5], [4.5, 3.0]]))


def test_importance_weight_is_one_on_policy_and_truncated():
    from vstlib.rl.learners import importance_weight

    lp = torch.tensor([-3.0, -1.0])
    assert torch.equal(importance_weight(lp, lp, 10.0), torch.ones(2))
    w = importance_weight(torch.tensor([0.0, 5.0]), torch.tensor([0.0, 0.0]), 10.0)
    assert torch.allclose(w, torch.tensor([1.0, 10.0]))                        # e^5 = 148 truncated to 10
    assert torch.equal(importance_weight(torch.tensor([5.0]), torch.tensor([0.0]), 0.0), torch.ones(1))


@pytest.mark.parametrize("learner", ["reinforce", "rloo"])
def test_score_function_gradient_points_along_the_pathwise_gradient(toy_home, learner):
    """With many samples the REINFORCE / RLOO estimate agrees in direction with the exact
    (pathwise) gradient of the same reward; a sign error makes the cosine negative."""
    cfg = get_config("smoke", **_merge(TOY, {"train": {"learner": learner}}))
    env = make_env(cfg)
    ep = build_episode(cfg, load_manifest(cfg.profile)["train"][0], env)
    torch.manual_seed(0)
    policy = LatentPolicy.from_config(cfg.policy)
    cos = gradient_cosine(policy, env, ep, cfg.train, learner=learner, samples=COS_SAMPLES)
    assert cos > COS_MIN, f"{learner}: cosine with the pathwise gradient {cos:.3f}"
