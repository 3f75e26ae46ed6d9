"""The install recipes agree, and the presets are the data the issues specify."""
import pytest
import tomllib
import yaml
from packaging.requirements import Requirement

from vstlib import paths
from vstlib.config import PAPER, SMOKE, ablations, from_dict, get_config


def _pyproject_requirements():
    meta = tomllib.loads((paths.ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra in meta["optional-dependencies"].values():
        reqs += extra
    return reqs


def _environment_requirements():
    env = yaml.safe_load((paths.ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert "-e ." in pip, "environment.yml must install this package"
    return [r for r in pip if not r.startswith("-")]


def _normalise(reqs):
    out = {}
    for r in reqs:
        req = Requirement(r)
        out[req.name.lower().replace("_", "-")] = str(req.specifier)
    return out


def test_environment_yml_matches_pyproject():
    py, env = _normalise(_pyproject_requirements()), _normalise(_environment_requirements())
    assert py == env, {"only in pyproject": py.keys() - env.keys(), "only in environment.yml": env.keys() - py.keys(),
                       "different pins": {k: (py[k], env[k]) for k in py.keys() & env.keys() if py[k] != env[k]}}


def test_torch_and_torchvision_pinned_as_a_pair():
    py = _normalise(_pyproject_requirements())
    # torchvision 0.29 is built against torch 2.14: a looser pin lets pip pick the local 2.13 wheel
    assert py["torch"] == "<2.15,>=2.14" and py["torchvision"] == "<0.30,>=0.29"
    import torch
    import torchvision
    from torchvision.ops import nms  # the operator that fails on a mismatched pair

    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]])
    assert nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist() == [0, 2]
    assert torchvision.__version__.startswith("0.29")


def test_paper_preset_matches_the_paper():
    # the authors: short side 512 with the aspect ratio kept (no crop), DiffuseST at 512, losses at 256
    assert (PAPER.data.size, PAPER.data.n_frames, PAPER.data.resize) == (512, 20, "short_side")
    assert (PAPER.backbone.resolution, PAPER.reward.loss_size) == (512, 256)
    assert (PAPER.reward.w_style, PAPER.reward.w_content, PAPER.reward.w_temp) == (10, 1, 10)
    assert (PAPER.train.lr, PAPER.train.accumulation, PAPER.train.epochs) == (1e-4, 4, 10)
    assert PAPER.backbone.model_id == "Salesforce/blipdiffusion"
    assert PAPER.eval.clip_model == "ViT-B-32" and PAPER.eval.clip_pretrained == "openai"


def test_smoke_is_offline_and_tiny():
    assert SMOKE.backbone.model_id == "tiny" and SMOKE.eval.clip_model == "tiny"
    assert SMOKE.reward.vgg_weights is None and SMOKE.flow.source == "exact"
    assert SMOKE.data.size <= 64


def test_override_and_round_trip():
    cfg = get_config("smoke", train={"lr": 5e-4}, reward={"style_layers": ["relu1_1"]})
    assert cfg.train.lr == 5e-4 and cfg.reward.style_layers == ("relu1_1",)
    assert SMOKE.train.lr == 1e-4  # presets are never mutated
    assert from_dict(cfg.to_dict()) == cfg
    assert cfg.digest("train") != SMOKE.digest("train") and cfg.digest("data") == SMOKE.digest("data")
    with pytest.raises(KeyError, match="no field"):
        get_config("smoke", train={"learning_rate": 1})
    with pytest.raises(KeyError, match="unknown profile"):
        get_config("big")


def test_ablation_grids_have_the_papers_shape():
    for base in (SMOKE, PAPER):
        grids = ablations(base)
        assert len(grids["lr_epochs"]) == 6
        assert {c.train.lr for c in grids["lr_epochs"].values()} == {1e-4, 5e-4}
        assert {c.backbone.injection for c in grids["injection"].values()} == {"xT", "z0"}
        assert {c.train.accumulation for c in grids["accumulation"].values()} == {1, 4}
        assert {c.reward.w_style for c in grids["weights"].values()} == {10.0, 1.0}
    assert {c.train.epochs for c in ablations(PAPER)["lr_epochs"].values()} == {2, 5, 10}


def test_paths_resolve_from_the_package(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    assert paths.ROOT == paths.PACKAGE.parent and (paths.ROOT / "pyproject.toml").exists()
    assert paths.results_dir("smoke").is_absolute()
    monkeypatch.setenv("VSTLIB_HOME", str(tmp_path / "h"))
    assert paths.data_dir("paper") == tmp_path / "h" / "data" / "paper"


def test_overrides_through_omegaconf_and_dacite():
    from vstlib.config import load, parse_overrides

    cfg = load("smoke", ["train.lr=1", "data.synthetic_images=[coffee]", "flow.raft_weights=null",
                         "reward.weights.toy=2"], policy={"hidden": 4})
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)          # int -> declared float
    assert cfg.data.synthetic_images == ("coffee",) and cfg.flow.raft_weights is None
    assert cfg.reward.weights == {"toy": 2} and cfg.policy.hidden == 4
    assert cfg.train.device in ("cpu", "cuda")                               # resolved once, at the edge
    with pytest.raises(TypeError, match="train.lr"):
        get_config("smoke", train={"lr": "fast"})
    with pytest.raises(TypeError, match="data.n_frames"):
        get_config("smoke", data={"n_frames": "many"})
    with pytest.raises(ValueError, match="section.field=value"):
        parse_overrides(["lr=5"])
