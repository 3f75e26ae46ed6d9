"""What each profile downloads once, and from where (`vst download-weights`).

    for what, fetch in download_jobs(cfg): print(what, fetch())   # fetch() -> the cached path

Every job knows its model's own cache layout: BLIP-Diffusion and the Q-Former tokenizer in the
Hugging Face cache, torchvision's VGG19 / AlexNet / RAFT in ``$TORCH_HOME/hub/checkpoints``, open_clip's
ViT-B-32 in the Hugging Face cache. Profiles whose models are tiny or vendored need nothing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import open_clip
import torchvision
from huggingface_hub import hf_hub_download, snapshot_download

from vstlib.backbones.diffusest.hub import (
    QFORMER_TOKENIZER,
    hf_cache_dir,
    missing_files,
    offline,
)
from vstlib.config import TINY
from vstlib.errors import VstError
from vstlib.hub import load_torchvision_weights, torch_hub_checkpoint, weights_guard


def download_jobs(cfg) -> list[tuple[str, Callable[[], Path]]]:
    """(what, fetch) for every pretrained weight ``cfg`` uses; ``fetch()`` downloads (or finds) it and
    returns where it is cached, or raises a VstError naming what is missing."""
    jobs = []
    if cfg.backbone.model_id != TINY:
        jobs.append((cfg.backbone.model_id, lambda: _blip(cfg.backbone.model_id)))
        jobs.append((f"{QFORMER_TOKENIZER} (Q-Former tokenizer)",
                     lambda: _hub(QFORMER_TOKENIZER, ["vocab.txt", "tokenizer_config.json", "config.json"])))
    if cfg.reward.vgg_weights:
        jobs.append(_torchvision(getattr(torchvision.models.VGG19_Weights, cfg.reward.vgg_weights), "VGG19 (style loss)"))
    if cfg.reward.lpips_pretrained:
        jobs.append(_torchvision(torchvision.models.AlexNet_Weights.IMAGENET1K_V1, "AlexNet (LPIPS trunk)"))
    if cfg.flow.source == "raft" and cfg.flow.raft_weights:
        enum = {"raft_large": torchvision.models.optical_flow.Raft_Large_Weights,
                "raft_small": torchvision.models.optical_flow.Raft_Small_Weights}[cfg.flow.raft]
        jobs.append(_torchvision(getattr(enum, cfg.flow.raft_weights), f"RAFT ({cfg.flow.raft})"))
    if cfg.eval.clip_model != TINY and cfg.eval.clip_pretrained:
        jobs.append((f"CLIP {cfg.eval.clip_model}/{cfg.eval.clip_pretrained}",
                     lambda: _clip(cfg.eval.clip_model, cfg.eval.clip_pretrained)))
    return jobs


def fix_for_failures() -> str:
    """The one fix to print when downloads failed."""
    if offline():
        return ("HF_HUB_OFFLINE is set, so nothing can be downloaded: unset it (`unset HF_HUB_OFFLINE`) on a "
                "machine with network and rerun `vst download-weights`")
    return "check the network connection and rerun `vst download-weights`"


def _hub(repo: str, files=None) -> Path:
    with weights_guard(repo, model_ids=[repo]):
        if files is None:
            return Path(snapshot_download(repo, cache_dir=hf_cache_dir()))
        return Path([hf_hub_download(repo, f, cache_dir=hf_cache_dir()) for f in files][0]).parent


def _blip(repo: str) -> Path:
    root = _hub(repo)
    gone = missing_files(root)                     # offline, snapshot_download returns an incomplete folder as is
    if gone:
        raise VstError(f"the snapshot lacks {', '.join(gone)}", root, f"delete {root.parent.parent} and download it again")
    return root


def _torchvision(enum, what: str) -> tuple[str, Callable[[], Path]]:
    return what, lambda: (load_torchvision_weights(enum, what), torch_hub_checkpoint(Path(enum.url).name))[1]


def _clip(model: str, pretrained: str) -> Path:
    pcfg = open_clip.get_pretrained_cfg(model, pretrained)
    ids = [x for x in [(pcfg or {}).get("hf_hub", "").strip("/")] if x]
    with weights_guard(f"CLIP {model} ({pretrained})", model_ids=ids):
        return Path(open_clip.download_pretrained(pcfg))


__all__ = ["download_jobs", "fix_for_failures"]
