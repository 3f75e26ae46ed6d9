"""Configs as dataclasses with named presets: ``smoke`` (the default), ``paper`` and ablations.

Presets are *data*: the smoke and paper profiles run the same code, and differ only in the
values below (model ids vs ``"tiny"``, exact vs RAFT flows, image sizes, budgets).

    >>> from vstlib.config import get_config
    >>> cfg = get_config("smoke", train={"epochs": 1})
    >>> cfg.train.lr
    0.0001

Overrides go through maintained libraries: OmegaConf parses ``--set a.b=c`` dotlists and merges
nested changes; dacite turns the merged dict back into these frozen dataclasses, checking types
and casting lists to tuples (OmegaConf's own structured configs give lists, not tuples, back).
Entry points (cli, notebooks) call ``load(profile, sets)`` once; modules get their own section.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Optional, Sequence

from vstlib.cache import key
from vstlib.runtime import resolve_device

TINY = "tiny"  # model id meaning: random tiny modules built from configs, no download


@dataclass(frozen=True)
class DataConfig:
    source: str = "synthetic"          # "synthetic" (package-shipped photos) or a folder of videos
    n_frames: int = 8                  # first N consecutive frames of each clip
    size: int = 64                     # frames' short side (and, with resize="fit", their side)
    resize: str = "fit"                # "fit": short side to size + centre crop (size x size frames and
                                       # style image); "short_side": short side to size, aspect kept,
                                       # sides rounded to multiples of 8, the style image never cropped
    n_clips: int = 4                   # clips kept after motion filtering (0 = all)
    test_source: str = ""              # a folder of held-out clips, all in the test split ("" = none)
    train_fraction: float = 0.75       # deterministic train/test split
    split_seed: int = 0
    motion_threshold: float = 0.5      # mean flow magnitude (px) under which a clip is dropped
    style: str = "procedural"          # "procedural" (made offline) or a path to any image
    synthetic_images: tuple = ("astronaut", "coffee", "chelsea", "rocket")


@dataclass(frozen=True)
class FlowConfig:
    source: str = "exact"              # "exact" (synthetic clips' known flow), "raft" or "dis" (OpenCV, CPU)
    raft: str = "raft_small"           # torchvision model: "raft_small" or "raft_large"
    raft_weights: Optional[str] = None  # None = random weights (tests only); "DEFAULT" = pretrained
    raft_iters: int = 12
    occlusion: str = "sundaram"        # "sundaram" (Sundaram et al.), "ruder" (+ motion boundaries) or "simple" (1 px)
    batch_size: int = 8
    dis_preset: str = "medium"         # OpenCV DIS preset: "ultrafast", "fast" or "medium"


@dataclass(frozen=True)
class BackboneConfig:
    name: str = "diffusest"            # implementation (vstlib.backbones.BACKBONES)
    model_id: str = TINY               # "Salesforce/blipdiffusion" in the paper profile
    resolution: int = 64               # short side the frames are stylized at, aspect kept (latent = 1/8)
    num_inference_steps: int = 10      # DDIM sampling steps
    num_inversion_steps: int = 10      # DDIM inversion steps (on the sampling timesteps)
    guidance_scale: float = 7.5
    alpha: float = 0.1                 # share of style-injection steps (t < 1000 * alpha)
    original_schedule: bool = False    # reproduce the authors' content-step bug (see README)
    prompt: str = ""                   # target prompt; the style embedding is spliced in
    style_subject: str = ""            # BLIP-Diffusion subject word for the style image (DiffuseST: "")
    negative_prompt: str = ""          # text of the unconditional and reference branches (paper: DiffuseST's)
    injection_layers: str = "diffusest"  # attn1 layers that inject: "diffusest" (DiffuseST's 8) | "all_up"
    sampler: str = "ddim"              # "ddim" | "pndm" (BLIP-Diffusion/DiffuseST's scheduler)
    injection: str = "z0"              # where the policy's residual goes: "z0" or "xT"
    dtype: str = "float32"             # "float16" / "bfloat16" on a GPU
    batch_size: int = 8                # frames per UNet batch (chunked to fit memory)
    seed: int = 0
    style_net: str = "wave"            # faststyle only: which fast style network (wave, udnie, scream, wreck)
    latent: str = "native"             # microast: the policy's latent: "native" (its modulated feature before
                                       # the upsampling decoder), "taef2" (E(N(I_t)), rendered by TAEF2's D) or
                                       # "pixels" (N(I_t) itself: the policy acts on the stylized frame)


@dataclass(frozen=True)
class PolicyConfig:
    latent_channels: int = 4
    hidden: int = 16
    gate_init: float = 5.0             # mu = (1 - sigmoid(gate)) * raw_mu: tiny early actions
    sigma_init: float = 0.1
    observation: str = "pair"          # "pair" (L_{t-1}, L_t: the paper) or "flow" (+ the previous OUTPUT
                                       # latent warped along the input's flow and its visibility mask)
    head: str = "residual"             # "residual" (the paper), "blend" (gated blend toward the warped previous
                                       # output + residual; needs "flow"), "constant" (control: one offset)
    blend_init: float = 0.0            # blend head: the untrained policy is the latent blend b = sigmoid(this)
    first_kernel: int = 3              # the trunk's first conv (3: the paper's; 1: a per-cell mix of the wide
                                       # observation, its context from the 3x3 convs after it: 2.5x cheaper)


@dataclass(frozen=True)
class RewardConfig:
    terms: tuple = ("style", "content", "temporal")  # rewards.REWARDS names, summed in this order
    w_style: float = 10.0
    w_content: float = 1.0
    w_temp: float = 10.0
    w_fidelity: float = 0.0            # the "fidelity" term (distance to N(I_t)); with a constraint on it, the
                                       # multiplier's starting value
    weights: dict = field(default_factory=dict)  # term name -> weight; overrides w_<name> (new terms)
    style_net: str = "vgg19"           # models.STYLE_NETS: the Gram-matrix feature network
    content_net: str = "lpips_alex"    # models.CONTENT_NETS: the perceptual distance
    style_layers: tuple = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    style_variant: str = "vgg5"        # "vgg5" (paper text: style_layers, Gram/(CHW)) | "relu1_1" (authors)
    vgg_weights: Optional[str] = None  # None = random VGG19 (smoke); "IMAGENET1K_V1" (paper)
    lpips_pretrained: bool = False     # AlexNet trunk: random (smoke) or ImageNet (paper)
    normalize: str = "none"            # "none" (the paper's raw sum) or "baseline": each term divided by
                                       # the per-frame baseline's value of that term on the same frame
    hinge: tuple = ()                  # terms floored at the baseline's (normalize="baseline"): ("style",
                                       # "content") = equal style and content as a constraint, not a goal
    loss_size: int = 0                 # 0: terms on the frames as rendered; N: frames, flows and masks
                                       # resized to short side N, the Gram target R to N x N (the authors' 256)
    constraints: dict = field(default_factory=dict)  # term -> bound: E[term] <= bound (normalised terms: a
                                       # multiple of N(I_t)'s, absolute ones in their units); the learner
                                       # maximises the other terms and dual ascent finds these terms' weights
    bound_by: str = "value"            # "value": a bound is a level of the term; "start": a multiple of the
                                       # untrained policy's term on the same frames (1.0 = no worse than
                                       # where it started), so a training window's bound is its own


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 4
    lr: float = 1e-4
    accumulation: int = 4              # transitions per Adam step
    grad_clip: float = 1.0             # max global grad norm (not in the paper); 0 disables clipping
    learner: str = "reinforce"         # vstlib.rl.learners.LEARNERS: "reinforce" (paper), "rloo", "pathwise",
                                       # "shac" (actor-critic through the chain), "distill" (DAgger onto refinement)
    samples: int = 4                   # rloo: K samples (rollouts) per transition
    normalize_advantage: bool = False  # rloo: divide leave-one-out advantages by their std over K
    bptt: bool = True                  # pathwise: backpropagate through the chain of outputs within a chunk
                                       # (each observation is the previous output this chain produced)
    max_ratio: float = 10.0            # truncated importance ratio pi_new/pi_old for chunks sampled under
                                       # older weights (0 = no correction)
    dual_lr: float = 0.5               # reward.constraints: lambda += dual_lr * (term - bound) / bound per update
    gamma: float = 1.0                 # shac: discount of the return (1: the episode's undiscounted sum)
    td_lambda: float = 0.95            # shac: lambda of the critic's TD(lambda) targets
    critic_lr: float = 1e-3            # shac: the critic's learning rate (its own Adam parameter group)
    critic_hidden: int = 32            # shac: width of the critic's conv net
    refine_steps: int = 4              # distill: Adam steps that refine the policy's own actions (the labels)
    refine_lr: float = 0.01            # distill: their learning rate
    crop: int = 0                      # train on a random window of crop x crop latent cells per clip visit
                                       # (0 = whole frames); decoding cost is linear in pixels
    seeds: tuple = (0,)                # seeds of the main run reported with their spread (run "main" is the
                                       # first; the others are runs "seeds/<seed>")
    checkpoint_every: int = 4          # updates between atomic checkpoints
    seed: int = 0
    device: str = "auto"               # "auto" = cuda if available, else cpu (resolved by get_config)
    ablation_grids: tuple = ("lr_epochs", "weights", "accumulation", "injection")  # config.ablations
                                       # grids notebook 04 trains (a preset value: each cell is a run)


@dataclass(frozen=True)
class EvalConfig:
    """How a stylized clip is scored."""
    embedder: str = "clip"             # nets.perceptual.EMBEDDERS: the Table 2 image embedder
    clip_model: str = TINY             # open_clip architecture; "ViT-B-32" in the paper profile
    clip_pretrained: Optional[str] = None  # "openai" in the paper profile
    warp_error: str = "lai"            # Table 1 warp_error: "lai" (Lai et al. 2018, RGB summed) | "rgb_mean"
    perceptual: str = "darknet"        # nets.perceptual.CONTENT_NETS: the judge's fidelity distance to N(I_t)
                                       # (one the reward does not use)
    long_term: int = 5                 # k of the long-term warping error (frame t against frame t-k)
    perceptual_size: int = 0           # short side the perceptual distance is computed at (0: the frames')


@dataclass(frozen=True)
class CompareConfig:
    """What `vst compare` runs beside the main learner (evaluation.compare.METHODS says what each is)."""
    methods: tuple = ()                # rows beside the policy; () = every method of the table
    control_seeds: int = 0             # seeds of every learned row beside the main learner: the first N
                                       # of train.seeds (0 = all of them, like the main learner)
    rloo_samples: int = 4              # K of the rloo row
    frontier: tuple = ()               # temporal weights w: the main learner trained at style/content/w,
                                       # rows weights_<w> (the main run is the point at its own weight)
    blends: tuple = (0.1, 0.25, 0.5, 0.75, 0.9)  # the latent and pixel blends' frontiers over b
    bonneel: tuple = (0.1,)            # Bonneel et al. 2015: the frontier over its temporal weight lambda
    direct_steps: int = 10             # Adam steps of the per-clip direct optimisation
    direct_lr: float = 0.01
    refine_steps: int = 0              # the "refined" row: the main learner + this many Adam steps at inference
    unseen_styles: tuple = ()          # style images the policy never saw (data.style is the seen one)
    unseen_clips: int = 0              # test clips each unseen style is scored on (the first N; 0 = all)
    executor: str = "sequential"       # where independent runs go (executors.EXECUTORS): "sequential" in this
                                       # process, "ray": Ray tasks; training runs, evaluation units, `vst stylize`'s videos


@dataclass(frozen=True)
class Config:
    profile: str = "smoke"
    data: DataConfig = field(default_factory=DataConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    def digest(self, *sections: str, ignore: tuple = ()) -> str:
        """Short stable hash of some sections (cache keys: same inputs -> same key).

        ``ignore``: ``"section.field"`` names that do not change what is cached.
        """
        d = self.to_dict()                       # a fresh deep copy: safe to prune
        for name in ignore:
            sec, _, fld = name.partition(".")
            d[sec].pop(fld, None)
        part = {s: d[s] for s in sections} if sections else d
        return key(part)

    def override(self, **sections: Any) -> "Config":
        """``cfg.override(train={"lr": 5e-4}, profile="x")``: a new config, nested fields replaced."""
        from omegaconf import OmegaConf

        merged = OmegaConf.merge(OmegaConf.create(self.to_dict()), OmegaConf.create(sections))
        return from_dict(OmegaConf.to_container(merged, resolve=False))


# --------------------------------------------------------------------------- presets
# DiffuseST's (= BLIP-Diffusion's example) negative prompt: unconditional and reference branches
DIFFUSEST_NEGATIVE_PROMPT = ("over-exposure, under-exposure, saturated, duplicate, out of frame, lowres, cropped, "
                             "worst quality, low quality, jpeg artifacts, morbid, mutilated, out of frame, ugly, "
                             "bad anatomy, bad proportions, deformed, blurry, duplicate")
SMOKE = Config()  # CPU, offline, tiny random models, synthetic clips with exact flow

PAPER = Config(
    profile="paper",
    # DiffuseST at 512, the size SD-1.5 was trained at, on frames whose short side is 512 (aspect
    # kept, never cropped; the style image whole); the losses at 256 (docs/deviations.md A8, A9, B4)
    data=DataConfig(source="videos", n_frames=20, size=512, resize="short_side", n_clips=7,
                    style="starry_night.jpg", motion_threshold=1.0),
    flow=FlowConfig(source="raft", raft="raft_large", raft_weights="DEFAULT", raft_iters=12),
    backbone=BackboneConfig(model_id="Salesforce/blipdiffusion", resolution=512,
                            num_inference_steps=50, num_inversion_steps=50, dtype="float16",
                            batch_size=8, negative_prompt=DIFFUSEST_NEGATIVE_PROMPT,
                            injection="xT",         # the authors perturb x_T (docs/deviations.md B1)
                            sampler="pndm"),        # DiffuseST samples with BLIP-Diffusion's PNDM (A4)
    reward=RewardConfig(vgg_weights="IMAGENET1K_V1", lpips_pretrained=True, loss_size=256),
    train=TrainConfig(epochs=10, checkpoint_every=10),
    eval=EvalConfig(clip_model="ViT-B-32", clip_pretrained="openai"),
)

# CPU, offline, REAL small models vendored in vstlib/assets: MicroAST (any style image; the paper's
# The Starry Night) whose own latent the policy acts on, DIS flow, the VGG-19 Gram and perceptual losses
# (relu1_1..relu3_1, computed at half the frame size like the paper's 256 of 512), 5 train clips and
# 2 + 16 held-out test clips, judged with Farneback flow and Darknet-tiny (networks the reward never uses).
UNSEEN_STYLES = ("assets:styles-eval/delaunay_portrait_of_metzinger.jpg", "assets:styles-eval/gauguin_te_fare.jpg",
                 "assets:styles-eval/homer_the_blue_boat.jpg")   # the first three held-out paintings by name
CPU = Config(
    profile="cpu",
    data=DataConfig(source="assets:clips", test_source="assets:clips-eval", n_frames=12, size=256,
                    resize="short_side", n_clips=0, train_fraction=0.7, split_seed=0, motion_threshold=0.3,
                    style="assets:styles/starry_night.jpg"),
    # DIS's "fast" preset: 4x cheaper than "medium" at 256 px (2.6 vs 9.5-13 ms per frame, both directions),
    # which `vst stylize` pays on every frame; Sintel EPE 0.54 / 2.10 / 18.7 px (easy / medium / hard)
    # against medium's 0.34 / 1.64 / 23.2; the judge's flow is Farneback either way
    flow=FlowConfig(source="dis", dis_preset="fast"),
    backbone=BackboneConfig(name="microast", resolution=256, batch_size=4),
    # the learner: pathwise reward backpropagation through its own chain with the flow-aware
    # observation and the gated-blend head (it starts AT the latent blend b = 0.5); its free residual
    # behind the paper's gate (5); baseline-normalised terms, so weights trade percentages; fidelity to
    # N(I_t) a constraint: no worse than the untrained policy's on the same window (dual ascent finds
    # its weight; a fixed level, 0.3, was violated on most windows and pulled the policy behind its start)
    # the first conv 1x1: the policy step costs a third less per frame, and learns as much (measured)
    policy=PolicyConfig(latent_channels=64, hidden=32, gate_init=5.0, sigma_init=0.01, observation="flow",
                        head="blend", first_kernel=1),
    reward=RewardConfig(terms=("style", "content", "temporal", "fidelity"), style_net="vgg_r31",
                        content_net="vgg_r31", style_layers=("relu1_1", "relu2_1", "relu3_1"),
                        normalize="baseline", w_temp=30.0, loss_size=128, constraints={"fidelity": 1.0},
                        bound_by="start"),
    train=TrainConfig(epochs=6, checkpoint_every=10, learner="pathwise", lr=1e-3, crop=32, seeds=(0, 1, 2),
                      dual_lr=1.0,
                      # a grid cell is a run: the learners are rows of the comparison; cpu-full runs the grids
                      ablation_grids=()),
    eval=EvalConfig(embedder="darknet", perceptual="darknet", perceptual_size=128),
    # within the 15-min budget: every other learner (the paper's REINFORCE, SHAC, distillation, the policy
    # on pixels) on one seed, 5 points per blend frontier, 3 unseen styles on 6 clips; no controls, RLOO,
    # paper observation, weights frontier, refinement row or direct optimisation (cpu-full has them)
    compare=CompareConfig(control_seeds=1, unseen_styles=UNSEEN_STYLES, unseen_clips=6,
                          blends=(0.1, 0.25, 0.5, 0.75, 0.9),
                          methods=("reinforce_paper", "shac", "distill", "pixels", "latent_blend", "pixel_blend",
                                   "bonneel")),
)

# the cpu profile with every row of the comparison: all learned rows on 5 seeds (the paper's REINFORCE,
# RLOO, SHAC, distillation, the policy on pixels, the paper's observation, the constant control), the
# frontier over the temporal weight, the policy + 4 refinement steps, direct optimisation, Bonneel's frontier, every held-out clip in every style, 20 frames, both grids of
# notebook 04; not the default: `make reproduce PROFILE=cpu-full` (its own data/, results/ and caches).
CPU_FULL = replace(
    CPU, profile="cpu-full",
    data=replace(CPU.data, n_frames=20),
    train=replace(CPU.train, seeds=(0, 1, 2, 3, 4), ablation_grids=("learner", "observation")),
    compare=replace(CPU.compare, control_seeds=0, frontier=(10.0, 20.0, 50.0), direct_steps=10, methods=(),
                    blends=(0.1, 0.25, 0.5, 0.75, 0.9), refine_steps=4,
                    bonneel=(0.03, 0.1, 0.3, 1.0), unseen_clips=0),
)

# the paper text where it decides against the authors' code: "S_t = D(L_t + delta)", the adjusted
# latent is decoded (z0), not re-denoised from x_T
PAPER_TEXT = replace(PAPER, profile="paper-text", backbone=replace(PAPER.backbone, injection="z0"))

# settings that say where the work runs, never what it computes: overriding one is not a reduced run
RUNTIME_SETTINGS = ("compare.executor",)


def result_overrides(sets: Sequence[str]) -> list[str]:
    """The ``--set`` overrides that can change a number (``RUNTIME_SETTINGS`` left out)."""
    return [s for s in sets if s.partition("=")[0].strip() not in RUNTIME_SETTINGS]


PRESETS: dict[str, Config] = {"smoke": SMOKE, "paper": PAPER, "paper-text": PAPER_TEXT, "cpu": CPU,
                              "cpu-full": CPU_FULL}
DEFAULT_PROFILE = "cpu"  # `make reproduce`, every `vst` step and the notebooks' parameters cells


def get_config(name: str = "smoke", **overrides: Any) -> Config:
    """A named preset (``smoke``, ``paper``, ...) with optional nested overrides, ``train.device``
    resolved ("auto" -> "cuda" if available, else "cpu"): the device is decided once, here."""
    if name not in PRESETS:
        raise KeyError(f"unknown profile {name!r}; choose one of {sorted(PRESETS)}")
    cfg = PRESETS[name].override(**overrides) if overrides else PRESETS[name]
    return replace(cfg, train=replace(cfg.train, device=str(resolve_device(cfg.train.device))))


# --------------------------------------------------------------------------- ablations
ABLATION_EPOCH_FRACTIONS = (0.2, 0.5, 1.0)  # of the main run's epochs: the paper's 2, 5, 10 of 10

def ablations(base: Config) -> dict[str, dict[str, Config]]:
    """The paper's ablation grids, as named configs derived from ``base``.

    Epoch budgets are fractions of ``base.train.epochs`` (the paper's 2, 5, 10 of 10), so an
    override reaches the grid: smoke's 4 gives {1, 2, 4}; ``--set train.epochs=1`` gives {1}.
    """
    epochs = sorted({max(1, round(base.train.epochs * f)) for f in ABLATION_EPOCH_FRACTIONS})
    grids = {
        "lr_epochs": {f"lr{lr:g}_ep{e}": base.override(train={"lr": lr, "epochs": e})
                      for lr in (1e-4, 5e-4) for e in epochs},
        "weights": {
            "paper_10_1_10": base.override(reward={"w_style": 10.0, "w_content": 1.0, "w_temp": 10.0}),
            "equal_1_1_1": base.override(reward={"w_style": 1.0, "w_content": 1.0, "w_temp": 1.0}),
        },
        "accumulation": {f"accum{a}": base.override(train={"accumulation": a}) for a in (1, 4)},
        "injection": {f"inject_{p}": base.override(backbone={"injection": p}) for p in ("xT", "z0")},
        # beyond the paper (issue 11): the learner, the observation and the reward normalisation
        # the paper's learner as published (REINFORCE, lr 1e-4, gate 5, paper observation, raw reward)
        # against the pathwise learner on the profile's other settings
        "learner": {"reinforce_paper": paper_reward(base.override(train={"learner": "reinforce", "lr": 1e-4},
                                                                  policy={"gate_init": 5.0, "observation": "pair",
                                                                          "head": "residual", "sigma_init": 0.1})),
                    "pathwise": base.override(train={"learner": "pathwise"})},
        # the paper's observation needs the paper's head (the blend head blends toward the warped
        # output), with its gate open: the residual IS that head's action, and at gate 5 it barely moves
        "observation": {"obs_pair": base.override(policy={"observation": "pair", "head": "residual",
                                                          "gate_init": 0.0}),
                        "obs_flow": base.override(policy={"observation": "flow"})},
        "normalize": {f"norm_{n}": base.override(reward={"normalize": n}) for n in ("none", "baseline")},
    }
    unknown = set(base.train.ablation_grids) - set(grids)
    if unknown:
        raise KeyError(f"train.ablation_grids names unknown grids {sorted(unknown)}; choose from {sorted(grids)}")
    return {name: grids[name] for name in base.train.ablation_grids}


def paper_reward(cfg: Config) -> Config:
    """``cfg`` with the paper's reward: style, content and temporal at 10/1/10, raw sums, no constraints
    (a dict field cannot be emptied by an OmegaConf merge: replaced here)."""
    return replace(cfg, reward=replace(cfg.reward, terms=("style", "content", "temporal"), normalize="none",
                                       w_style=10.0, w_content=1.0, w_temp=10.0, weights={}, constraints={}, hinge=()))


def _float(v):
    # an int where a float is declared (``--set train.lr=1``) is that float; bools stay bools
    return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


def section_from_dict(cls, d: dict):
    """A config dataclass (``Config`` or one section) from a plain dict, types checked.

    Unknown fields raise ``KeyError`` ("no field"); wrong types ``TypeError``.
    """
    import dacite

    try:
        return dacite.from_dict(cls, d, config=dacite.Config(cast=[tuple], strict=True,
                                                             type_hooks={float: _float}))
    except dacite.UnexpectedDataError as err:
        raise KeyError(f"{cls.__name__} has no field {', '.join(sorted(err.keys))}") from None
    except dacite.WrongTypeError as err:
        raise TypeError(f"{err.field_path}: expected {getattr(err.field_type, '__name__', err.field_type)}, "
                        f"got {err.value!r}") from None


def from_dict(d: dict) -> Config:
    """Inverse of ``Config.to_dict`` (for checkpoints and logs)."""
    return section_from_dict(Config, d)


def parse_overrides(sets: Sequence[str]) -> dict:
    """``["train.lr=5e-4", "data.n_clips=2"]`` -> ``{"train": {"lr": 5e-4}, "data": {"n_clips": 2}}``
    (OmegaConf dotlist: YAML values, so numbers, true/false, null and [lists] parse)."""
    from omegaconf import OmegaConf

    bad = [s for s in sets or () if "=" not in s or "." not in s.partition("=")[0]]
    if bad:
        raise ValueError(f"bad override {bad[0]!r}; write section.field=value, e.g. train.lr=5e-4")
    return OmegaConf.to_container(OmegaConf.from_dotlist(list(sets or ())), resolve=False)


def load(profile: str = "smoke", sets: Sequence[str] = (), **overrides: Any) -> Config:
    """The entry points' one call (cli, notebooks): a preset, ``--set`` dotlist overrides and keyword
    sections (``get_config`` resolves the device)."""
    cfg = get_config(profile)
    changes = parse_overrides(sets)
    if changes:
        cfg = cfg.override(**changes)
    if overrides:
        cfg = cfg.override(**overrides)
    return replace(cfg, train=replace(cfg.train, device=str(resolve_device(cfg.train.device))))


__all__ = ["Config", "DataConfig", "FlowConfig", "BackboneConfig", "PolicyConfig", "RewardConfig",
           "TrainConfig", "EvalConfig", "CompareConfig", "PRESETS", "SMOKE", "PAPER", "PAPER_TEXT", "CPU", "CPU_FULL", "DEFAULT_PROFILE", "TINY", "RUNTIME_SETTINGS", "result_overrides", "get_config",
           "ablations", "from_dict", "section_from_dict", "parse_overrides", "load"]
