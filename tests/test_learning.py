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
from vstlib.rl.train import read_log, train
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
    # the actor-critic through the chain (its critic trained beside it) and DAgger onto refinement
    "shac": {"train": {"epochs": 30, "critic_lr": 1e-2}, "policy": {"observation": "flow"}},
    "distill": {"train": {"epochs": 30, "refine_steps": 3, "refine_lr": 0.1}, "policy": {"observation": "flow"}},
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

    def score(self, cur, prev, originals, flows, reference=None):
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
@pytest.mark.parametrize("learner", ["pathwise", "pathwise_blend", "constant", "shac", "distill"])
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
        monkeypatch.setitem(LEARNERS, cfg.train.learner, Learner(spec.name, spec.collect, flipped, spec.critic, spec.kind))
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
    cos = gradient_cosine(policy, env, ep, cfg, learner=learner, samples=COS_SAMPLES)
    assert cos > COS_MIN, f"{learner}: cosine with the pathwise gradient {cos:.3f}"


# --------------------------------------------------------------------------- credit assignment through time
class SmoothWorld:
    """A 4-frame world in float64 where everything is smooth: latents (4,4,6,6), a decoder tanh(1x1 conv),
    a squared temporal term along a known flow. Finite differences are then exact to ~1e-8."""

    def __init__(self):
        from types import SimpleNamespace

        from vstlib.rl.step import LatentClip

        g = torch.Generator().manual_seed(0)
        T, C, h, w = 4, 4, 6, 6
        L = torch.randn(T, C, h, w, generator=g, dtype=torch.float64)
        bw = 0.7 * torch.randn(T - 1, 2, h, w, generator=g, dtype=torch.float64)   # flow t -> t-1, in cells
        self.mix = torch.randn(3, C, 1, 1, generator=g, dtype=torch.float64) / 2
        frames = torch.rand(T, 3, h, w, generator=g, dtype=torch.float64)
        ones = torch.ones(T - 1, 1, h, w, dtype=torch.float64)
        flows = {"fw": -bw, "bw": bw, "mask_fw": ones, "mask_bw": ones}
        base = SimpleNamespace(images=self.render(L, None, None))
        self.ep = SimpleNamespace(clip=LatentClip(L, bw, ones), base=base, frames=frames, flows=flows,
                                  reference=None, loss_size=None, base_terms={"temporal": torch.ones(T - 1, dtype=torch.float64)})
        self.stylizer, self.reward = self, self

    def render(self, L, base, idx):
        return torch.tanh(torch.nn.functional.conv2d(L, self.mix))            # (n,3,h,w)

    def differentiable_terms(self, S, frames, flows, base, reference=None, loss_size=None):
        from vstlib.flow import warp

        d = S[1:] - warp(S[:-1], flows["bw"])                                  # S_t against S_{t-1} pulled along
        return {"temporal": d.pow(2).mean((1, 2, 3))}


def test_bptt_gradient_matches_finite_differences_through_a_three_step_chain(monkeypatch):
    """The loss of a 3-frame window acted along the chain (each observation built from the previous
    output produced) has the gradient BPTT computes: it matches central finite differences (float64,
    smooth world); the myopic gradient (each observation detached, ``bptt=False``) misses the terms
    through the chain and does not."""
    from vstlib.rl import learners
    from vstlib.rl.learners import Agent, Chain, act_window

    world = SmoothWorld()
    monkeypatch.setattr(learners, "render", lambda stylizer, base, out, first=1: stylizer.render(out, base, None))
    cfg = get_config("smoke", policy={"observation": "flow", "head": "blend", "latent_channels": 4, "hidden": 8},
                     reward={"terms": ["temporal"], "weights": {"temporal": 1.0}}, train={"learner": "pathwise"})
    torch.manual_seed(0)
    policy = LatentPolicy.from_config(cfg.policy).double()
    with torch.no_grad():
        policy.head.weight.normal_(std=0.3)                                    # the blend gate depends on the state
    agent, chunk = Agent(cfg, policy).double(), torch.arange(3)                # frames 1, 2, 3

    def loss(bptt):
        c = cfg.override(train={"bptt": bptt}).train
        return -act_window(policy, world, world.ep, Chain(), chunk, agent, c, mode="mean").reward.sum()

    params = [p for n, p in policy.named_parameters() if n != "log_sigma"]
    v = [torch.randn(p.shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
         for i, p in enumerate(params)]
    grad = {b: sum((g * x).sum() for g, x in zip(torch.autograd.grad(loss(b), params), v)).item() for b in (True, False)}
    eps = 1e-6
    with torch.no_grad():
        for p, x in zip(params, v):
            p.add_(eps * x)
        up = loss(True).item()
        for p, x in zip(params, v):
            p.sub_(2 * eps * x)
        down = loss(True).item()
    fd = (up - down) / (2 * eps)
    assert abs(grad[True] - fd) < 1e-5 * abs(fd), (grad, fd)
    assert abs(grad[False] - fd) > 0.05 * abs(fd), (grad, fd)


def test_td_lambda_and_the_baseline_return_match_hand_computed_values():
    from types import SimpleNamespace

    from vstlib.rl.learners import baseline_return, td_lambda

    r, v = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 20.0, 30.0])   # V(o_{t+1}) for each t
    # G_2 = 3 + 0.5*30 = 18; G_1 = 2 + 0.5*(0.5*20 + 0.5*18) = 11.5; G_0 = 1 + 0.5*(0.5*10 + 0.5*11.5) = 6.375
    assert torch.allclose(td_lambda(r, v, 0.5, 0.5), torch.tensor([6.375, 11.5, 18.0]))
    assert torch.allclose(td_lambda(r, v, 1.0, 1.0), torch.tensor([36.0, 35.0, 33.0]))   # Monte Carlo + bootstrap
    assert torch.allclose(td_lambda(r, v, 1.0, 0.0), r + v)                               # one-step TD

    class Fixed:                                       # r^L of the baseline: -1, -2, -3 on frames 1..3
        def reward(self, terms, base):
            return -terms["x"]
    ep = SimpleNamespace(base_terms={"x": torch.tensor([1.0, 2.0, 3.0])})
    B, tau = baseline_return(Fixed(), ep, 0.5)
    # B_3 = -3, B_2 = -2 + 0.5*-3 = -3.5, B_1 = -1 + 0.5*-3.5 = -2.75; tau: 1, 1.5, 1.75 (index = frame)
    assert torch.allclose(B, torch.tensor([0.0, -2.75, -3.5, -3.0, 0.0]))
    assert torch.allclose(tau, torch.tensor([0.0, 1.75, 1.5, 1.0, 0.0]))


# --------------------------------------------------------------------------- constraints
def test_multipliers_are_the_weights_without_constraints_and_ascend_only_while_violated():
    from vstlib.rl.constraints import Multipliers
    from vstlib.rl.rewards import weighted_reward

    base = {"style": torch.tensor([2.0, 4.0]), "content": torch.tensor([1.0, 1.0]), "temporal": torch.tensor([3.0, 3.0])}
    terms = {"style": torch.tensor([3.0, 4.0]), "content": torch.tensor([1.5, 0.5]), "temporal": torch.tensor([1.5, 3.0])}
    free = get_config("smoke", reward={"normalize": "baseline"}).reward
    assert torch.allclose(Multipliers(free).reward(terms, base), weighted_reward(terms, free, base))
    cfg = get_config("smoke", reward={"normalize": "baseline", "constraints": {"style": 1.1}}).reward
    m = Multipliers(cfg)
    assert m.lam.tolist() == [10.0]                                          # starts at w_style
    # r^L = -(10 * (style/base - 1.1) + content/base + 10 * temporal/base) per frame
    expect = -(10 * (torch.tensor([1.5, 1.0]) - 1.1) + torch.tensor([1.5, 0.5]) + 10 * torch.tensor([0.5, 1.0]))
    assert torch.allclose(m.reward(terms, base), expect)
    m.ascend(terms, base, lr=1.0)                                             # mean style 1.25 > 1.1: up
    assert m.lam.item() == pytest.approx(10 + (1.25 / 1.1 - 1))
    m.ascend({**terms, "style": base["style"] * 9}, base, lr=1.0)            # 9 x the bound: one step of at most lr
    assert m.lam.item() == pytest.approx(11 + (1.25 / 1.1 - 1))
    for _ in range(200):                                                      # satisfied (0.5 < 1.1): down to 0
        m.ascend({**terms, "style": base["style"] * 0.5}, base, lr=1.0)
    assert m.lam.item() == 0.0
    with pytest.raises(ValueError, match="not reward terms"):
        Multipliers(get_config("smoke", reward={"constraints": {"sharpness": 1.0}}).reward)


def test_bounds_by_start_are_per_frame_multiples_of_the_untrained_policys_terms():
    """bound_by="start": the bound of frame t is bound x (the start's term / the baseline's), by hand."""
    from vstlib.rl.constraints import Multipliers

    base = {"style": torch.tensor([2.0, 4.0]), "content": torch.tensor([1.0, 1.0]), "temporal": torch.tensor([3.0, 3.0]),
            "start_style": torch.tensor([3.0, 2.0])}                       # the start: 1.5 and 0.5 of N(I_t)'s
    terms = {"style": torch.tensor([3.0, 4.0]), "content": torch.tensor([1.5, 0.5]), "temporal": torch.tensor([1.5, 3.0])}
    m = Multipliers(get_config("smoke", reward={"normalize": "baseline", "constraints": {"style": 1.0},
                                                "bound_by": "start"}).reward)
    # r^L = -(10 * (style/base - start/base) + content/base + 10 * temporal/base): frame 0 at its bound
    expect = -(10 * torch.tensor([0.0, 0.5]) + torch.tensor([1.5, 0.5]) + 10 * torch.tensor([0.5, 1.0]))
    assert torch.allclose(m.reward(terms, base), expect)
    m.ascend(terms, base, lr=1.0)                                             # mean 1.25 against mean bound 1.0
    assert m.lam.item() == pytest.approx(10.25)
    with pytest.raises(ValueError, match="start_style"):
        m.reward(terms, {k: v for k, v in base.items() if k != "start_style"})
    with pytest.raises(ValueError, match="bound_by"):
        Multipliers(get_config("smoke", reward={"constraints": {"style": 1.0}, "bound_by": "init"}).reward)


class Anchor(Target):
    """Toy constrained term: the mean squared distance of S_t to render(L_t), the frame of action 0."""


@pytest.mark.parametrize("learner", ["pathwise", "shac"])
def test_a_constrained_learner_meets_a_toy_constraint(toy_home, monkeypatch, learner):
    """The toy target pulls the actions toward c; a constraint keeps the frames within 2 % of the
    target's distance from N(I_t). Trained with dual ascent, the policy ends on the constraint
    (binding: the anchor term near its bound, its multiplier > 0), where the unconstrained one is far past it."""
    c = torch.tensor([OFFSET, -OFFSET, OFFSET, -OFFSET]).view(1, 4, 1, 1)
    targets = {}
    monkeypatch.setitem(rewards.REWARDS, "target", lambda cfg_reward, style, device: Target(targets))
    zero = {}
    monkeypatch.setitem(rewards.REWARDS, "anchor", lambda cfg_reward, style, device: Anchor(zero))
    over = _merge(TOY, {"train": {"learner": learner, "epochs": 30, "dual_lr": 0.5, "critic_lr": 1e-2},
                        "policy": {"observation": "flow", "sigma_init": 0.01},   # sampling noise under the bound
                        "reward": {"terms": ["target", "anchor"], "weights": {"target": 1.0, "anchor": 0.0}}})
    cfg = get_config("smoke", **over)
    env = make_env(cfg)
    far = []
    for cid in load_manifest(cfg.profile)["train"]:
        frames = clips.load_clip(cfg.profile, cid)
        base = env.stylizer.stylize(frames, env.style)
        L = env.stylizer.policy_latents(base).float()
        with torch.no_grad():
            S = env.stylizer.render(L + c, base, torch.arange(L.shape[0])).float()
            S0 = env.stylizer.render(L, base, torch.arange(L.shape[0])).float()
        targets.update({_key(o): s_ for o, s_ in zip(frames, S)})
        zero.update({_key(o): s_ for o, s_ in zip(frames, S0)})
        far.append((S[1:] - S0[1:]).pow(2).mean().item())                        # the anchor at the optimum c
    bound = 0.02 * sum(far) / len(far)
    cfg = cfg.override(reward={"constraints": {"anchor": bound}})
    out = train(cfg, run=f"toy_constraint_{learner}", resume=False)
    log = read_log(out)
    last = log[log.epoch >= cfg.train.epochs - 5]
    assert last["lambda_anchor"].iloc[-1] > 0                                  # the constraint binds
    assert 0.6 * bound < last["anchor"].mean() < 1.25 * bound, (last["anchor"].mean(), bound)
