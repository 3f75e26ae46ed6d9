#!/usr/bin/env python
"""Convert and trim what the cpu profile needs from ../shared/assets into vstlib/assets.

    python scripts/vendor_assets.py [--src ../shared/assets] [--out vstlib/assets]

Writes (deterministic: a second run rewrites byte-identical files):
- weights/*.safetensors: fp16, the source's own variable names and layouts, with the sha256 of
  the tensor contents in the metadata (checked on every load by vstlib.nets.weights);
- clips/*.mp4: the first 20 frames, short side resized to 256 then centre-cropped to 256x256
  (training data only), H.264 yuv444p CRF 10 (about 40-45 dB PSNR), the source's frame rate;
- clips-eval/*.mp4: the 16 held-out evaluation clips, trimmed and encoded the same way;
- styles/*.jpg: the paintings, long side <= 512, JPEG quality 90;
- styles-eval/*.jpg: the 12 held-out evaluation paintings, the same way (sources from its README);
- PROVENANCE.md: source, licence and sha256 of every shipped file.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vstlib import paths
from vstlib.cache import content_hash
from vstlib.files import atomic_path, atomic_write_text
from vstlib.nets import darknet, faststyle, microast, taef2, vgg_r31
from vstlib.video.io import read_frames

N_FRAMES, SIZE, CRF = 20, 256, 10
PAINTING_SIDE, JPEG_QUALITY = 512, 90

ML5 = "ml5js/ml5-data-and-models"
FASTSTYLE = {  # our name -> ml5 folder
    "wave": "wave", "udnie": "udnie", "scream": "scream", "wreck": "wreck"}
CLIPS = {  # shared file -> (source, licence)
    "wolf.mp4": ("omerbt/TokenFlow @ data/wolf.mp4", "MIT (repository)"),
    "woman-running.mp4": ("omerbt/TokenFlow @ data/woman-running.mp4", "MIT (repository)"),
    "cutBunny.mp4": ("naoto0804/pytorch-AdaIN @ input/videos/cutBunny.mp4",
                     "MIT (repository); Big Buck Bunny (c) Blender Foundation, CC-BY 3.0"),
    "ccpl-aerial-town.avi": ("JarrentWu1031/CCPL @ output/content.avi", "Apache-2.0 (repository)"),
    "pexels-antoni-shkraba-8048492.mp4": ("williamyang1991/Rerender_A_Video @ videos/pexels-antoni-shkraba-8048492.mp4",
                                          "Pexels licence (free to use)"),
    "pexels-cottonbro-6649832.mp4": ("williamyang1991/Rerender_A_Video @ videos/pexels-cottonbro-6649832.mp4",
                                     "Pexels licence (free to use)"),
    "sintel-market-demo": ("princeton-vl/RAFT @ demo-frames/frame_0016..0025.png",
                           "MPI-Sintel, CC-BY 3.0 (Blender Foundation / Butler et al.)"),
}
MICROAST = ("EndyWon/MicroAST @ models/{part}_iter_160000.pth.tar @ 5a6c9050d8c408191cb9db12c697f3e4c7ebe137 "
            "(Wang et al., AAAI 2023)")
VGG_R31 = ("sunayana-981/LinearStyleTransfer @ models/vgg_r31.pth @ 62f4a3f3169549134fc72c9c2cda094ae4be552b "
           "(fork of sunshineatnoon/LinearStyleTransfer, Li et al. CVPR 2019; VGG-19 of Simonyan & Zisserman, "
           "Caffe weights normalised by Gatys et al.)")
DAVIS_LICENCE = ("CC BY-NC 4.0 (DAVIS 2016: non-commercial use; credit DAVIS, Perazzi et al. CVPR 2016 / "
                 "Pont-Tuset et al. 2017)")
EVAL_LICENCES = {  # clips-eval file prefix -> licence line
    "davis-tennis": DAVIS_LICENCE + "; via MCG-NKU/E2FGVI (repository CC BY-NC 4.0)",
    "davis-": DAVIS_LICENCE,
    "sam2-": "Apache-2.0 (facebookresearch/sam2 repository; the footage states no licence of its own)",
}
FOLDER_FPS = 24  # the Sintel demo frames come without a rate; the film runs at 24 fps
STYLES = {
    "starry_night.jpg": "Van Gogh, The Starry Night (1889); jcjohnson/neural-style @ examples/inputs/starry_night.jpg (MIT repository)",
    "wave.jpg": "Hokusai, The Great Wave off Kanagawa (c. 1831); lengstrom/fast-style-transfer @ examples/style/wave.jpg",
    "udnie.jpg": "Picabia, Udnie (1913); lengstrom/fast-style-transfer @ examples/style/udnie.jpg",
    "the_scream.jpg": "Munch, The Scream (1893); lengstrom/fast-style-transfer @ examples/style/the_scream.jpg",
    "the_shipwreck_of_the_minotaur.jpg": ("Turner, The Wreck of a Transport Ship (c. 1810); "
                                          "lengstrom/fast-style-transfer @ examples/style/the_shipwreck_of_the_minotaur.jpg"),
}


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def save_fp16(path: Path, tensors: dict, shapes: dict, source: str) -> None:
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if got != {k: tuple(s) for k, s in shapes.items()}:
        raise SystemExit(f"{source}: variables do not match the architecture: {sorted(set(got) ^ set(shapes))[:5]} "
                         f"{[(k, got.get(k), shapes.get(k)) for k in shapes if got.get(k) != tuple(shapes[k])][:5]}")
    from safetensors.torch import save_file

    half = {k: v.detach().to(torch.float16).contiguous() for k, v in sorted(tensors.items())}
    if not all(torch.isfinite(v).all() for v in half.values()):
        raise SystemExit(f"{source}: a value overflows fp16")
    with atomic_path(path) as tmp:
        # one metadata key: safetensors writes a multi-key metadata map in a random order
        save_file(half, str(tmp), metadata={"sha256": content_hash(half)})


# --------------------------------------------------------------------------- weights
def vendor_faststyle(src: Path, out: Path) -> list:
    rows = []
    for name, folder in FASTSTYLE.items():
        d = src / "weights" / "faststyle" / folder
        manifest = json.loads((d / "manifest.json").read_text())
        tensors = {}
        for var, entry in manifest.items():
            raw = np.fromfile(d / entry["filename"], dtype="<f4")
            tensors[var] = torch.from_numpy(raw.reshape(entry["shape"]).copy())
        p = out / "weights" / f"faststyle_{name}.safetensors"
        save_fp16(p, tensors, faststyle.tf_shapes(), f"faststyle/{folder}")
        rows.append((p, f"{ML5} @ models/style-transfer/{folder}/ (manifest.json + raw float32 variables)",
                     "MIT (repository); trained by ml5 with Engstrom's fast-style-transfer recipe"))
    return rows


def vendor_taef2(src: Path, out: Path) -> list:
    rows = []
    for part in ("encoder", "decoder"):
        sd = torch.load(src / "weights" / "taef2" / f"taef2_{part}.pth", map_location="cpu", weights_only=True)
        p = out / "weights" / f"taef2_{part}.safetensors"
        save_fp16(p, dict(sd), taef2.state_shapes(part), f"taef2_{part}.pth")
        rows.append((p, f"madebyollin/taesd @ taef2_{part}.pth", "MIT"))
    return rows


def vendor_microast(src: Path, out: Path) -> list:
    rows = []
    for part in microast.PARTS:
        sd = torch.load(src / "weights" / "microast" / f"{part}_iter_160000.pth.tar", map_location="cpu",
                        weights_only=True)
        p = out / "weights" / f"microast_{part}.safetensors"
        save_fp16(p, dict(sd), microast.state_shapes(part), f"microast/{part}")
        rows.append((p, MICROAST.format(part=part), "MIT, (c) 2022 Zhizhong Wang"))
    return rows


def vendor_vgg_r31(src: Path, out: Path) -> list:
    sd = torch.load(src / "weights" / "linearstyle-r31" / "vgg_r31.pth", map_location="cpu", weights_only=True)
    p = out / "weights" / "vgg_r31.safetensors"
    save_fp16(p, dict(sd), vgg_r31.state_shapes(), "linearstyle-r31/vgg_r31.pth")
    return [(p, VGG_R31, "BSD-2-Clause, (c) 2018 SunshineAtNoon; ILSVRC VGG weights CC BY 4.0")]


def check_darknet_topology(model: dict) -> None:
    """The Keras topology must be the one vstlib.nets.darknet hard-codes."""
    layers = model["modelTopology"]["model_config"]["config"]["layers"]
    convs, pools = [], set()
    for layer in layers:
        c = layer["config"]
        if layer["class_name"] == "Conv2D":
            assert c["padding"] == "same" and c["strides"] == [1, 1], c
            convs.append((c["filters"], c["kernel_size"][0], c["use_bias"]))
        elif layer["class_name"] == "MaxPooling2D":
            assert c["pool_size"] == [2, 2] and c["strides"] == [2, 2] and c["padding"] == "same", c
            pools.add(len(convs))
        elif layer["class_name"] == "BatchNormalization":
            assert abs(c["epsilon"] - darknet.BN_EPS) < 1e-9, c
        elif layer["class_name"] == "LeakyReLU":
            assert abs(c["alpha"] - darknet.LEAK) < 1e-6, c
    want = [(f, k, False) for f, k, _ in darknet.LAYERS] + [(darknet.N_CLASSES, 1, True)]
    want_pools = {i + 1 for i, (_, _, p) in enumerate(darknet.LAYERS) if p}
    if convs != want or pools != want_pools or layers[-1]["class_name"] != "GlobalAveragePooling2D":
        raise SystemExit(f"darknet-tiny model.json topology differs from vstlib.nets.darknet.LAYERS: {convs} pools {pools}")


def vendor_darknet(src: Path, out: Path) -> list:
    d = src / "weights" / "darknet-tiny"
    model = json.loads((d / "model.json").read_text())
    check_darknet_topology(model)
    tensors = {}
    for group in model["weightsManifest"]:
        buf = b"".join((d / name).read_bytes() for name in group["paths"])
        offset = 0
        for w in group["weights"]:
            assert w["dtype"] == "float32", w
            n = int(np.prod(w["shape"]))
            arr = np.frombuffer(buf, "<f4", count=n, offset=offset).reshape(w["shape"])
            tensors[w["name"]] = torch.from_numpy(arr.copy())
            offset += 4 * n
        if offset != len(buf):
            raise SystemExit(f"darknet-tiny group {group['paths']}: {len(buf) - offset} bytes left over")
    p = out / "weights" / "darknet_tiny.safetensors"
    save_fp16(p, tensors, darknet.tf_shapes(), "darknet-tiny/model.json")
    return [(p, f"{ML5} @ models/darknetclassifier/darknettiny/ (model.json + group*-shard* float32)",
             "MIT (repository); the original Darknet reference weights")]


# --------------------------------------------------------------------------- clips and paintings
def source_fps(path: Path) -> Fraction:
    if path.is_dir():
        return Fraction(FOLDER_FPS)
    import av

    with av.open(str(path)) as c:
        rate = c.streams.video[0].average_rate
    return Fraction(rate).limit_denominator(1001)


def write_mp4(path: Path, frames: np.ndarray, fps: Fraction) -> None:
    import av

    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="mp4") as c:
            s = c.add_stream("libx264", rate=fps)
            s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
            # one thread: x264's output then depends only on its input and options
            s.options = {"crf": str(CRF), "preset": "veryslow", "threads": "1"}
            for f in frames:
                for pkt in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                    c.mux(pkt)
            for pkt in s.encode():
                c.mux(pkt)


def vendor_clip(p_src: Path, p: Path, source: str, licence: str) -> tuple:
    """First N_FRAMES frames, short side SIZE, centre crop SIZE x SIZE -> mp4 ``p``; its provenance row."""
    frames = read_frames(p_src, N_FRAMES, SIZE)                     # (T,256,256,3) uint8
    fps = source_fps(p_src)
    write_mp4(p, frames, fps)
    return (p, source, licence, f"first {len(frames)} frames, {SIZE}x{SIZE} centre crop, {float(fps):g} fps, "
                                f"H.264 yuv444p CRF {CRF}")


def vendor_clips(src: Path, out: Path) -> list:
    return [vendor_clip(src / "clips" / name, out / "clips" / f"{Path(name).stem}.mp4", source, licence)
            for name, (source, licence) in CLIPS.items()]


def eval_clip_source(stem: str) -> str:
    sam2 = {"sam2-dog": "demo/data/gallery/01_dog.mp4", "sam2-juggle": "demo/data/gallery/05_default_juggle.mp4",
            "sam2-coffee": "demo/data/gallery/04_coffee.mp4", "sam2-blocks": "demo/data/gallery/03_blocks.mp4",
            "sam2-bedroom": "notebooks/videos/bedroom.mp4"}
    if stem in sam2:
        return f"facebookresearch/sam2 @ {sam2[stem]} @ 2b90b9f5ceec907a1c18123530e92e794ad901a4"
    if stem == "davis-tennis":
        return ("MCG-NKU/E2FGVI @ examples/tennis/00000-00039.png @ 709cbe319edc21b8a365a28e14cba595a93d62cf "
                "(DAVIS tennis, downscaled to 432x240)")
    return (f"MathLee/EOR-VOS @ DAVIS/JPEGImages/480p/{stem[len('davis-'):]}/00000-00039.jpg @ "
            "1bde4d5f936304c5ad69e301956e9d65082dfbc8")


def vendor_eval_clips(src: Path, out: Path) -> list:
    """The held-out evaluation clips (../shared/assets/clips-eval, 40-frame H.264 re-encodes)."""
    rows = []
    for p_src in sorted((src / "clips-eval").glob("*.mp4")):
        licence = next(v for k, v in EVAL_LICENCES.items() if p_src.stem.startswith(k))
        row = vendor_clip(p_src, out / "clips-eval" / p_src.name, eval_clip_source(p_src.stem), licence)
        rows.append(row[:3] + (row[3] + "; from the shared 40-frame H.264 CRF 18 re-encode",))
    if len(rows) != 16:
        raise SystemExit(f"{src / 'clips-eval'}: expected 16 clips, found {len(rows)}")
    return rows


def vendor_painting(p_src: Path, p: Path) -> str:
    """Long side <= PAINTING_SIDE (Lanczos, never upscaled), JPEG quality 90 -> ``p``; returns "WxH"."""
    from PIL import Image

    with Image.open(p_src) as img:
        img = img.convert("RGB")
        w, h = img.size
        s = min(1.0, PAINTING_SIDE / max(w, h))
        img = img.resize((round(w * s), round(h * s)), Image.Resampling.LANCZOS) if s < 1 else img
        with atomic_path(p) as tmp:
            img.save(tmp, format="JPEG", quality=JPEG_QUALITY)
    return f"{img.size[0]}x{img.size[1]}"


def vendor_styles(src: Path, out: Path) -> list:
    return [(out / "styles" / name, source, "public domain (painting)",
             vendor_painting(src / "styles" / name, out / "styles" / name)) for name, source in STYLES.items()]


def eval_style_sources(readme: str) -> dict:
    """styles-eval/README.md -> {file: "Artist, Title (year); repo @ path @ commit"} from its sections."""
    out = {}
    for section in readme.split("\n### ")[1:]:
        name, *lines = section.strip().splitlines()
        f = dict(re.match(r"- (\w+): (.*)", ln).groups() for ln in lines if re.match(r"- \w+: ", ln))
        where = re.sub(r" \(the snapshot's HEAD;[^)]*\)", "", f["source"]).split("; repository licence")[0]
        out[name.strip()] = f"{f['artist']}, {f['title']} ({f['year'].split(' (')[0]}); {where}"
    return out


def vendor_eval_styles(src: Path, out: Path) -> list:
    """The held-out evaluation paintings (evaluation only: never a default or demo style)."""
    sources = eval_style_sources((src / "styles-eval" / "README.md").read_text())
    files = sorted(p.name for p in (src / "styles-eval").glob("*.jpg"))
    if len(files) != 12 or sorted(sources) != files:
        raise SystemExit(f"{src / 'styles-eval'}: files {files} do not match its README {sorted(sources)}")
    return [(out / "styles-eval" / n, sources[n], "public domain (painting)",
             vendor_painting(src / "styles-eval" / n, out / "styles-eval" / n) + "; held out, evaluation only")
            for n in files]


# --------------------------------------------------------------------------- provenance
def provenance(out: Path, rows: list, command: str) -> Path:
    lines = ["# Vendored assets (made by `scripts/vendor_assets.py`; do not edit by hand)", "",
             "Real pretrained weights, clips and paintings the `cpu` profile runs on, converted and trimmed",
             f"from the workplace's `../shared/assets` (see its README.md) by `{command}`.",
             "The script is deterministic: rerunning it rewrites byte-identical files.", "",
             "| file | source (repository @ path) | licence | notes | bytes | sha256 |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        p, source, licence = row[:3]
        note = row[3] if len(row) > 3 else ("fp16 safetensors, source names and layouts, content sha256 in metadata"
                                            if p.suffix == ".safetensors" else "")
        lines.append(f"| {p.relative_to(out).as_posix()} | {source} | {licence} | {note} | {p.stat().st_size} | `{sha256(p)}` |")
    total = sum(r[0].stat().st_size for r in rows)
    lines += ["", f"Total shipped: {total} bytes ({total / 2 ** 20:.2f} MiB).", ""]
    return atomic_write_text(out / "PROVENANCE.md", "\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=paths.SHARED / "assets", help="the shared assets folder")
    ap.add_argument("--out", type=Path, default=paths.ASSETS, help="where the vendored files go")
    args = ap.parse_args(argv)
    if not (args.src / "README.md").is_file():
        print(f"{args.src}: shared assets not found. Fix: pass --src PATH/TO/shared/assets", file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    out = args.out.resolve()
    rows = (vendor_faststyle(args.src, out) + vendor_taef2(args.src, out) + vendor_darknet(args.src, out)
            + vendor_microast(args.src, out) + vendor_vgg_r31(args.src, out)
            + vendor_clips(args.src, out) + vendor_styles(args.src, out)
            + vendor_eval_clips(args.src, out) + vendor_eval_styles(args.src, out))
    provenance(out, rows, "python scripts/vendor_assets.py")
    total = sum(r[0].stat().st_size for r in rows) + (out / "PROVENANCE.md").stat().st_size
    for r in rows:
        print(f"{r[0].stat().st_size:>10}  {r[0].relative_to(out).as_posix()}")
    print(f"total shipped: {total} bytes = {total / 1e6:.2f} MB ({len(rows)} files + PROVENANCE.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
