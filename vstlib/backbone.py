"""DiffuseST per-frame baseline on diffusers' BLIP-Diffusion components, batched and cached.

DiffuseST (training-free style transfer) stylizes each frame of a clip:

1. encode the frame with the VAE (posterior mean x 0.18215);
2. DDIM-invert it with the empty prompt, keeping the latent at every timestep sampling visits;
3. embed the style image with BLIP-Diffusion's Q-Former: its 16 query embeddings are spliced into
   the prompt ``"a <style_subject> <prompt>"`` (repeated 20x) at position 2 of the CLIP text encoder;
   the style image is DDIM-inverted too;
4. denoise from the inverted x_T with a batch ``[reference, unconditional, conditional]``
   (classifier-free guidance, scale 7.5). On *content* steps the reference branch is the frame's
   inverted latent at that timestep and its self-attention query+key (``attn1`` of up_blocks 1-3)
   and the ``conv2`` features of the up_blocks 1-2 resnets replace the targets'. On *style* steps the
   reference is the style image's inverted latent and its self-attention key+value replace the
   targets'. The style reference is identical for every frame, so it runs once per step (batch
   ``2T+1``, not ``3T``);
5. decode with the VAE to images in [0, 1].

Content/style schedule. ``alpha`` is the share of style steps: by default (``original_schedule=False``)
content injection runs on timesteps ``t >= 1000 * alpha`` and style injection on ``t < 1000 * alpha``.
The authors' code builds its content-step set on the 1000-step training schedule while sampling on
50 steps, so with their default ``alpha = 0.1`` *every* sampling step is a content step and the style
branch never runs; ``original_schedule=True`` reproduces that (all steps content, zero style steps).

Inversion runs on the sampling timesteps (``num_inversion_steps`` is merged into the sampling grid, so
every timestep sampling visits has its inverted latent), not on 1000 steps.

Two profiles, one code path: ``model_id == "tiny"`` builds randomly initialised components with SD1.5's
block structure (tiny channels), a Q-Former and a CLIP/BERT tokenizer written at run time (no
download); ``"Salesforce/blipdiffusion"`` loads the real pipeline (offline without cached weights:
one :class:`~vstlib.utils.MissingWeightsError`).

Compatibility note: under transformers 5, diffusers' deprecated ``Blip2QFormerModel.forward`` and
``ContextCLIPTextModel`` call helpers transformers removed (``invert_attention_mask``, a separate
``causal_attention_mask``); :func:`query_embeddings` and :func:`encode_text` drive their submodules
directly (same weights, same maths, explicit causal mask).

    >>> from vstlib.config import get_config
    >>> sty = Stylizer.from_config(get_config("smoke"))        # doctest: +SKIP
    >>> out = sty(frames, style)          # frames (T,3,H,W), style (1,3,H,W) in [0,1]  # doctest: +SKIP
    >>> out.images.shape                                         # doctest: +SKIP
    torch.Size([T, 3, 64, 64])
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from . import paths
from .config import TINY, Config
from .utils import (InputError, MissingWeightsError, atomic_save_tensors, atomic_write_text,
                    load_tensors, progress, resolve_device, torch_dtype, weights_guard)

# --------------------------------------------------------------------------- SD1.5 configs
# Written out so that the tiny twin and the FLOP benchmark need no download.
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True,
    freq_shift=0, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2, downsample_padding=1, mid_block_scale_factor=1, act_fn="silu",
    norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=768, attention_head_dim=8)
SD15_VAE = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
    layers_per_block=2, act_fn="silu", latent_channels=4, norm_num_groups=32, sample_size=512,
    scaling_factor=0.18215)
SD_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                    beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                    steps_offset=1)
# the tiny twin: same block types (up_blocks 1-3 have attentions, up_blocks 1-2 resnets), tiny widths
TINY_UNET = {**SD15_UNET, "block_out_channels": (16, 16, 32, 32), "norm_num_groups": 8,
             "layers_per_block": 1, "cross_attention_dim": 32, "attention_head_dim": 2}
TINY_VAE = {**SD15_VAE, "block_out_channels": (8, 8, 16, 16), "norm_num_groups": 8, "layers_per_block": 1}
TINY_TEXT_DIM = 32
# Two init gains make the random twin behave like SD where the pipeline relies on it:
# - SD's 0.18215 gives unit-variance latents; a random tiny VAE's posterior mean is ~20x smaller,
#   so its quant_conv is scaled up (and post_quant_conv down) to give SD-like latents;
# - a random full-gain UNet is no denoiser: its eps changes ~1.4x as fast as its input, so the DDIM
#   ODE it defines is ill-conditioned and inversion drifts far from the frame. A smaller output
#   layer keeps the ODE smooth like a trained model's (x_T round trips to ~2% on 50 steps) while
#   guidance and injection still move z0 by ~80% of its norm.
TINY_LATENT_GAIN = 20.0
TINY_EPS_GAIN = 0.1
NUM_QUERY_TOKENS = 16                       # BLIP-Diffusion's Q-Former queries
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PAPER_MODEL = "Salesforce/blipdiffusion"
QFORMER_TOKENIZER = "bert-base-uncased"    # loaded by Blip2QFormerModel.__init__


# --------------------------------------------------------------------------- data types
@dataclass
class Inversion:
    """DDIM inversion of T images: VAE latent, latent at each sampling timestep, and x_T."""
    z: torch.Tensor                       # (T,4,h,w) VAE latent (x 0.18215)
    trajectory: dict                      # {timestep: (T,4,h,w)} for every sampling timestep
    xT: torch.Tensor                      # (T,4,h,w) = trajectory[max timestep]

    def select(self, idx) -> "Inversion":
        idx = torch.as_tensor(idx, dtype=torch.long, device=self.z.device)
        return Inversion(self.z[idx], {t: x[idx] for t, x in self.trajectory.items()}, self.xT[idx])

    def tensors(self) -> dict:
        ts = sorted(self.trajectory)
        return {"z": self.z, "trajectory": torch.stack([self.trajectory[t] for t in ts]),
                "timesteps": torch.tensor(ts, dtype=torch.long)}

    @classmethod
    def from_tensors(cls, d: dict) -> "Inversion":
        traj = {int(t): x for t, x in zip(d["timesteps"].tolist(), d["trajectory"])}
        return cls(d["z"], traj, traj[max(traj)])


@dataclass
class StyleContext:
    """Prompt embeddings with the style image spliced in, and the style image's inversion."""
    cond: torch.Tensor                    # (1,L,D) prompt embedding with the 16 style queries
    uncond: torch.Tensor                  # (1,L,D) empty prompt (classifier-free guidance)
    inversion: Inversion                  # of the style image (T=1): style-step references

    def tensors(self) -> dict:
        return {"cond": self.cond, "uncond": self.uncond,
                **{f"inv_{k}": v for k, v in self.inversion.tensors().items()}}

    @classmethod
    def from_tensors(cls, d: dict) -> "StyleContext":
        inv = Inversion.from_tensors({k[4:]: v for k, v in d.items() if k.startswith("inv_")})
        return cls(d["cond"], d["uncond"], inv)


@dataclass
class BaselineOutput:
    images: torch.Tensor                  # (T,3,H,W) in [0,1]
    xT: torch.Tensor                      # (T,4,h,w) inverted noise latent
    z0: torch.Tensor                      # (T,4,h,w) final denoised latent (before decoding)
    inversion: Inversion
    style_ctx: StyleContext


@dataclass
class Components:
    tokenizer: object                     # CLIPTokenizer
    text_encoder: torch.nn.Module         # ContextCLIPTextModel
    qformer: torch.nn.Module              # Blip2QFormerModel
    unet: torch.nn.Module                 # UNet2DConditionModel
    vae: torch.nn.Module                  # AutoencoderKL
    scheduler: object                     # DDIMScheduler (SD config)
    image_mean: tuple = CLIP_MEAN
    image_std: tuple = CLIP_STD
    ctx_begin_pos: int = 2


# --------------------------------------------------------------------------- tiny twin
def _write_tiny_tokenizers(folder: Path) -> tuple[Path, Path]:
    """A byte-level CLIP BPE vocab (no merges beyond a few words) and a BERT word-piece vocab."""
    clip_dir, bert_dir = folder / "clip", folder / "bert"
    # GPT-2/CLIP byte -> printable unicode table: printable bytes map to themselves, others above 255
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = [chr(b) for b in keep] + [chr(256 + i) for i in range(256 - len(keep))]
    merges = ["s t", "st y", "sty l", "styl e</w>"]
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    for m in merges:
        vocab.setdefault(m.replace(" ", ""), len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    atomic_write_text(clip_dir / "vocab.json", json.dumps(vocab))
    atomic_write_text(clip_dir / "merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "style", "a", "painting", "photo"]
    atomic_write_text(bert_dir / "vocab.txt", "\n".join(words + list("abcdefghijklmnopqrstuvwxyz")) + "\n")
    return clip_dir, bert_dir


def tiny_components(seed: int = 0, workdir: Optional[Path] = None, unet=None, vae=None,
                    text_dim: int = TINY_TEXT_DIM) -> Components:
    """Randomly initialised BLIP-Diffusion components (SD1.5 block structure, tiny widths).

    ``unet``/``vae`` replace the tiny ones (the benchmark plugs in full-size SD1.5 modules; then
    ``text_dim`` must equal the UNet's ``cross_attention_dim``).
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from diffusers.pipelines.deprecated.blip_diffusion.modeling_blip2 import Blip2QFormerModel
    from diffusers.pipelines.deprecated.blip_diffusion.modeling_ctx_clip import ContextCLIPTextModel
    from transformers import CLIPTextConfig, CLIPTokenizer
    from transformers.models.blip_2.configuration_blip_2 import Blip2Config

    workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="vst-tok-"))
    clip_dir, bert_dir = _write_tiny_tokenizers(workdir)
    tokenizer = CLIPTokenizer(str(clip_dir / "vocab.json"), str(clip_dir / "merges.txt"), model_max_length=77)
    with torch.random.fork_rng(devices=[]):  # seeded build, global RNG untouched
        torch.manual_seed(seed)
        text_cfg = CLIPTextConfig(vocab_size=1000, hidden_size=text_dim, intermediate_size=2 * text_dim,
                                  num_hidden_layers=1, num_attention_heads=4, max_position_embeddings=77,
                                  projection_dim=text_dim, bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        text_encoder = ContextCLIPTextModel(text_cfg)
        q_cfg = Blip2Config(
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                               image_size=32, patch_size=8, hidden_act="quick_gelu"),
            qformer_config=dict(vocab_size=64, hidden_size=text_dim, num_hidden_layers=1, num_attention_heads=4,
                                intermediate_size=2 * text_dim, max_position_embeddings=64,
                                cross_attention_frequency=1, encoder_hidden_size=32),
            num_query_tokens=NUM_QUERY_TOKENS, tokenizer=str(bert_dir))
        qformer = Blip2QFormerModel(q_cfg)
        if unet is None:
            unet = UNet2DConditionModel(**TINY_UNET)
            with torch.no_grad():  # see TINY_EPS_GAIN
                unet.conv_out.weight.mul_(TINY_EPS_GAIN)
                unet.conv_out.bias.mul_(TINY_EPS_GAIN)
        if vae is None:
            vae = AutoencoderKL(**TINY_VAE)
            with torch.no_grad():  # see TINY_LATENT_GAIN
                vae.quant_conv.weight.mul_(TINY_LATENT_GAIN)
                vae.quant_conv.bias.mul_(TINY_LATENT_GAIN)
                vae.post_quant_conv.weight.div_(TINY_LATENT_GAIN)
    _use_sdpa(text_encoder, qformer)
    return Components(tokenizer, text_encoder, qformer, unet, vae, DDIMScheduler(**SD_SCHEDULER))


def _use_sdpa(text_encoder, qformer) -> None:
    # modules built outside transformers' loaders have no attention backend set (eager + warnings)
    for c in (text_encoder.config, qformer.config.qformer_config, qformer.config.vision_config):
        if getattr(c, "_attn_implementation", None) is None:
            c._attn_implementation = "sdpa"


# --------------------------------------------------------------------------- paper weights
def _hf_cache_dir() -> str:
    # read at call time: huggingface_hub freezes HF_HOME when first imported
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))
    return os.path.join(home, "hub")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def blipdiffusion_components(model_id: str = PAPER_MODEL, dtype=torch.float16) -> Components:
    """The real BLIP-Diffusion components; one MissingWeightsError when they are not cached offline."""
    from huggingface_hub import snapshot_download, try_to_load_from_cache

    cache = _hf_cache_dir()
    fix = (f"with network, pre-download once: `hf download {model_id} --cache-dir {cache}` and "
           f"`hf download {QFORMER_TOKENIZER} vocab.txt tokenizer_config.json config.json --cache-dir {cache}` "
           f"(or run `vst download-weights`); or use the smoke profile")
    try:  # local cache first: no network, no retries
        local = snapshot_download(model_id, cache_dir=cache, local_files_only=True)
        bert_ok = isinstance(try_to_load_from_cache(QFORMER_TOKENIZER, "vocab.txt", cache_dir=cache), str)
    except Exception:
        local, bert_ok = None, False
    if (local is None or not bert_ok) and _offline():
        raise MissingWeightsError(f"BLIP-Diffusion weights {model_id!r} (and its Q-Former tokenizer "
                                  f"{QFORMER_TOKENIZER!r}) are not cached in {cache} and HF_HUB_OFFLINE is set",
                                  fix=fix)
    from diffusers import DDIMScheduler
    from diffusers.pipelines.deprecated.blip_diffusion import BlipDiffusionPipeline

    with weights_guard(model_id, [model_id], fix=fix):
        if local is None:
            local = snapshot_download(model_id, cache_dir=cache)
        pipe = BlipDiffusionPipeline.from_pretrained(local, torch_dtype=dtype, cache_dir=cache)
    _use_sdpa(pipe.text_encoder, pipe.qformer)
    mean = tuple(pipe.config.mean) if getattr(pipe.config, "mean", None) else CLIP_MEAN
    std = tuple(pipe.config.std) if getattr(pipe.config, "std", None) else CLIP_STD
    return Components(pipe.tokenizer, pipe.text_encoder, pipe.qformer, pipe.unet, pipe.vae,
                      DDIMScheduler(**SD_SCHEDULER), mean, std, int(pipe.config.ctx_begin_pos))


# --------------------------------------------------------------------------- text + style embeddings
def encode_text(text_encoder, input_ids: torch.Tensor, ctx: Optional[torch.Tensor] = None,
                ctx_begin_pos: int = 2) -> torch.Tensor:
    """ContextCLIPTextModel forward with an explicit causal mask: (B,L) ids [+ (B,Q,D) ctx] -> (B,L+Q,D)."""
    tm = text_encoder.text_model
    pos = [ctx_begin_pos] * input_ids.shape[0]
    h = tm.embeddings(input_ids=input_ids, ctx_embeddings=ctx, ctx_begin_pos=pos)   # (B,L',D)
    n = h.shape[1]
    causal = torch.full((n, n), torch.finfo(h.dtype).min, device=h.device, dtype=h.dtype).triu(1)
    h = tm.encoder(inputs_embeds=h, attention_mask=causal[None, None].expand(h.shape[0], 1, n, n))
    h = h[0] if isinstance(h, (tuple, list)) else h.last_hidden_state
    return tm.final_layer_norm(h)


def query_embeddings(qformer, pixels: torch.Tensor, text: list[str]) -> torch.Tensor:
    """BLIP-2 Q-Former: image (B,3,S,S) normalised + subject words -> (B,16,D) query embeddings."""
    tok = qformer.tokenizer(text, return_tensors="pt", padding=True)
    ids, mask = tok.input_ids.to(pixels.device), tok.attention_mask.to(pixels.device)
    queries = qformer.query_tokens                                    # (1,Q,D)
    nq = queries.shape[1]
    h = qformer.embeddings(input_ids=ids, query_embeds=queries)      # (B,Q+L,D): queries then text
    img = qformer.visual_encoder(pixels, return_dict=True).last_hidden_state           # (B,P+1,Dv)
    keep = torch.cat([torch.ones(ids.shape[0], nq, dtype=mask.dtype, device=mask.device), mask], 1)
    add_mask = (1.0 - keep[:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min  # (B,1,1,Q+L)
    for layer in qformer.encoder.layer:
        a = layer.attention(h, attention_mask=add_mask)             # queries and text attend jointly
        q, t = a[:, :nq], a[:, nq:]
        if layer.has_cross_attention:                                 # only queries look at the image
            q = layer.crossattention(q, encoder_hidden_states=img)
        q = layer.output_query(layer.intermediate_query(q), q)
        t = layer.output(layer.intermediate(t), t)
        h = torch.cat([q, t], 1)
    return qformer.proj_layer(h[:, :nq])


def build_prompt(prompt: str, subject: str, reps: int = 20) -> str:
    """BLIP-Diffusion's prompt amplification: ``"a <subject> <prompt>"`` repeated ``reps`` times."""
    return ", ".join([f"a {subject} {prompt.strip()}"] * reps)


# --------------------------------------------------------------------------- injection
class InjectionState:
    """Shared by the attention processors and resnet hooks: what the current UNet batch holds.

    Batch layout: ``[reference (n_ref), target group 0 (n), target group 1 (n)...]``; groups are
    (uncond, cond) with guidance, (cond,) without. ``mode`` None = plain attention.
    """

    def __init__(self):
        self.mode: Optional[str] = None    # None | "content" | "style"
        self.n_ref = 0
        self.groups = 1
        self.fired = {"content": 0, "style": 0}  # processor/hook calls that injected

    def ref(self, x: torch.Tensor) -> torch.Tensor:
        """The reference rows broadcast over all target rows."""
        r = x[: self.n_ref]
        n = (x.shape[0] - self.n_ref) // self.groups
        r = r.expand(n, *r.shape[1:]) if self.n_ref == 1 else r
        return torch.cat([x[: self.n_ref]] + [r] * self.groups)


class InjectionAttnProcessor:
    """Self-attention (attn1) with DiffuseST feature injection, on ``F.scaled_dot_product_attention``.

    content: targets use the reference's query and key (its attention map over their own values);
    style: targets use the style reference's key and value.
    """

    def __init__(self, state: InjectionState):
        self.state = state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        st = self.state
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        shape4 = hidden_states.shape if hidden_states.ndim == 4 else None
        if shape4 is not None:                                       # (B,C,H,W) -> (B,HW,C)
            hidden_states = hidden_states.flatten(2).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        ctx = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q, k, v = attn.to_q(hidden_states), attn.to_k(ctx), attn.to_v(ctx)   # (B,N,C)
        if st.mode == "content":
            q, k = st.ref(q), st.ref(k)
            st.fired["content"] += 1
        elif st.mode == "style":
            k, v = st.ref(k), st.ref(v)
            st.fired["style"] += 1
        B, h = q.shape[0], attn.heads
        q, k, v = (x.view(B, -1, h, x.shape[-1] // h).transpose(1, 2) for x in (q, k, v))  # (B,h,N,d)
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        mask = None
        if attention_mask is not None:
            mask = attn.prepare_attention_mask(attention_mask, k.shape[2], B).view(B, h, -1, k.shape[2])
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = out.transpose(1, 2).reshape(B, -1, out.shape[1] * out.shape[3]).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if shape4 is not None:
            out = out.transpose(1, 2).reshape(shape4)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def install_injection(unet, state: InjectionState) -> list:
    """attn1 of up_blocks 1-3 -> InjectionAttnProcessor; conv2 of up_blocks 1-2 resnets -> hooks."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    procs = {}
    for name in unet.attn_processors:
        hit = name.startswith(("up_blocks.1.", "up_blocks.2.", "up_blocks.3.")) and ".attn1." in name
        procs[name] = InjectionAttnProcessor(state) if hit else AttnProcessor2_0()
    unet.set_attn_processor(procs)

    def conv2_hook(module, inputs, output):
        if state.mode != "content":
            return None
        state.fired["content"] += 1
        return state.ref(output)                                  # targets get the reference's features

    return [r.conv2.register_forward_hook(conv2_hook)
            for b in (1, 2) for r in unet.up_blocks[b].resnets]


# --------------------------------------------------------------------------- DDIM
def ddim_move(x: torch.Tensor, eps: torch.Tensor, a_from: float, a_to: float) -> torch.Tensor:
    """Deterministic DDIM (eta=0) between noise levels alpha_bar ``a_from`` -> ``a_to``.

    Sampling moves to a larger alpha_bar, inversion to a smaller one; same formula.
    """
    x0 = (x - (1 - a_from) ** 0.5 * eps) / a_from ** 0.5
    return a_to ** 0.5 * x0 + (1 - a_to) ** 0.5 * eps


def _hash_tensor(x: torch.Tensor) -> str:
    x = x.detach().to("cpu", torch.float32).contiguous()
    h = hashlib.sha256(str(tuple(x.shape)).encode())
    h.update(x.numpy().tobytes())
    return h.hexdigest()[:24]


# --------------------------------------------------------------------------- the stylizer
class Stylizer:
    """DiffuseST baseline: ``stylize(frames, style)``, plus the pieces a latent policy needs."""

    # backbone fields that do not change the numbers (kept out of cache keys: the xT and z0
    # ablations share one baseline cache)
    _KEY_IGNORES = ("injection", "batch_size")

    def __init__(self, cfg: Config, components: Components, device=None, cache: bool = True):
        self.cfg, self.bb = cfg, cfg.backbone
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        # half precision only on an accelerator (slow or unsupported on CPU)
        self.dtype = torch_dtype(self.bb.dtype) if self.device.type != "cpu" else torch.float32
        c = components
        self.tokenizer, self.scheduler = c.tokenizer, c.scheduler
        self.text_encoder, self.qformer, self.unet, self.vae = (
            self._place(m) for m in (c.text_encoder, c.qformer, c.unet, c.vae))
        self.image_mean, self.image_std, self.ctx_begin_pos = c.image_mean, c.image_std, c.ctx_begin_pos
        self.use_cache = cache
        self.cache_dir = paths.cache_dir(cfg.profile) / "backbone"
        self._memo: dict = {}
        self.unet_calls = 0                 # UNet forward passes (one per image batch)
        self.unet_images = 0                # images through the UNet (sum of batch sizes)
        self.step_log: list = []            # (timestep, mode) of the latest denoising steps
        self.state = InjectionState()
        self._hooks = install_injection(self.unet, self.state)
        self.unet.register_forward_pre_hook(self._count)
        self.scale = float(self.vae.config.scaling_factor)
        self.scheduler.set_timesteps(self.bb.num_inference_steps)
        self.timesteps = [int(t) for t in self.scheduler.timesteps]          # sampling, descending
        self.content_steps, self.style_steps = self._schedule()
        with torch.no_grad():
            self.null_emb = self._embed_empty()                               # (1,77,D)
        key_fields = {k: v for k, v in cfg.to_dict()["backbone"].items() if k not in self._KEY_IGNORES}
        self._digest = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_config(cls, cfg: Config, device=None, cache: bool = True) -> "Stylizer":
        device = resolve_device(cfg.train.device if device is None else device)
        if cfg.backbone.model_id == TINY:
            comps = tiny_components(cfg.backbone.seed, paths.cache_dir(cfg.profile) / "backbone" / "tokenizers")
        else:
            dtype = torch_dtype(cfg.backbone.dtype) if device.type != "cpu" else torch.float32
            comps = blipdiffusion_components(cfg.backbone.model_id, dtype)
        return cls(cfg, comps, device, cache)

    # ------------------------------------------------------------------ bookkeeping
    def _place(self, module):
        module = module.to(self.device)
        if next(module.parameters()).dtype != self.dtype:   # cast only when needed (diffusers warns)
            module = module.to(self.dtype)
        return module.eval().requires_grad_(False)

    def _count(self, module, args):
        self.unet_calls += 1
        self.unet_images += int(args[0].shape[0]) if args else 0

    def _schedule(self) -> tuple[set, set]:
        if self.bb.original_schedule:       # authors' behaviour: every sampling step is a content step
            return set(self.timesteps), set()
        cut = 1000 * self.bb.alpha
        return {t for t in self.timesteps if t >= cut}, {t for t in self.timesteps if t < cut}

    def _alpha(self, t: int) -> float:
        return float(self.scheduler.alphas_cumprod[t]) if t >= 0 else float(self.scheduler.final_alpha_cumprod)

    def _prev(self, t: int) -> int:
        """The timestep a sampling step at ``t`` lands on (-1: the final, clean level)."""
        i = self.timesteps.index(t)
        return self.timesteps[i + 1] if i + 1 < len(self.timesteps) else -1

    def _key(self, kind: str, *parts: str) -> str:
        h = hashlib.sha256("|".join((kind, self.bb.model_id, self._digest) + parts).encode())
        return f"{kind}-{h.hexdigest()[:24]}"

    def _cached(self, key: str, build, to_tensors, from_tensors):
        """memory -> disk -> build (then save both)."""
        if self.use_cache and key in self._memo:
            return self._memo[key]
        path = self.cache_dir / f"{key}.safetensors"
        if self.use_cache and path.exists():
            obj = from_tensors({k: v.to(self.device) for k, v in load_tensors(path).items()})
        else:
            obj = build()
            if self.use_cache:
                atomic_save_tensors(path, to_tensors(obj), metadata={"model_id": self.bb.model_id})
        if self.use_cache:
            self._memo[key] = obj
        return obj

    # ------------------------------------------------------------------ inputs
    def prepare(self, images, what: str = "frames") -> torch.Tensor:
        """Validate (T,3,H,W) in [0,1] and resize to the backbone resolution."""
        if not isinstance(images, torch.Tensor):
            raise InputError(f"{what} must be a torch tensor (T,3,H,W) in [0,1], got {type(images).__name__}",
                             fix="convert with torch.from_numpy(x).permute(0,3,1,2).float()/255")
        x = images[None] if images.ndim == 3 else images
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[0] == 0:
            raise InputError(f"{what} must have shape (T,3,H,W), got {tuple(images.shape)}",
                             fix="drop alpha / repeat grayscale to 3 channels, channels first")
        x = x.to(self.device, torch.float32)
        if not torch.isfinite(x).all():
            raise InputError(f"{what} contain NaN or inf values", fix="check the decoder / input file")
        if x.min() < -1e-3 or x.max() > 1 + 1e-3:
            raise InputError(f"{what} must lie in [0,1] (got {x.min():.3g}..{x.max():.3g})",
                             fix="divide uint8 images by 255")
        r = self.bb.resolution
        if x.shape[-2:] != (r, r):
            x = F.interpolate(x, size=(r, r), mode="bilinear", antialias=True, align_corners=False)
        return x.clamp(0, 1)

    def _chunks(self, n: int):
        b = max(1, self.bb.batch_size)
        return [slice(i, min(n, i + b)) for i in range(0, n, b)]

    # ------------------------------------------------------------------ VAE
    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(T,3,H,W) [0,1] -> (T,4,H/8,W/8) posterior mean x scaling factor."""
        out = [self.vae.encode((images[s] * 2 - 1).to(self.dtype)).latent_dist.mean for s in self._chunks(len(images))]
        return torch.cat(out).float() * self.scale

    @torch.no_grad()
    def decode(self, z0: torch.Tensor) -> torch.Tensor:
        """(T,4,h,w) -> (T,3,H,W) in [0,1]."""
        z0 = z0.to(self.device)
        out = [self.vae.decode((z0[s] / self.scale).to(self.dtype)).sample for s in self._chunks(len(z0))]
        # contiguous: the VAE returns channels_last tensors, the disk cache standard ones; the same
        # layout everywhere keeps downstream convs bit-identical (seeded runs reproduce exactly)
        return ((torch.cat(out).float() + 1) / 2).clamp(0, 1).contiguous()

    # ------------------------------------------------------------------ embeddings
    def _embed_empty(self) -> torch.Tensor:
        ids = self.tokenizer([""], padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(self.device)
        return encode_text(self.text_encoder, ids).float()

    @torch.no_grad()
    def style_embedding(self, style: torch.Tensor) -> torch.Tensor:
        """(1,3,H,W) [0,1] -> (1,77,D): BLIP-Diffusion prompt with the 16 style queries spliced in."""
        vis = self.qformer.config.vision_config.image_size
        px = F.interpolate(style, size=(vis, vis), mode="bicubic", align_corners=False).clamp(0, 1)
        mean = torch.tensor(self.image_mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std, device=self.device).view(1, 3, 1, 1)
        queries = query_embeddings(self.qformer, ((px - mean) / std).to(self.dtype), [self.bb.style_subject])
        max_len = self.text_encoder.text_model.config.max_position_embeddings - queries.shape[1]
        prompt = build_prompt(self.bb.prompt, self.bb.style_subject)
        ids = self.tokenizer([prompt], padding="max_length", truncation=True, max_length=max_len,
                             return_tensors="pt").input_ids.to(self.device)
        return encode_text(self.text_encoder, ids, queries, self.ctx_begin_pos).float()

    # ------------------------------------------------------------------ UNet
    def _eps(self, x: torch.Tensor, t: int, emb: torch.Tensor) -> torch.Tensor:
        return self.unet(x.to(self.dtype), t, encoder_hidden_states=emb.to(self.dtype)).sample.float()

    @torch.no_grad()
    def invert_latents(self, z: torch.Tensor) -> Inversion:
        """DDIM inversion with the empty prompt, on the sampling timesteps (plus the inversion grid)."""
        grid = set(self.timesteps)
        if self.bb.num_inversion_steps != self.bb.num_inference_steps:
            inv = self.scheduler.__class__.from_config(self.scheduler.config)
            inv.set_timesteps(self.bb.num_inversion_steps)
            grid |= {int(t) for t in inv.timesteps if int(t) <= self.timesteps[0]}
        up = sorted(grid)                                        # ascending: clean -> noisy
        keep = set(self.timesteps)
        traj = {t: [] for t in self.timesteps}
        for s in self._chunks(len(z)):
            x = z[s].float()
            emb = self.null_emb.expand(len(x), -1, -1)
            self.state.mode = None
            a_prev = self._alpha(-1)
            for t in progress(up, desc="invert"):
                eps = self._eps(x, t, emb)                       # eps at the target level, current latent
                x = ddim_move(x, eps, a_prev, self._alpha(t))
                a_prev = self._alpha(t)
                if t in keep:
                    traj[t].append(x)
        traj = {t: torch.cat(v) for t, v in traj.items()}
        return Inversion(z.float(), traj, traj[self.timesteps[0]])

    def invert(self, frames: torch.Tensor) -> Inversion:
        """frames (T,3,H,W) [0,1] -> Inversion (cached by frame bytes)."""
        x = self.prepare(frames)
        key = self._key("inv", _hash_tensor(x))
        return self._cached(key, lambda: self.invert_latents(self.encode(x)), Inversion.tensors,
                            Inversion.from_tensors)

    def style_context(self, style: torch.Tensor) -> StyleContext:
        """style (1,3,H,W) [0,1] -> prompt/uncond embeddings + the style image's inversion (cached)."""
        s = self.prepare(style, "style image")[:1]
        key = self._key("style", _hash_tensor(s), self.bb.prompt, self.bb.style_subject)

        def build():
            return StyleContext(self.style_embedding(s), self.null_emb.clone(),
                                self.invert_latents(self.encode(s)))
        return self._cached(key, build, StyleContext.tensors, StyleContext.from_tensors)

    @torch.no_grad()
    def denoise(self, xT: torch.Tensor, inversion: Inversion, style_ctx: Optional[StyleContext],
                inject: bool = True, guidance_scale: Optional[float] = None) -> torch.Tensor:
        """DDIM sampling from x_T (T,4,h,w) with content/style injection -> z0 (T,4,h,w).

        ``style_ctx=None`` samples with the empty prompt (no style; for round trips).
        """
        g = self.bb.guidance_scale if guidance_scale is None else guidance_scale
        cond = style_ctx.cond if style_ctx is not None else self.null_emb
        cfg_on = g > 1.0 and style_ctx is not None
        groups = [style_ctx.uncond, cond] if cfg_on else [cond]
        xT = xT.to(self.device).float()
        out, self.step_log = [], []
        for s in self._chunks(len(xT)):
            x, n = xT[s], len(xT[s])
            targets = torch.cat([e.expand(n, -1, -1) for e in groups])          # (G*n,L,D)
            for t in progress(self.timesteps, desc="denoise"):
                mode = None
                if inject and t in self.content_steps:
                    mode, ref = "content", inversion.trajectory[t][s].to(self.device)        # (n,4,h,w)
                elif inject and t in self.style_steps and style_ctx is not None:
                    mode, ref = "style", style_ctx.inversion.trajectory[t].to(self.device)  # (1,4,h,w) shared
                if s.start == 0:
                    self.step_log.append((t, mode))
                self.state.mode, self.state.groups = mode, len(groups)
                self.state.n_ref = 0 if mode is None else len(ref)
                parts = [x] * len(groups) if mode is None else [ref] + [x] * len(groups)
                emb = targets if mode is None else torch.cat([self.null_emb.expand(len(ref), -1, -1), targets])
                try:
                    eps = self._eps(torch.cat(parts), t, emb)[self.state.n_ref:]  # drop the reference rows
                finally:
                    self.state.mode = None
                if cfg_on:
                    e_u, e_c = eps.chunk(2)
                    eps = e_u + g * (e_c - e_u)
                x = ddim_move(x, eps, self._alpha(t), self._alpha(self._prev(t)))
            out.append(x)
        return torch.cat(out)

    # ------------------------------------------------------------------ the pipeline
    def stylize(self, frames: torch.Tensor, style: torch.Tensor) -> BaselineOutput:
        """DiffuseST on a clip: frames (T,3,H,W), style (1,3,H,W), both in [0,1]. Disk-cached."""
        # 1. inputs at the backbone resolution
        x = self.prepare(frames)
        s = self.prepare(style, "style image")[:1]
        # 2. DDIM inversion of every frame (cached)
        inversion = self.invert(x)
        # 3. style embedding + style inversion (cached)
        style_ctx = self.style_context(s)
        key = self._key("out", _hash_tensor(x), _hash_tensor(s))

        def build():
            # 4. denoise all frames from x_T with content/style injection
            z0 = self.denoise(inversion.xT, inversion, style_ctx)
            # 5. decode
            return {"images": self.decode(z0), "z0": z0}
        res = self._cached(key, build, lambda d: d, lambda d: d)
        return BaselineOutput(res["images"], inversion.xT, res["z0"], inversion, style_ctx)

    __call__ = stylize

    # ------------------------------------------------------------------ for the policy
    def policy_latents(self, out: BaselineOutput) -> torch.Tensor:
        """(T,4,h,w): the latent the policy perturbs (cfg.backbone.injection)."""
        if self.bb.injection == "xT":
            return out.xT
        if self.bb.injection == "z0":
            return out.z0
        raise ValueError(f"backbone.injection must be 'xT' or 'z0', got {self.bb.injection!r}")

    @torch.no_grad()
    def render(self, latents: torch.Tensor, out: BaselineOutput, idx) -> torch.Tensor:
        """Perturbed policy latents (N,4,h,w) of frames ``idx`` (N,) -> images (N,3,H,W) in [0,1].

        "z0": one decode; "xT": a full injected denoising pass (with those frames' own content
        trajectories) then a decode.
        """
        idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1)
        latents = latents.detach().to(self.device).float()
        if self.bb.injection == "z0":
            return self.decode(latents)
        if self.bb.injection == "xT":
            z0 = self.denoise(latents, out.inversion.select(idx.to(out.inversion.z.device)), out.style_ctx)
            return self.decode(z0)
        raise ValueError(f"backbone.injection must be 'xT' or 'z0', got {self.bb.injection!r}")


__all__ = ["Stylizer", "Inversion", "StyleContext", "BaselineOutput", "Components", "tiny_components",
           "blipdiffusion_components", "encode_text", "query_embeddings", "build_prompt", "ddim_move",
           "InjectionState", "InjectionAttnProcessor", "install_injection", "SD15_UNET", "SD15_VAE",
           "SD_SCHEDULER", "TINY_UNET", "TINY_VAE"]
