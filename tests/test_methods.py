"""The competitors and controls, the policy heads, random crops, edge correlation, the evaluation
cache and the comparison table, on a tiny smoke setup with EXACT flows (known values)."""
import math
from dataclasses import replace

import pytest
import torch
from conftest import isolated_home, tiny

from vstlib.config import get_config
from vstlib.evaluation import competitors as methods
from vstlib.evaluation.metrics import edge_correlation, warping_error
from vstlib.flow import inside_mask, warp
from vstlib.rl.episodes import build_episode, crop_episode, make_env, random_box
from vstlib.rl.policy import LatentPolicy
from vstlib.rl.step import policy_frames
from vstlib.rl.train import read_log, train
from vstlib.video.clips import load_manifest
from vstlib.video.prepare import prepare

TINY = tiny(data={"size": 48}, backbone={"resolution": 48},
            policy={"observation": "flow", "head": "blend"}, reward={"normalize": "baseline"},
            train={"checkpoint_every": 100, "learner": "pathwise", "seeds": (0, 1)},
            compare={"blends": (0.0, 0.5), "direct_steps": 2, "direct_lr": 0.05})

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    yield from isolated_home(tmp_path_factory.mktemp("methods"))


@pytest.fixture(scope="module")
def cfg(home):
    cfg = get_config("smoke", **TINY)
    prepare(cfg)
    return cfg


@pytest.fixture(scope="module")
def env(cfg):
    e = make_env(cfg)
    return e.stylizer, e.reward, build_episode(cfg, load_manifest(cfg.profile)["train"][0], e)


def test_untrained_blend_head_is_the_latent_blend(cfg, env):
    """Zero-initialised, the blend head's mean action gives exactly the latent blend with
    b = sigmoid(blend_init); a wrong sign or a missing mask would not."""
    stylizer, _, ep = env
    for b_init in (0.0, 1.5):
        pol = LatentPolicy.from_config(cfg.override(policy={"blend_init": b_init}).policy).eval()
        S_pol = policy_frames(pol, stylizer, ep.base, ep.clip)
        S_blend = methods.latent_blend(ep, stylizer, 1 / (1 + math.exp(-b_init)))
        assert torch.allclose(S_pol, S_blend, atol=1e-5)
    # and it is not the baseline: the blend moves frames 1.. (frame 0 is the baseline's)
    assert not torch.allclose(S_blend[1:], ep.base.images[1:], atol=1e-4)
    assert torch.equal(S_blend[0], ep.base.images[0])


def test_blend_head_needs_the_flow_observation():
    with pytest.raises(ValueError, match="observation='flow'"):
        LatentPolicy(head="blend", observation="pair")


def test_constant_head_never_looks_at_the_input():
    pol = LatentPolicy(latent_channels=4, head="constant")
    with torch.no_grad():
        pol.offset.copy_(torch.arange(4.0).view(1, 4, 1, 1))
    a, b = torch.randn(2, 4, 5, 6), torch.randn(2, 4, 5, 6)
    mu1, mu2 = pol(a, b).mean, pol(b * 3, a - 1).mean
    assert torch.equal(mu1, mu2) and torch.equal(mu1[1, 2], torch.full((5, 6), 2.0))


def test_blends_with_b_zero_are_the_baseline_and_pixel_blend_one_removes_flicker(env):
    """b = 0: the baseline exactly. b = 1 in pixel space on EXACT flows: every visible pixel of
    S_t is S_{t-1} warped, so the warping error on visible pixels is ~0."""
    stylizer, _, ep = env
    D = ep.base.images.float()
    assert torch.allclose(methods.latent_blend(ep, stylizer, 0.0), D, atol=1e-5)
    assert torch.equal(methods.pixel_blend(ep, 0.0), D)
    S = methods.pixel_blend(ep, 1.0)
    f = ep.flows
    before = warping_error(D[:-1], D[1:], f["fw"], f["mask_fw"]).mean()
    after = warping_error(S[:-1], S[1:], f["fw"], f["mask_fw"]).mean()
    assert before > 1e-4 and after < 0.5 * before
    # in the direction the blend used (S_t vs S_{t-1} pulled along bw, visible pixels) it is exact
    resid = ((S[1:] - warp(S[:-1], f["bw"])).abs() * f["mask_bw"]).sum() / f["mask_bw"].sum().clamp(min=1)
    assert resid < 1e-5


def test_frozen_first_repeats_frame_zero(env):
    _, _, ep = env
    S = methods.frozen_first(ep)
    assert S.shape == ep.base.images.shape and all(torch.equal(S[t], ep.base.images[0]) for t in range(len(S)))


def test_direct_optimisation_improves_the_clips_reward(env):
    """Gradient descent on the actions raises the clip's own reward; zero steps is the baseline."""
    stylizer, reward_model, ep = env
    torch.manual_seed(0)
    assert torch.allclose(methods.direct(ep, stylizer, reward_model, 0, 0.05), ep.base.images, atol=1e-5)
    S = methods.direct(ep, stylizer, reward_model, 8, 0.05)
    r = reward_model.terms(S.clamp(0, 1), ep.frames, ep.flows, ep.base_terms)["reward"].mean()
    assert r > ep.base_terms["reward"].mean() + 1e-3


def test_crop_episode_keeps_flow_values_and_masks_what_leaves_the_window(env):
    """A window's flows are the full flows' values there; a pixel whose correspondence leaves the
    window is masked out (else it would be compared with the border-padded warp); the baseline's
    terms are recomputed on the window."""
    stylizer, reward_model, ep = env
    box = (1, 2, 4, 4)                                                         # latent cells (factor 8)
    c = crop_episode(ep, box, reward_model)
    win = (..., slice(8, 40), slice(16, 48))
    assert c.frames.shape[-2:] == (32, 32) and c.clip.L.shape[-2:] == (4, 4)
    assert torch.equal(c.flows["fw"], ep.flows["fw"][win])
    assert torch.equal(c.flows["mask_fw"], ep.flows["mask_fw"][win] * inside_mask(c.flows["fw"]))
    assert c.flows["mask_fw"].sum() < ep.flows["mask_fw"][win].sum()           # the clip moves: some leave
    assert torch.equal(c.base.images, ep.base.images[win])
    with torch.no_grad():
        R = stylizer.render(c.clip.L[1:], c.base, torch.arange(1, c.clip.n_frames))  # a window renders at its size
    assert R.shape[-2:] == (32, 32)
    expect = reward_model.terms(c.base.images, c.frames, c.flows)
    assert all(torch.allclose(expect[k], c.base_terms[k]) for k in expect)
    # windows are reproducible and inside the latent
    b1, b2 = random_box(ep, 4, (0, 1, 2)), random_box(ep, 4, (0, 1, 2))
    assert b1 == b2 and b1[0] + 4 <= ep.clip.L.shape[-2] and b1[1] + 4 <= ep.clip.L.shape[-1]
    assert random_box(ep, 0, (0,)) == (0, 0, *ep.clip.L.shape[-2:])


def test_edge_correlation_known_values():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 24, 24, generator=g)
    assert torch.allclose(edge_correlation(x, x), torch.ones(2), atol=1e-5)
    assert torch.allclose(edge_correlation(1 - x, x), torch.ones(2), atol=1e-5)   # same edges, inverted
    noise = torch.rand(2, 3, 24, 24, generator=g)
    assert edge_correlation(noise, x).abs().max() < 0.3


def test_training_on_crops_is_seeded_and_renders_at_crop_size(cfg, monkeypatch):
    from vstlib.backbones import BACKBONES

    cls = BACKBONES.pick(cfg.backbone.name)
    sizes, real = [], cls.render
    monkeypatch.setattr(cls, "render", lambda self, L, *a: sizes.append(tuple(L.shape[-2:])) or real(self, L, *a))
    c = cfg.override(train={"crop": 4, "seeds": (0,)})
    a = read_log(train(c, run="crop_a", resume=False)).drop(columns="time")
    assert sizes and set(sizes) == {(4, 4)}                                    # 4 x 4 latent cells = 32 px windows
    b = read_log(train(c, run="crop_b", resume=False)).drop(columns="time")
    assert len(a) > 0 and a.equals(b)
    full = read_log(train(cfg.override(train={"seeds": (0,)}), run="full", resume=False))
    assert not full["base_temporal"].equals(a["base_temporal"])                # windows, not whole frames


def test_evaluation_cache_is_reused_keyed_and_rebuilt(cfg, monkeypatch):
    from vstlib import paths
    from vstlib.evaluation import evaluate as ev

    c = cfg.override(train={"seeds": (0,)})
    run = train(c, run="evalcache")
    first = ev.evaluate(c, run="evalcache", splits=("test",))["table1"]
    calls = []
    real = ev._score_clips
    monkeypatch.setattr(ev, "_score_clips", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = ev.evaluate(c, run="evalcache", splits=("test",))["table1"]
    assert calls == [] and again.round(8).equals(first.round(8))
    # adding comparison rows does not rescore the policy; changing how it is scored does
    ev.evaluate(c.override(compare={"control_seeds": 2, "blends": (0.3,), "methods": ["frozen_first"]}),
                run="evalcache", splits=("test",))
    assert calls == []
    ev.evaluate(c.override(eval={"warp_error": "rgb_mean"}), run="evalcache", splits=("test",))
    assert calls == [1]
    calls.clear()
    ev.evaluate(c, run="evalcache", splits=("train", "test"))                 # other clips: scored
    assert calls == [1]
    (run / ev.EVAL_CACHE).write_text("{not json")                              # damaged: rescored
    ev.evaluate(c, run="evalcache", splits=("test",))
    assert calls == [1, 1]
    # a partial-split evaluation of a non-main run stays in its folder: the paper's tables are untouched
    assert (run / "table1.csv").exists() and not (paths.results_dir(c.profile) / "table1.csv").exists()
    # the input / per-frame / baseline rows are scored once per clip and shared by every policy
    losses, real_losses = [], ev.clip_losses
    monkeypatch.setattr(ev, "clip_losses", lambda *a, **k: losses.append(1) or real_losses(*a, **k))
    fresh = ev.evaluate(c, run="other", policy=LatentPolicy.from_config(c.policy), splits=("test",))["table1"]
    assert len(losses) == len(load_manifest(c.profile)["test"])                # the policy's rows only
    ref = fresh[fresh.method != "policy"].drop(columns=["note"], errors="ignore").round(8)
    assert ref.equals(first[first.method != "policy"].drop(columns=["note"], errors="ignore").round(8))


def test_compare_scores_every_method_on_every_seed_and_style(cfg):
    """The protocol's rows: references, the untrained start, frontiers, controls and every learner on
    every seed, in the seen style and an unseen one; the CSVs the issue names; known values: the
    b = 0 blends are N(I_t) itself (every change exactly 0), the untrained blend head is the latent blend
    at b = 0.5, and N(I_t) is the reference (no row of its own in the summary)."""
    from vstlib import paths
    from vstlib.evaluation.compare import compare, learned_runs
    from vstlib.evaluation.protocol import KEYS, MEASURES

    cfg = cfg.override(compare={"frontier": (10.0, 20.0), "unseen_styles": ("assets:styles/wave.jpg",),
                                "unseen_clips": 1})
    per_clip, summary = compare(cfg)
    assert list(per_clip.columns) == KEYS + list(MEASURES)
    methods = set(per_clip.method)
    assert {"input", "per_frame", "init", "policy", "reinforce_paper", "rloo", "obs_pair", "constant", "weights_20",
            "latent_blend", "pixel_blend", "bonneel", "frozen_first", "direct"} <= methods
    assert "weights_10" not in methods                                      # = the main run: not trained twice
    for m in ("policy", "reinforce_paper", "rloo", "obs_pair", "constant", "weights_20"):   # every learner, every seed
        assert sorted(set(per_clip[per_clip.method == m].seed)) == [0, 1], m
    n_test = len(load_manifest(cfg.profile)["test"])
    assert per_clip.groupby("seen_style").clip.nunique().to_dict() == {True: n_test, False: 1}
    runs = {(m, s): (c, r) for m, s, c, r in learned_runs(cfg)}
    assert len({r for _, r in runs.values()}) == len(runs)                  # one run folder per (method, seed)
    assert runs[("reinforce_paper", 0)][1] == "ablations/learner/reinforce_paper"  # the ablation grid's cell
    rl, wt = runs[("rloo", 1)][0], runs[("weights_20", 1)][0]
    assert (rl.train.learner, rl.train.samples, rl.train.normalize_advantage, rl.train.seed) == ("rloo", 4, True, 1)
    assert rl.policy == cfg.policy and rl.reward == cfg.reward               # the main run's settings otherwise
    assert wt.reward.w_temp == 20.0 and wt.train == replace(cfg.train, seed=1)
    res = paths.results_dir(cfg.profile)
    assert (res / "eval_per_clip.csv").exists() and (res / "eval_summary.csv").exists()
    s = summary.set_index(["method", "setting", "style_group"])
    assert "per_frame" not in set(summary.method) and set(summary.style_group) == {"seen", "unseen"}
    for kind in ("latent_blend", "pixel_blend"):
        zero = s.loc[(kind, "b=0", "seen")]
        assert all(abs(zero[f"{m}_delta"]) < 1e-6 for m in MEASURES), kind
    init_setting = summary[summary.method == "init"].setting.iloc[0]
    init, blend = s.loc[("init", init_setting, "seen")], s.loc[("latent_blend", "b=0.5", "seen")]
    assert all(abs(init[f"{m}_delta"] - blend[f"{m}_delta"]) < 1e-4 for m in MEASURES)
    pol = s.loc[("policy", summary[summary.method == "policy"].setting.iloc[0], "seen")]
    assert pol.n_seeds == 2 and pol.warp_indep_lo <= pol.warp_indep_delta <= pol.warp_indep_hi
    assert s.loc[("frozen_first", "", "seen")].warp_indep_delta < 0               # "consistent": it never moves


def test_baseline_terms_are_cached_validated_and_rebuilt(cfg, env, capsys):
    from vstlib import paths

    stylizer, reward_model, ep = env
    cid, folder = ep.clip_id, paths.cache_dir(cfg.profile) / "terms"
    c = cfg.override(reward={"loss_size": 40})                                # a key no other test uses
    e = make_env(c)
    before = set(folder.glob(f"{cid}-*.safetensors"))
    a = build_episode(c, cid, e)
    new = set(folder.glob(f"{cid}-*.safetensors")) - before
    assert len(new) == 1
    fresh = e.reward.terms(a.base.images, a.frames, a.flows)                     # what the cache stands for
    assert all(torch.equal(a.base_terms[k], fresh[k]) for k in fresh)
    f = new.pop()
    f.write_bytes(f.read_bytes()[:-20])                                           # truncated: rebuilt
    b = build_episode(c, cid, e)
    assert "rebuilding it" in capsys.readouterr().err
    assert all(torch.equal(a.base_terms[k], b.base_terms[k]) for k in fresh)
    w = build_episode(c.override(reward={"w_temp": 3.0}), cid, make_env(c.override(reward={"w_temp": 3.0})))
    assert len(set(folder.glob(f"{cid}-*.safetensors")) - before) == 1        # weights only combine the terms:
    assert torch.equal(w.base_terms["temporal"], a.base_terms["temporal"])    # the same file, the reward recombined
    assert torch.allclose(w.base_terms["reward"], -(c.reward.w_style + c.reward.w_content + 3.0) * torch.ones(1))
    c1 = c.override(reward={"style_layers": ("relu1_1",)})                      # another term: another key
    build_episode(c1, cid, make_env(c1))
    assert len(set(folder.glob(f"{cid}-*.safetensors")) - before) == 2


def test_training_logs_count_reward_queries(cfg):
    """'queries' (rewards computed) lets learners be compared per query: the pathwise learner
    scores each transition of its chunk once; REINFORCE scores the whole rollout, booked on the
    clip's first update."""
    pw = read_log(train(cfg.override(train={"seeds": (0,)}), run="q_pw", resume=False))
    assert pw.queries.tolist() == [len(f) for f in pw.frames]
    rf = read_log(train(cfg.override(train={"learner": "reinforce", "seeds": (0,)}), run="q_rf", resume=False))
    for _, visit in rf.groupby(["epoch", "clip"], sort=False):
        assert visit.queries.tolist() == [sum(len(f) for f in visit.frames)] + [0] * (len(visit) - 1)
    assert rf.queries.sum() == pw.queries.sum() > 0


def test_episode_flicker_curves(cfg, env):
    """The flicker figure's data: per-pair warping error of each method; the policy's curve is
    computed from the frames given (the baseline's frames give the baseline's curve exactly)."""
    from vstlib.evaluation.evaluate import episode_flicker, flicker_curves

    _, reward_model, ep = env
    c = episode_flicker(ep, reward_model, ep.base.images)
    assert set(c) >= {"input", "baseline", "policy"} and len(c["input"]) == ep.frames.shape[0] - 1
    assert (c["policy"] == c["baseline"]).all()
    F, f = ep.frames, ep.flows
    assert torch.allclose(torch.as_tensor(c["input"]), warping_error(F[:-1], F[1:], f["fw"], f["mask_fw"]).flatten())
    assert set(flicker_curves(cfg, ep.clip_id)) == set(c) - {"policy"}


def test_pathwise_renders_each_frame_once_and_acts_on_its_own_chain(cfg, env, monkeypatch):
    """Chunk by chunk over a visit, every frame is rendered once (a chunk's past frame S_{s-1} is the
    previous chunk's last render) and the observation is the chain's own previous output: with a
    deterministic policy the chain's states are the outputs of one unroll over the whole clip."""
    from vstlib.rl.episodes import Env
    from vstlib.rl.learners import Agent, Chain, pathwise_loss
    from vstlib.rl.step import unroll

    stylizer, reward_model, ep = env
    pol = LatentPolicy.from_config(cfg.override(policy={"sigma_init": 1e-12}).policy)   # a = mu
    with torch.no_grad():
        pol.head.weight.normal_(std=0.1)                                       # frames differ from the blend
    rendered, real = [], stylizer.render
    monkeypatch.setattr(stylizer, "render", lambda L, *a: rendered.append(L.shape[0]) or real(L, *a))
    e, chain = Env(stylizer, reward_model, None, torch.device("cpu")), Chain()
    chunks = torch.arange(ep.n_steps).split(2)
    assert len(chunks) >= 2
    agent = Agent(cfg, pol)
    for c in chunks:
        pathwise_loss(pol, e, ep, chain, c, agent, cfg.train)
    assert rendered == [len(c) for c in chunks]                                # every frame once
    whole = unroll(pol, ep.clip, "mean").out[0]                               # (T-1,C,h,w) frames 1..T-1
    for t, out in chain.out.items():
        assert torch.allclose(out[0], whole[t - 1], atol=1e-5), t


def test_window_terms_are_cached_by_content_and_validated(env, tmp_path, capsys):
    """A window's baseline terms come back from disk equal to a fresh computation; another window
    gets its own file; a damaged file is rebuilt with a notice."""
    stylizer, reward_model, ep = env
    a = crop_episode(ep, (1, 2, 4, 4), reward_model, tmp_path)
    files = sorted(tmp_path.glob("*.safetensors"))
    assert len(files) == 1
    b = crop_episode(ep, (1, 2, 4, 4), reward_model, tmp_path)                   # read back
    fresh = crop_episode(ep, (1, 2, 4, 4), reward_model)
    assert all(torch.equal(a.base_terms[k], fresh.base_terms[k]) and torch.equal(b.base_terms[k], fresh.base_terms[k])
               for k in fresh.base_terms)
    crop_episode(ep, (0, 0, 4, 4), reward_model, tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    files[0].write_bytes(b"garbage")
    c = crop_episode(ep, (1, 2, 4, 4), reward_model, tmp_path)
    assert "rebuilding" in capsys.readouterr().err
    assert all(torch.equal(c.base_terms[k], fresh.base_terms[k]) for k in fresh.base_terms)


def test_comparison_table_has_every_row_with_its_interval(cfg, tmp_path, monkeypatch):
    import pandas as pd

    from vstlib import paths, report
    from vstlib.evaluation.protocol import MEASURES

    monkeypatch.setenv("VSTLIB_HOME", str(tmp_path))                        # never the committed paper/tables
    row = {"setting": "", "n_clips": 18, "n_seeds": 3}
    for m in MEASURES:
        row.update({f"{m}_delta": -12.34, f"{m}_lo": -20.0, f"{m}_hi": -5.0})
    summary = pd.DataFrame([dict(row, method="policy", style_group="seen"), dict(row, method="init", style_group="unseen")])
    out = report.write_comparison_table(summary, cfg)
    text = out.read_text()
    assert out.parent == paths.tables_dir(cfg.profile) and tmp_path in out.parents
    assert text.count("-12.3 [-20.0, -5.0]") == 2 * 5 and "18x3" in text and "unseen" in text
    view = report.comparison_view(summary, "seen")
    assert list(view.method) == ["policy"] and view.warp_indep.iloc[0] == "-12.3 [-20.0, -5.0]"


def test_a_window_is_scored_at_its_whole_frames_scale():
    """The reward resizes whole frames to short side loss_size; a window of them must go down by the same
    factor, or training would see texture at another scale than evaluation (a 128 px window of a 256 px
    frame at loss_size 128 is halved, not kept)."""
    from vstlib.rl.episodes import window_loss_size

    assert window_loss_size(128, (256, 456), (128, 128)) == 64
    assert window_loss_size(128, (256, 456), (256, 456)) == 128
    assert window_loss_size(0, (256, 456), (128, 128)) == 0
