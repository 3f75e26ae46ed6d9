"""What a build is and what its numbers show, in words generated from its config and results: the
notebooks' descriptions and closing findings, and the paper's method section (``tables/method.tex``).
Nothing here is typed about a result: every model, setting and number comes from the config or a CSV.
"""
from __future__ import annotations

import pandas as pd

from vstlib.evaluation import tables
from vstlib.evaluation.stats import paired_difference
from vstlib.rl.rewards import relative, weight

STYLIZERS = {
    "microast": "MicroAST (Wang et al., AAAI 2023), an arbitrary-style network: any style image is an input",
    "faststyle": "a fast style network (Johnson et al. 2016) trained on one painting",
    "diffusest": "DiffuseST (Hu et al. 2024) on BLIP-Diffusion",
}
LATENTS = {
    ("microast", "native"): "MicroAST's own modulated feature map right before its upsampling decoder (64 channels "
                            "at 1/4 resolution), rendered by that decoder: no extra encode or decode",
    ("microast", "pixels"): "the stylized frame N(I_t) itself (3 channels at full resolution): the policy edits "
                            "pixels, nothing is decoded",
    ("microast", "taef2"): "TAEF2's latent of the stylized frame, E(N(I_t)) (32 channels at 1/8), rendered by TAEF2's "
                           "decoder",
    ("faststyle", "native"): "TAEF2's latent of the stylized frame, E(N(I_t)) (32 channels at 1/8), rendered by "
                             "TAEF2's decoder",
    ("diffusest", "native"): "the diffusion latent (the inverted noise x_T or the final latent z_0), rendered by "
                             "denoising and the VAE decoder",
}
LEARNERS = {
    "pathwise": "reward backpropagation (not reinforcement learning: no score function, no value): the reward of "
                "the rendered frames is differentiated through the decoder into reparameterised actions, along the "
                "chain of outputs the policy itself produced{bptt}",
    "reinforce": "REINFORCE with the per-frame stylization's reward on the same frame as baseline (the paper's "
                 "learner)",
    "rloo": "REINFORCE with K samples per transition and leave-one-out baselines (RLOO)",
    "shac": "an actor-critic with an analytic policy gradient (SHAC, Xu et al. 2022): reward backpropagation "
            "through the chain over windows of {window} frames, bootstrapped by a learned critic of the return "
            "(TD(lambda) targets, lambda {td})",
    "distill": "amortised refinement (DAgger): {k} Adam steps on the policy's own actions against the reward give "
               "labels that the policy's mean regresses onto, on the states it visits",
}
FLOWS = {"dis": "OpenCV DIS", "raft": "RAFT", "exact": "the synthetic clips' exact flow", "farneback": "OpenCV Farneback"}
NETS = {"vgg_r31": "VGG-19 (Gatys et al.'s normalised ImageNet weights, to relu3_1)", "vgg19": "VGG-19",
        "darknet": "Darknet-tiny (ImageNet)", "lpips_alex": "LPIPS (AlexNet)"}


def _style(cfg) -> str:
    s = str(cfg.data.style).split(":", 1)[-1].rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return s.replace("_", " ").title()


def stylizer(cfg) -> str:
    """The per-frame stylizer and where the policy acts, in Markdown."""
    return "\n".join(method(cfg).splitlines()[:2])


def _bound_unit(r, name: str) -> str:
    """What a constraint's bound multiplies: the untrained policy's term on the same frames, N(I_t)'s, or nothing."""
    if r.bound_by == "start":
        return " x the untrained policy's, on the same frames"
    return " x N(I_t)'s" if relative(name) and r.normalize == "baseline" else ""


def method(cfg) -> str:
    """The method of this build, in Markdown: stylizer, latent, policy, reward, learner and judge."""
    r, t = cfg.reward, cfg.train
    bptt = (f"; gradients run back through the chain within chunks of {t.accumulation} frames (truncated BPTT)"
            if t.bptt else "; each action's gradient stops at its own frame")
    learner = LEARNERS.get(t.learner, t.learner).format(bptt=bptt, window=t.accumulation, td=f"{t.td_lambda:g}",
                                                        k=t.refine_steps)
    free = [n for n in r.terms if n not in r.constraints]
    w = "/".join(f"{weight(r, n):g}" for n in free)
    goal = f"-({w}) x ({', '.join(free)})"
    if r.constraints:
        goal += " subject to " + ", ".join(f"{n} <= {b:g}{_bound_unit(r, n)}" for n, b in r.constraints.items()) + \
            " (a Lagrangian: dual ascent finds these terms' weights)"
    return "\n".join([
        f"- **Per-frame stylizer N**: {STYLIZERS.get(cfg.backbone.name, cfg.backbone.name)}; style image: "
        f"{_style(cfg)}.",
        f"- **Where the policy acts**: {LATENTS.get((cfg.backbone.name, cfg.backbone.latent), cfg.backbone.latent)}.",
        f"- **Policy**: a small conv net with the `{cfg.policy.head}` head observing `{cfg.policy.observation}` "
        f"(the previous and current latents{', and the previous output warped along the input flow' if cfg.policy.observation == 'flow' else ''}).",
        f"- **Reward**: {goal}; style: Gram loss on {NETS.get(r.style_net, r.style_net)} "
        f"({', '.join(r.style_layers)}), content: a perceptual distance on {NETS.get(r.content_net, r.content_net)} "
        f"to I_t, temporal: bidirectional, along {FLOWS.get(cfg.flow.source, cfg.flow.source)}{' (' + cfg.flow.dis_preset + ' preset)' if cfg.flow.source == 'dis' else ''} flow of the input "
        f"with an occlusion check{'; fidelity: the same perceptual distance to N(I_t) (Lai et al.' + chr(39) + 's perceptual loss)' if 'fidelity' in r.terms else ''}"
        f"{'; each term divided by the per-frame stylization' + chr(39) + 's' if r.normalize == 'baseline' else ''}.",
        f"- **Learner**: `{t.learner}`, {learner}; {t.epochs} epochs, lr {t.lr:g}, "
        f"{'windows of ' + str(t.crop) + ' latent cells' if t.crop else 'whole frames'}, seeds {list(t.seeds)}.",
        f"- **Judge**: warping error along {FLOWS['farneback']} flow (never used by a method), fidelity to N(I_t) "
        f"(MS-SSIM and {NETS.get(cfg.eval.perceptual, cfg.eval.perceptual)}), sharpness against N(I_t)."])


def data(manifest: dict) -> str:
    """Notebook 01's closing statement: the clips and the split."""
    clips = manifest["clips"]
    held = sum(bool(c.get("held_out")) for c in clips)
    motion = pd.Series([c["motion"] for c in clips])
    return (f"- {len(clips)} clips: {len(manifest['train'])} train, {len(manifest['test'])} test ({held} of them "
            f"held out); {len(manifest.get('dropped', []))} dropped; median motion {motion.median():.2f} px per "
            f"frame ({motion.min():.2f} to {motion.max():.2f}).")


def flicker(curves: dict) -> str:
    """Notebook 06's flicker statement: each method's mean warping error as a multiple of the input's."""
    base = float(pd.Series(curves["input"]).mean())
    parts = [f"{k} {float(pd.Series(v).mean()) / base:.2f}x" for k, v in curves.items() if k != "input"]
    return "- mean warping error along the method's flow, as a multiple of the input's own: " + ", ".join(parts) + "."


def training(log: pd.DataFrame) -> str:
    """Notebook 03's closing statement: the training reward against the per-frame stylization's."""
    ok = log[~log["skipped"].astype(bool)]
    first, last = ok[ok.epoch == ok.epoch.min()], ok[ok.epoch == ok.epoch.max()]
    return (f"- {len(log)} updates ({int(log['skipped'].sum())} skipped); the mean training reward went from "
            f"{first.reward.mean():.3f} (first epoch) to {last.reward.mean():.3f} (last epoch) against "
            f"{ok.base_reward.mean():.3f} for the per-frame stylization on the same windows.")


def table1(t1: pd.DataFrame) -> str:
    """Notebook 05's closing statement: the policy's reward terms against the per-frame stylization's (test)."""
    t = t1.set_index(["method", "split"])
    if ("policy", "test") not in t.index:
        return "- no test clips."
    pol, ref = t.loc[("policy", "test")], t.loc[("baseline", "test")]
    ch = {k: 100 * (pol[k] / ref[k] - 1) for k in ("temporal", "warp_error", "style", "content")}
    return (f"- on the {int(pol.n_clips)} test clips (seed 0), against the per-frame stylization: temporal loss "
            f"{ch['temporal']:+.1f} %, warping error (the method's flow) {ch['warp_error']:+.1f} %, Gram style "
            f"{ch['style']:+.1f} %, content {ch['content']:+.1f} % (the reward's own terms; notebook 04 has the "
            f"independent judge, with intervals).")


def _cell(r, m: str) -> str:
    return f"{r[m + '_delta']:+.1f} % [{r[m + '_lo']:+.1f}, {r[m + '_hi']:+.1f}]"


LEARNED = ("policy", "shac", "distill", "pixels", "rloo", "obs_pair", "reinforce_paper", "refined")
TRAINING_FREE = ("latent_blend", "pixel_blend", "bonneel")


def findings(summary: pd.DataFrame, per_clip: pd.DataFrame, measure: str = "warp_indep",
             fidelity: str = "fidelity_ssim") -> str:
    """What the comparison shows, per style group: each learned row against N(I_t), the main learner
    against its own untrained start and against the best training-free setting at equal or better
    fidelity, as paired differences in points with 95 % intervals over clips and seeds."""
    out = []
    for group in ("seen", "unseen"):
        d = summary[summary.style_group == group]
        pol, init = d[d.method == "policy"], d[d.method == "init"]
        if pol.empty:
            continue
        p = pol.iloc[0]
        free = d[d.method.isin(TRAINING_FREE) & (d[f"{fidelity}_delta"] >= p[f"{fidelity}_delta"])]
        best = free.sort_values(f"{measure}_delta").iloc[0] if len(free) else None
        line = (f"- **{group} style{'s' if group == 'unseen' else ''}** ({int(p.n_clips)} clips, {int(p.n_seeds)} "
                f"seeds): the trained policy changes the warping error (independent flow) by {_cell(p, measure)} "
                f"against N(I_t), at {fidelity} {_cell(p, fidelity)} and sharpness {_cell(p, 'sharpness')}")
        seen = group == "seen"
        if len(init):
            diff = paired_difference(per_clip, ("policy", p.setting or ""), ("init", init.iloc[0].setting or ""),
                                     measure, seen)
            line += f"; against its untrained start: {_points(diff)}"
        if best is not None:
            diff = paired_difference(per_clip, ("policy", p.setting or ""), (best.method, best.setting or ""),
                                     measure, seen)
            line += (f"; against the best training-free method at equal or better {fidelity}, {best.method} "
                     f"({best.setting}, {_cell(best, measure)}): {_points(diff)}.")
        else:
            line += f"; no training-free setting reaches its {fidelity}."
        others = d[d.method.isin(LEARNED) & (d.method != "policy")]
        if len(others):
            line += " Other learners: " + "; ".join(
                f"{r.method} {_cell(r, measure)} at {fidelity} {_cell(r, fidelity)}, sharpness {_cell(r, 'sharpness')}"
                for _, r in others.iterrows()) + "."
        out.append(line)
    return "\n".join(out) or "- no trained policy was scored."


def _points(diff: tuple) -> str:
    return f"{diff[0]:+.1f} points [{diff[1]:+.1f}, {diff[2]:+.1f}]"


def write_method_tex(cfg):
    """``tables/method.tex``: the method paragraph of the paper, for the build it was made from."""
    text = method(cfg).replace("**", "").replace("`", "").replace("_", r"\_").replace("%", r"\%")
    items = "\n".join(r"\item " + line[2:] for line in text.splitlines())
    return tables.write_table("method", "\\begin{itemize}\n" + items + "\n\\end{itemize}\n", cfg.profile)


__all__ = ["method", "stylizer", "table1", "findings", "data", "flicker", "training", "write_method_tex", "STYLIZERS", "LATENTS", "LEARNERS", "FLOWS", "NETS"]
