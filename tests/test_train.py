"""REINFORCE training and evaluation on a tiny smoke setup: reproducible, resumable, NaN-safe."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import isolated_home, tiny

from vstlib import paths
from vstlib.config import get_config
from vstlib.files import read_jsonl
from vstlib.runtime import seed_everything

# accumulation 2 over 3 transitions -> 2 updates per clip, 4 per epoch; checkpoint after every clip.
TINY = tiny(train={"epochs": 2})


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    yield from isolated_home(tmp_path_factory.mktemp("vsthome"))


@pytest.fixture(scope="module")
def cfg(home):
    from vstlib.video.prepare import prepare

    cfg = get_config("smoke", **TINY)
    m = prepare(cfg)
    assert len(m["train"]) == 2 and len(m["test"]) == 1
    return cfg


@pytest.fixture(scope="module")
def run_a(cfg):
    from vstlib.rl.train import train

    return train(cfg, run="a")


def _weights(run_dir):
    from vstlib.files import load_tensors

    return load_tensors(run_dir / "policy.safetensors")


def _log(run_dir, drop=("time",)):
    return [{k: v for k, v in r.items() if k not in drop} for r in read_jsonl(run_dir / "log.jsonl")]


def _init_weights(cfg):
    from vstlib.rl.policy import LatentPolicy

    seed_everything(cfg.train.seed)
    return LatentPolicy.from_config(cfg.policy).state_dict()


def test_training_is_seeded_and_logs_every_update(cfg, run_a):
    from vstlib.rl.train import train
    from vstlib.video.clips import load_manifest

    log = _log(run_a)
    assert [r["step"] for r in log] == list(range(8))                          # 2 epochs x 2 clips x 2 chunks
    assert [r["epoch"] for r in log] == [0] * 4 + [1] * 4
    assert {r["clip"] for r in log} == set(load_manifest(cfg.profile)["train"])
    keys = {"reward", "advantage", "style", "content", "temporal", "base_style", "base_content",
            "base_temporal", "sigma", "gate", "grad_norm", "skipped"}
    assert keys <= set(log[0])
    assert not any(r["skipped"] for r in log)
    assert all(math.isfinite(r["reward"]) and math.isfinite(r["grad_norm"]) for r in log)
    # the policy reward differs from the baseline's (actions act), and the weights moved
    assert any(abs(r["advantage"]) > 0 for r in log)
    w, w0 = _weights(run_a), _init_weights(cfg)
    assert set(w) == set(w0)
    assert any(not torch.equal(w[k], w0[k]) for k in w)

    run_b = train(cfg, run="b")                                                # same seed, fresh run
    assert _log(run_b) == log
    wb = _weights(run_b)
    assert all(torch.equal(wb[k], w[k]) for k in w)


def test_resume_after_interruption_continues_the_same_curve(cfg, run_a, monkeypatch):
    import vstlib.rl.train as tr
    from vstlib.rl.train import train

    run_c = train(cfg, run="c", max_updates=3)                                 # "crash" mid-clip
    assert len(read_jsonl(run_c / "log.jsonl")) == 3
    assert not (run_c / "policy.safetensors").exists()
    assert __import__("json").loads((run_c / "checkpoint.json").read_text())["step"] == 2
    train(cfg, run="c")                                                        # resume: log truncated to 2
    assert _log(run_c) == _log(run_a)
    wc, wa = _weights(run_c), _weights(run_a)
    assert all(torch.equal(wc[k], wa[k]) for k in wa)
    # resuming a finished run is a no-op, and loads no model (issue 14.6)
    def no_models(*a, **k):
        raise AssertionError("a finished run loaded the models")
    monkeypatch.setattr(tr, "make_env", no_models)
    train(cfg, run="c")
    assert len(read_jsonl(run_c / "log.jsonl")) == 8
    # which other runs the notebooks make and how runs are scored do not change this run's curve;
    # a training setting does, and is refused (it would splice two curves)
    train(cfg.override(train={"ablation_grids": ("learner",), "seeds": (0, 5)}, compare={"methods": ()}), run="c")
    from vstlib.errors import InputError
    with pytest.raises(InputError, match="another config.*train.lr"):
        train(cfg.override(train={"lr": 5e-3}), run="c")


def test_an_actor_critic_with_a_constraint_resumes_exactly(cfg):
    """SHAC's critic, its Adam group and the Lagrange multipliers live in the checkpoint: an interrupted
    and an uninterrupted run log the same lines (multipliers, critic loss) and end with the same weights."""
    from vstlib.files import load_tensors
    from vstlib.rl.checkpoint import CKPT
    from vstlib.rl.train import train

    c = cfg.override(train={"learner": "shac", "checkpoint_every": 2}, reward={"normalize": "baseline",
                                                                              "constraints": {"style": 1.0}})
    whole = train(c, run="shac_whole")
    cut = train(c, run="shac_cut", max_updates=5)
    train(c, run="shac_cut")
    assert _log(cut) == _log(whole)
    log = _log(whole)
    assert {"lambda_style", "critic_loss", "value"} <= set(log[0])
    assert len({r["lambda_style"] for r in log}) > 1                          # dual ascent moved it
    a, b = load_tensors(whole / CKPT), load_tensors(cut / CKPT)
    assert any(k.startswith("agent.critic.") for k in a) and "agent.multipliers.lam" in a
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("agent.", "policy.")))


@pytest.mark.parametrize("crop", [4, 0])                                      # windows, and whole clips
def test_bounds_by_start_are_the_untrained_policys_terms_on_each_window_and_resume_exactly(cfg, crop):
    """With reward.bound_by="start" each update's window carries the untrained policy's terms (logged as
    start_<term>): at the first update, before any step, they are the policy's own terms there (its
    actions differ only by the sampling noise). A cut run resumes onto the same curve."""
    from vstlib.rl.train import train

    c = cfg.override(train={"learner": "pathwise", "checkpoint_every": 2, "crop": crop},
                     policy={"observation": "flow", "head": "blend", "sigma_init": 1e-4},   # starts at a blend
                     reward={"normalize": "baseline", "constraints": {"style": 1.0}, "bound_by": "start"})
    whole = train(c, run=f"start_whole{crop}")
    cut = train(c, run=f"start_cut{crop}", max_updates=5)
    train(c, run=f"start_cut{crop}")
    log = _log(whole)
    assert _log(cut) == log
    assert log[0]["start_style"] == pytest.approx(log[0]["style"], rel=1e-3)
    assert log[0]["start_style"] != pytest.approx(log[0]["base_style"], rel=1e-3)    # not N(I_t)'s
    assert len({r["start_style"] for r in log}) > 1                            # per window, or per clip
    assert len({r["lambda_style"] for r in log}) > 1


def test_nan_reward_skips_the_update_and_keeps_the_checkpoint_clean(cfg, monkeypatch):
    import vstlib.rl.learners as learners
    from vstlib.rl.checkpoint import load_policy
    from vstlib.rl.train import train

    calls = {"n": 0}
    real = learners.rollout

    def nan_first_rollout(*a, **k):
        out = real(*a, **k)
        calls["n"] += 1
        if calls["n"] == 1:                                                    # whole first clip: a NaN term
            out.terms["temporal"] = out.terms["temporal"] * float("nan")
        return out

    monkeypatch.setattr(learners, "rollout", nan_first_rollout)
    run = train(cfg, run="nan", max_updates=2)
    log = read_jsonl(run / "log.jsonl")
    assert [r["skipped"] for r in log] == [True, True]
    assert all(r["reason"] == "non-finite reward" and r["reward"] is None for r in log)
    # no step was taken: the checkpoint after the clip holds the initial weights and no Adam state
    ck = run / "checkpoint.safetensors"
    p = load_policy(ck, cfg.policy)
    w0 = _init_weights(cfg)
    assert all(torch.equal(p.state_dict()[k], w0[k]) for k in w0)
    from safetensors.torch import load_file

    assert not any(k.startswith("adam.") for k in load_file(str(ck)))
    # resuming from it trains normally
    train(cfg, run="nan")
    log = read_jsonl(run / "log.jsonl")
    assert len(log) == 8 and not any(r["skipped"] for r in log[2:])
    w = _weights(run)
    assert all(torch.isfinite(v).all() for v in w.values())
    assert any(not torch.equal(w[k], w0[k]) for k in w0)


def test_nan_gradient_is_skipped(cfg, monkeypatch):
    import vstlib.rl.learners as learners
    from vstlib.rl.train import train

    orig, calls = learners.log_prob, {"n": 0}

    def inf_on_first_call(dist, action):             # first call WITH grad: update 0 (rollouts run without)
        calls["n"] += torch.is_grad_enabled()
        lp = orig(dist, action)
        return lp * float("inf") if calls["n"] == 1 else lp

    monkeypatch.setattr(learners, "log_prob", inf_on_first_call)
    run = train(cfg, run="infgrad", max_updates=2)
    log = read_jsonl(run / "log.jsonl")
    assert [r["skipped"] for r in log] == [True, False]
    assert log[0]["reason"] == "non-finite gradient" and log[0]["grad_norm"] is None
    assert math.isfinite(log[1]["grad_norm"])


def test_evaluate_writes_both_tables(cfg, run_a):
    from vstlib.evaluation.evaluate import evaluate
    from vstlib.rl.policy import LatentPolicy

    # a fresh policy with a closed gate: mean action ~ 0, so the policy scores like the baseline
    fresh = LatentPolicy.from_config(cfg.override(policy={"gate_init": 5.0}).policy)
    t = evaluate(cfg, run="main", policy=fresh)
    res = paths.results_dir(cfg.profile)
    t1, t2 = pd.read_csv(res / "table1.csv"), pd.read_csv(res / "table2.csv")
    # table 1 also has the unstylized clip's row (DiffuseST has no per-frame row: per_frame is None)
    assert set(t1.method) == {"input", "baseline", "policy"}
    assert (t1[t1.method == "input"].content.abs() < 1e-6).all()              # LPIPS(I, I) = 0
    t1 = t1[t1.method != "input"]
    assert set(t2.embedder) == {"CLIP"}
    for df, cols in ((t1, ["content", "style", "temporal", "warp_error"]), (t2, ["content", "style", "temporal"])):
        assert {"method", "split", *cols, "note"} <= set(df.columns)
        assert set(zip(df.method, df.split)) == {(m, s) for m in ("baseline", "policy") for s in ("train", "test")}
        assert np.isfinite(df[cols].to_numpy()).all()
        assert df.note.str.contains("smoke profile").all()
        b = df[df.method == "baseline"].set_index("split")[cols]
        p = df[df.method == "policy"].set_index("split")[cols]
        np.testing.assert_allclose(p.to_numpy(), b.loc[p.index].to_numpy(), rtol=2e-2, atol=1e-4)
    # real motion: consecutive stylized frames differ; CLIP cosines are cosines
    assert (t1.temporal > 0).all()
    assert ((t2[["content", "style", "temporal"]] <= 1 + 1e-5).all()).all()
    per = pd.read_csv(res / "table1_per_clip.csv")
    assert len(per) == 3 * 3 and (res / "table2_per_clip.csv").exists()
    assert t["table1"].shape[0] == 6

    # the trained run's policy (loaded from policy.safetensors) acts: its frames differ
    t_a = evaluate(cfg, run="a")
    assert (paths.run_dir(cfg.profile, "a") / "table1.csv").exists()
    a1 = t_a["table1"].set_index(["method", "split"])
    assert not np.allclose(a1.loc["policy"][["content", "style"]].to_numpy(),
                           a1.loc["baseline"][["content", "style"]].to_numpy(), rtol=1e-6, atol=0)
