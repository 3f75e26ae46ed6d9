"""LatentPolicy: shapes, initial gate/sigma, tiny initial actions, gradients, log-probs."""
import math

import pytest
import torch
import torch.nn as nn

from vstlib.config import get_config
from vstlib.rl.policy import LatentPolicy, log_prob


@pytest.fixture
def latents():
    g = torch.Generator().manual_seed(1)
    prev = torch.randn(3, 4, 8, 8, generator=g)                  # (N, C, h, w)
    cur = torch.randn(3, 4, 8, 8, generator=g)
    return prev, cur


def make_policy(seed=0, **kw):
    torch.manual_seed(seed)
    return LatentPolicy(**kw)


def test_shapes_and_from_config(latents):
    prev, cur = latents
    cfg = get_config("smoke")
    policy = LatentPolicy.from_config(cfg.policy)
    dist = policy(prev, cur)
    assert isinstance(dist, torch.distributions.Normal)
    assert dist.mean.shape == cur.shape and dist.stddev.shape == cur.shape
    assert dist.rsample().shape == cur.shape
    assert policy.head.out_channels == cfg.policy.latent_channels
    assert policy.trunk[0].in_channels == 2 * cfg.policy.latent_channels
    assert policy.trunk[0].out_channels == cfg.policy.hidden
    # instance norms carry a learnable scale/shift
    norms = [m for m in policy.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert len(norms) == 4 and all(m.affine for m in norms)
    with pytest.raises(ValueError):
        policy(prev, cur[:, :, :4])


def test_initial_gate_sigma_and_tiny_mean(latents):
    prev, cur = latents
    policy = make_policy()
    assert float(policy.gate) == pytest.approx(5.0)
    assert float(policy.sigma) == pytest.approx(0.1, rel=1e-6)
    dist = policy(prev, cur)
    assert torch.allclose(dist.stddev, torch.full_like(cur, 0.1))
    raw = policy.head(policy.trunk(torch.cat([prev, cur], 1)))
    scale = 1 - torch.sigmoid(torch.tensor(5.0))                 # ~0.0067
    assert float(scale) == pytest.approx(0.00669, abs=1e-5)
    assert torch.allclose(dist.mean, scale * raw, atol=1e-9)
    assert raw.abs().max() > 0                                    # not identically zero ...
    assert dist.mean.abs().max() < 1e-3                           # ... but tiny next to sigma


def test_other_inits_and_bad_sigma(latents):
    prev, cur = latents
    policy = make_policy(gate_init=0.0, sigma_init=0.5)
    assert float(policy.sigma) == pytest.approx(0.5, rel=1e-6)
    raw = policy.head(policy.trunk(torch.cat([prev, cur], 1)))
    assert torch.allclose(policy(prev, cur).mean, 0.5 * raw, atol=1e-9)
    with pytest.raises(ValueError):
        LatentPolicy(sigma_init=0.0)


def test_gradients_reach_every_parameter(latents):
    prev, cur = latents
    policy = make_policy()
    dist = policy(prev, cur)
    action = dist.rsample()                                       # (N, C, h, w)
    target = torch.randn_like(action)
    loss = (action * target).sum()
    loss.backward()
    names = dict(policy.named_parameters())
    assert "gate_param" in names and "log_sigma" in names
    for name, p in names.items():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, f"no gradient reached {name}"


def test_log_prob_matches_formula(latents):
    prev, cur = latents
    policy = make_policy()
    dist = policy(prev, cur)
    a = dist.sample()
    lp = log_prob(dist, a)
    assert lp.shape == (3,)
    mu, s = dist.mean, dist.stddev
    manual = (-(a - mu) ** 2 / (2 * s ** 2) - torch.log(s) - 0.5 * math.log(2 * math.pi))
    assert torch.allclose(lp, manual.sum((1, 2, 3)), rtol=1e-5, atol=1e-3)
    # the REINFORCE gradient reaches sigma through log_prob
    lp.sum().backward()
    assert policy.log_sigma.grad is not None and policy.log_sigma.grad.abs() > 0


def test_seeded_policies_agree(latents):
    prev, cur = latents
    d1, d2 = make_policy(7)(prev, cur), make_policy(7)(prev, cur)
    assert torch.equal(d1.mean, d2.mean)
    assert not torch.equal(make_policy(8).head.weight, make_policy(7).head.weight)


def test_first_kernel_and_checkpoints_written_before_it(tmp_path, latents):
    """policy.first_kernel sets the first conv only (1: a per-cell mix; the cpu profile's); a policy file
    whose metadata predates the field loads as the 3x3 policy it was trained as."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from vstlib.rl.checkpoint import load_policy, save_policy

    prev, cur = latents
    cfg = get_config("smoke").override(policy={"first_kernel": 1})
    one = LatentPolicy.from_config(cfg.policy)
    assert one.trunk[0].kernel_size == (1, 1) and one.trunk[0].padding == (0, 0)
    assert [m.kernel_size for m in one.trunk.modules() if isinstance(m, nn.Conv2d)][1:] == [(3, 3)] * 3
    assert one(prev, cur).mean.shape == cur.shape
    assert get_config("cpu").policy.first_kernel == 1 and get_config("smoke").policy.first_kernel == 3
    # written by an older vstlib: no first_kernel in its metadata, 3x3 weights
    old = make_policy(seed=3, latent_channels=4, hidden=16)
    path = save_policy(tmp_path / "old.safetensors", old, get_config("smoke"))
    with safe_open(str(path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    saved = json.loads(meta["vstlib"])
    del saved["policy"]["first_kernel"]
    save_file(tensors, str(path), metadata={**meta, "vstlib": json.dumps(saved)})
    loaded = load_policy(path, cfg.policy)                      # the cpu-like config asks for 1x1: the file wins
    assert loaded.trunk[0].kernel_size == (3, 3)
    torch.testing.assert_close(loaded(prev, cur).mean, old.eval()(prev, cur).mean)
