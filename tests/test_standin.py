"""Stand-in weights (vstlib.tools.standin) and the component-wise BLIP-Diffusion loader
(vstlib.backbones.diffusest.hub): the snapshot layout of Salesforce/blipdiffusion as diffusers 0.21.0.dev0
wrote it, loaded through the same function the paper profile uses; CLIP built with QuickGELU for
OpenAI's weights."""
from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch

from vstlib.backbones.diffusest.hub import load_blipdiffusion, resolve_snapshot
from vstlib.errors import MissingWeightsError, VstError
from vstlib.tools import standin


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("standin") / "weights"
    standin.write_standin_weights(root, scale="tiny", parts=("blipdiffusion", "bert"))
    return root


@pytest.fixture
def hf_env(tiny_root, monkeypatch):
    for k, v in standin.standin_env(tiny_root).items():
        monkeypatch.setenv(k, v)
    return tiny_root


def _copy(tiny_root, tmp_path):
    """A private copy of the stand-in folder (for tests that damage it)."""
    dst = tmp_path / "weights"
    shutil.copytree(tiny_root, dst)
    return dst


# --------------------------------------------------------------------------- layout
def test_snapshot_layout_matches_the_real_cache(tiny_root):
    cache = standin.hub_cache(tiny_root)
    repo = cache / "models--Salesforce--blipdiffusion"
    rev = (repo / "refs" / "main").read_text().strip()
    snap = repo / "snapshots" / rev
    assert len(rev) == 40 and snap.is_dir()
    assert (tiny_root / standin.MARKER).read_text().startswith("STAND-IN WEIGHTS")
    index = json.loads((snap / "model_index.json").read_text())
    # the entries that break BlipDiffusionPipeline.from_pretrained today (issue 14)
    assert index["_diffusers_version"] == "0.21.0.dev0"
    assert index["qformer"] == ["blip_diffusion", "Blip2QFormerModel"]
    assert index["text_encoder"] == ["blip_diffusion", "ContextCLIPTextModel"]
    assert index["image_processor"] == ["blip_diffusion", "BlipImageProcessor"]
    assert index["scheduler"] == ["diffusers", "PNDMScheduler"]
    assert index["ctx_begin_pos"] == 2 and index["mean"][0] == pytest.approx(0.48145466)
    files = {p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file()}
    for f in ("tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/tokenizer_config.json",
              "text_encoder/config.json", "text_encoder/model.safetensors", "qformer/config.json",
              "qformer/model.safetensors", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
              "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
              "scheduler/scheduler_config.json", "image_processor/preprocessor_config.json"):
        assert f in files, f
    sched = json.loads((snap / "scheduler" / "scheduler_config.json").read_text())
    assert sched["_class_name"] == "PNDMScheduler" and sched["skip_prk_steps"] is True
    assert sched["beta_schedule"] == "scaled_linear" and sched["set_alpha_to_one"] is False
    unet = json.loads((snap / "unet" / "config.json").read_text())
    assert unet["up_block_types"] == ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3
    qf = json.loads((snap / "qformer" / "config.json").read_text())
    assert qf["num_query_tokens"] == 16 and qf.get("tokenizer") is None   # loaded by name, like the real one
    assert (cache / "models--bert-base-uncased" / "snapshots").is_dir()


def test_full_configs_are_the_real_architectures():
    """Parameter counts of the full-size configs against the published models (built on meta)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.pipelines.deprecated.blip_diffusion.modeling_ctx_clip import (
        ContextCLIPTextModel,
    )
    from transformers import CLIPTextConfig

    from vstlib.backbones.diffusest.tiny import SD15_UNET, SD15_VAE

    with torch.device("meta"):
        n = {"unet": UNet2DConditionModel(**SD15_UNET), "vae": AutoencoderKL(**SD15_VAE),
             "text": ContextCLIPTextModel(CLIPTextConfig(**standin.SD15_TEXT))}
    count = {k: sum(p.numel() for p in m.parameters()) for k, m in n.items()}
    assert count["unet"] == 859_520_964          # SD-1.5 UNet
    assert count["vae"] == 83_653_863             # SD-1.5 VAE
    assert count["text"] == 123_060_480          # CLIP ViT-L/14 text tower (SD-1.5 text encoder)


# --------------------------------------------------------------------------- the load path
def test_load_blipdiffusion_reads_every_component(hf_env):
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from diffusers.pipelines.deprecated.blip_diffusion.modeling_blip2 import (
        Blip2QFormerModel,
    )
    from diffusers.pipelines.deprecated.blip_diffusion.modeling_ctx_clip import (
        ContextCLIPTextModel,
    )
    from safetensors.torch import load_file
    from transformers import CLIPTokenizer

    c = load_blipdiffusion("Salesforce/blipdiffusion", torch.float32)
    assert isinstance(c.tokenizer, CLIPTokenizer) and isinstance(c.text_encoder, ContextCLIPTextModel)
    assert isinstance(c.qformer, Blip2QFormerModel) and isinstance(c.unet, UNet2DConditionModel)
    assert isinstance(c.vae, AutoencoderKL) and isinstance(c.scheduler, PNDMScheduler)
    assert c.scheduler.config.skip_prk_steps and c.ctx_begin_pos == 2
    assert c.image_mean == pytest.approx(standin.CLIP_MEAN) and c.image_std == pytest.approx(standin.CLIP_STD)
    # the weights are the file's, not a fresh init
    sd = load_file(str(resolve_snapshot() / "unet" / "diffusion_pytorch_model.safetensors"))
    assert torch.equal(c.unet.conv_in.weight, sd["conv_in.weight"])
    # the tokenizers work: CLIP pads to 77, the Q-Former's BERT knows "style"
    ids = c.tokenizer(["a style"], padding="max_length", max_length=77).input_ids[0]
    assert len(ids) == 77 and ids[0] == c.tokenizer.bos_token_id
    assert c.qformer.tokenizer.convert_tokens_to_ids("style") != c.qformer.tokenizer.unk_token_id


def test_pipeline_config_values_come_from_model_index(tiny_root, tmp_path, monkeypatch):
    root = _copy(tiny_root, tmp_path)
    for k, v in standin.standin_env(root).items():
        monkeypatch.setenv(k, v)
    snap = resolve_snapshot()
    index = json.loads((snap / "model_index.json").read_text())
    index.update(ctx_begin_pos=5, mean=[0.5, 0.5, 0.5])
    (snap / "model_index.json").write_text(json.dumps(index))
    c = load_blipdiffusion(dtype=torch.float32)
    assert c.ctx_begin_pos == 5 and c.image_mean == (0.5, 0.5, 0.5)


def test_pipeline_from_pretrained_fails_on_this_layout(hf_env):
    """Why the hub loader goes component by component: diffusers' pipeline loader cannot read the real model_index.json."""
    from diffusers.pipelines.deprecated.blip_diffusion import BlipDiffusionPipeline

    with pytest.raises(ValueError, match="blip_diffusion is not one of the libraries"):
        BlipDiffusionPipeline.from_pretrained(str(resolve_snapshot()))


def test_missing_or_damaged_snapshot_is_one_line(tiny_root, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(empty))
    with pytest.raises(MissingWeightsError, match="not in the Hugging Face cache"):
        load_blipdiffusion(dtype=torch.float32)
    root = _copy(tiny_root, tmp_path)
    for k, v in standin.standin_env(root).items():
        monkeypatch.setenv(k, v)
    (resolve_snapshot() / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(VstError, match="component unet failed to load") as err:
        load_blipdiffusion(dtype=torch.float32)
    assert "\n" not in str(err.value) and "re-download" in str(err.value)


def test_existing_non_standin_folder_is_refused(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "vgg19-dcbb9e9d.pth").write_bytes(b"x")
    with pytest.raises(VstError, match="not a stand-in folder"):
        standin.write_standin_weights(tmp_path / "real", scale="tiny", parts=("bert",))


# --------------------------------------------------------------------------- CLIP
def test_clip_quick_gelu_follows_the_pretrained_tag():
    from vstlib.nets.perceptual import clip_quick_gelu

    assert clip_quick_gelu("ViT-B-32", "openai") is True            # OpenAI trained with QuickGELU
    assert clip_quick_gelu("ViT-B-32", "laion2b_s34b_b79k") is False
    assert clip_quick_gelu("ViT-B-32", None) is False


def test_clip_openai_is_built_with_quick_gelu(tmp_path, monkeypatch):
    """The paper profile's CLIP, loaded offline from the stand-in cache where open_clip looks."""
    import huggingface_hub.constants as hub_constants
    import open_clip
    from safetensors.torch import load_file

    from vstlib.nets.perceptual import clip_model

    root = tmp_path / "w"
    out = standin.write_standin_weights(root, parts=("clip",), dtype="float16")
    env = standin.standin_env(root)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    # huggingface_hub read these at import; open_clip's hf_hub_download uses the constants
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", env["HF_HUB_CACHE"])
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)     # open_clip's "QuickGELU mismatch" warning
        model, _ = clip_model("ViT-B-32", "openai")
    for tower in (model.visual.transformer, model.transformer):
        assert isinstance(tower.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    sd = load_file(str(out["clip"] / "open_clip_model.safetensors"))
    assert torch.equal(model.visual.conv1.weight, sd["visual.conv1.weight"].float())


# --------------------------------------------------------------------------- CLI
def test_cli_stand_in_weights(tmp_path, capsys):
    from vstlib.cli import main

    assert main(["stand-in-weights", str(tmp_path / "smoke")]) == 0          # smoke: nothing to write
    assert not (tmp_path / "smoke").exists()
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "model.safetensors").write_bytes(b"x")
    assert main(["stand-in-weights", "--profile", "paper", str(tmp_path / "real")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a stand-in folder" in err


def test_paper_profile_backbone_loads_the_snapshot(hf_env, tmp_path):
    """The paper profile's own path: make_backbone(cfg.backbone) with model_id = the hub id, reading
    the stand-in snapshot (real model_index.json layout) from HF_HUB_CACHE; a 2-frame non-square clip
    (64x96: the paper prepares frames at short side 512, aspect kept) stylizes at its own size."""
    from dataclasses import replace

    from vstlib.backbones import make_backbone
    from vstlib.config import get_config

    cfg = replace(get_config("paper").backbone, resolution=64, num_inference_steps=2, num_inversion_steps=2)
    assert cfg.model_id == "Salesforce/blipdiffusion"
    bb = make_backbone(cfg, "cpu", tmp_path / "bb")
    assert bb.ctx_begin_pos == 2 and bb.image_mean == pytest.approx(tuple(standin.CLIP_MEAN))
    g = torch.Generator().manual_seed(0)
    out = bb.stylize(torch.rand(2, 3, 64, 96, generator=g), torch.rand(1, 3, 80, 64, generator=g))
    assert out.images.shape == (2, 3, 64, 96) and torch.isfinite(out.images).all()
    assert bb.policy_latents(out).shape == (2, 4, 8, 12)                    # x_T (the paper's injection)
    assert bb.unet_calls > 0


# --------------------------------------------------------------------------- damaged caches (issue 14.5)
def test_truncated_torchvision_checkpoint_is_one_line(tmp_path, monkeypatch):
    """A cut-off vgg19-dcbb9e9d.pth (a real zip's first bytes) names the file and the fix."""
    import io

    from vstlib.nets.perceptual import vgg19_features

    ckpt = tmp_path / "torch" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    ckpt.parent.mkdir(parents=True)
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(1000)}, buf)
    ckpt.write_bytes(buf.getvalue()[:600])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(VstError, match="damaged or truncated") as err:
        vgg19_features("IMAGENET1K_V1", "cpu")
    msg = str(err.value)
    assert "\n" not in msg and "vgg19-dcbb9e9d.pth" in msg and "delete" in msg


def test_download_weights_checks_the_snapshot_and_names_hf_hub_offline(tiny_root, tmp_path, monkeypatch, capsys):
    from vstlib.backbones.diffusest.hub import missing_files
    from vstlib.cli import main

    root = _copy(tiny_root, tmp_path)
    for k, v in standin.standin_env(root).items():
        monkeypatch.setenv(k, v)
    snap = resolve_snapshot()
    assert missing_files(snap) == []
    (snap / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    assert missing_files(snap) == ["unet/diffusion_pytorch_model.safetensors"]
    assert main(["download-weights", "--profile", "paper"]) == 2
    err = capsys.readouterr().err
    assert "lacks unet/diffusion_pytorch_model.safetensors" in err
    assert "unset HF_HUB_OFFLINE" in err.strip().splitlines()[-1]


def test_tables_say_stand_in_weights(tmp_path, monkeypatch):
    from vstlib.evaluation.tables import profile_note

    for k in ("HF_HUB_CACHE", "HF_HOME", "TORCH_HOME"):
        monkeypatch.delenv(k, raising=False)
    assert profile_note("paper") == "paper profile"
    (tmp_path / standin.MARKER).write_text("STAND-IN WEIGHTS\n")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert profile_note("paper").startswith("STAND-IN WEIGHTS")
    assert "STAND-IN" not in profile_note("smoke")              # smoke has its own note, no real weights
