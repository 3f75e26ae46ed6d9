"""Generated tables and figures: values come from data, smoke outputs are marked."""
import numpy as np
import torch

from vstlib import paths
from vstlib.evaluation import figures, tables


def test_latex_table_bolds_best_per_split_and_marks_smoke():
    rows = [{"method": "baseline", "split": "train", "content": 0.5, "style": 2.0, "temporal": 0.3},
            {"method": "policy", "split": "train", "content": 0.4, "style": 2.5, "temporal": 0.1},
            {"method": "baseline", "split": "test", "content": 0.2, "style": 1.0, "temporal": 0.3},
            {"method": "policy", "split": "test", "content": 0.6, "style": 0.9, "temporal": 0.2}]
    tex = tables.latex_table(rows, ["method", "split", "content", "style", "temporal"], "cap", "tab:x",
                             "smoke", best={"content": "min", "style": "min", "temporal": "min"})
    body = [line for line in tex.splitlines() if line.endswith(r"\\")][1:]
    assert body[0] == r"baseline & train & 0.5000 & \textbf{2.0000} & 0.3000 \\"
    assert body[1] == r"policy & train & \textbf{0.4000} & 2.5000 & \textbf{0.1000} \\"
    assert body[3] == r"policy & test & 0.6000 & \textbf{0.9000} & \textbf{0.2000} \\"
    assert "smoke profile" in tex
    assert "smoke profile" not in tables.latex_table(rows, ["method", "split", "content"], "c", "t", "paper")


def test_flow_colour_wheel_direction():
    # rightward flow and leftward flow get different hues; zero flow is white
    f = torch.zeros(2, 4, 8)
    f[0, :, :4], f[0, :, 4:] = 3.0, -3.0
    rgb = figures.flow_to_rgb(f)
    assert rgb.shape == (4, 8, 3)
    assert not np.allclose(rgb[0, 0], rgb[0, 7])
    assert np.allclose(figures.flow_to_rgb(torch.zeros(2, 2, 2)), 1.0)


def test_saved_smoke_figure_has_banner_and_is_closed(vst_home):
    import matplotlib.pyplot as plt

    fig = figures.image_grid({"a": [np.zeros((4, 4, 3)), np.ones((4, 4, 3))]})
    texts = []
    fig.text = lambda *a, **k: texts.append(a[2])
    png, pdf = figures.save(fig, "grid", "smoke")
    assert png.read_bytes()[:4] == b"\x89PNG" and pdf.read_bytes()[:4] == b"%PDF"
    assert png.parent == paths.figures_dir("smoke") and vst_home in png.parents   # never the committed figures/
    assert texts and "smoke profile" in texts[0]
    assert not plt.get_fignums()


def test_saved_figures_are_byte_identical_run_to_run(tmp_path, monkeypatch):
    """No timestamps or tool versions in PNG/PDF metadata: equal figures -> equal bytes (clean git diff)."""
    import time

    def draw(folder):
        monkeypatch.setenv("VSTLIB_HOME", str(folder))
        fig = figures.image_grid({"a": [np.random.default_rng(0).random((8, 8, 3))] * 2}, col_labels=["t=0", "t=1"])
        fig.axes[0].plot([0, 3], [0, 5])
        return figures.save(fig, "same", "smoke")

    first = draw(tmp_path / "a")
    time.sleep(1.1)                                                   # PDF dates have 1 s resolution
    second = draw(tmp_path / "b")
    for p, q in zip(first, second):
        assert p.read_bytes() == q.read_bytes(), p.name
    pdf = first[1].read_bytes()
    assert b"/CreationDate" not in pdf and b"/Producer" not in pdf and b"/Creator" not in pdf
    assert b"Software" not in first[0].read_bytes()                   # PNG tEXt chunk


def test_figure_banner_marks_reduced_runs(tmp_path, monkeypatch):
    from vstlib.files import atomic_write_json

    monkeypatch.setenv("VSTLIB_HOME", str(tmp_path))
    assert tables.marked("paper") is None                             # a full paper run: no banner
    atomic_write_json(paths.run_config_path("paper"), {"overrides": ["train.epochs=1"]})
    assert tables.marked("paper") == "paper profile; reduced run: train.epochs=1"
    assert tables.marked("smoke") == tables.SMOKE_NOTE


def _summary():
    import pandas as pd

    rows = []
    for group in ("seen", "unseen"):
        for b, (x, y) in zip((0.75, 0.25, 0.5), ((-9.0, -40.0), (-2.0, -15.0), (-5.0, -25.0))):   # out of order
            rows.append(dict(method="latent_blend", setting=f"b={b}", style_group=group, n_clips=18,
                             fidelity_ssim_delta=x, warp_indep_delta=y))
        rows.append(dict(method="policy", setting="pathwise", style_group=group, n_clips=18, fidelity_ssim_delta=-4.0,
                         warp_indep_delta=-50.0, fidelity_ssim_lo=-6.0, fidelity_ssim_hi=-3.0,
                         warp_indep_lo=-55.0, warp_indep_hi=-41.0))
        rows.append(dict(method="input", setting="", style_group=group, n_clips=18, fidelity_ssim_delta=-95.0,
                         warp_indep_delta=-99.0, fidelity_ssim_lo=-95.0, fidelity_ssim_hi=-95.0,
                         warp_indep_lo=-99.0, warp_indep_hi=-99.0))
    return pd.DataFrame(rows)


def test_tradeoff_draws_frontiers_in_order_and_points_with_their_intervals():
    """Two panels (seen, unseen); a frontier is one line through its settings in order of fidelity;
    a method is a point whose error bars are its interval; the input (off the chart) is left out."""
    import matplotlib.pyplot as plt

    fig = figures.tradeoff(_summary())
    assert len([a for a in fig.axes if a.get_title()]) == 2
    ax = fig.axes[0]
    (front,) = [ln for ln in ax.get_lines() if ln.get_label() == "latent_blend"]
    x, y = front.get_data()
    assert list(x) == [-9.0, -5.0, -2.0] and list(y) == [-40.0, -25.0, -15.0]
    labels = [t.get_text() for t in ax.texts]
    assert sorted(labels) == ["0.25", "0.5", "0.75"]
    bars = [c for c in ax.containers if c.get_label() == "policy"]
    assert len(bars) == 1
    (xbar, ybar) = [np.asarray(seg.get_segments()) for seg in bars[0].lines[2]]
    assert np.allclose(xbar[0][:, 0], [-6.0, -3.0]) and np.allclose(ybar[0][:, 1], [-55.0, -41.0])
    assert not [c for c in ax.containers if c.get_label() == "input"]
    plt.close(fig)


def test_sample_efficiency_reads_every_learner_with_one_normalised_reward():
    """Hand-computed: style 2x the baseline's, content equal, temporal half: with weights 10/1/30
    the gain over the baseline is -(10 * 1 + 0 + 30 * -0.5) = +5; a skipped update's reward is left out;
    one point per clip visit at the running sum of its reward queries (REINFORCE renders a whole
    clip in the visit's first update)."""
    import matplotlib.pyplot as plt
    import pandas as pd

    log = pd.DataFrame({"epoch": [0, 0, 0, 0, 1], "clip": ["a", "a", "b", "b", "a"],
                        "style": [2.0, 2.0, 9.0, 1.0, 1.0], "base_style": [1.0] * 5,
                        "content": [3.0] * 5, "base_content": [3.0] * 5,
                        "temporal": [0.5, 0.5, 9.0, 1.0, 0.5], "base_temporal": [1.0] * 5,
                        "queries": [8, 0, 8, 0, 8], "skipped": [False, False, True, False, False]})
    fig = figures.sample_efficiency({"a": [log, log]}, (10.0, 1.0, 30.0))
    (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith("a")]
    x, y = line.get_data()
    assert list(x) == [8, 16, 24] and np.allclose(y, [5.0, 0.0, 15.0])       # visits a, b (the skipped update
    # counts its queries, not its reward), a
    assert line.get_label() == "a (2 seeds)"
    plt.close(fig)
