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


def _learners_frame():
    import pandas as pd

    rows = [dict(method="baseline", seed=None, param="", d_warp_error=0.0, d_style=0.0, d_content=0.0)]
    for m, w, y in (("policy", None, -36.0), ("weights_10", 10, -27.0), ("weights_50", 50, -41.0)):
        for s in (0, 1, 2):
            rows.append(dict(method=m, seed=s, param=f"weights 10/1/{w}" if w else "pathwise",
                             d_warp_error=y + s, d_style=-10.0 + s, d_content=-1.0 - s))
    rows.append(dict(method="frozen_first", seed=None, param="", d_warp_error=51.0, d_style=-1.0, d_content=14.0))
    return pd.DataFrame(rows).assign(split="test")


def test_pareto_plots_warp_against_style_and_content_with_the_frontier():
    """Issue 11: warping error against style AND against content, every method, the main learner's
    points over the temporal weight joined in order of their warping error."""
    import matplotlib.pyplot as plt

    fig = figures.pareto(_learners_frame())
    ax_style, ax_content = fig.axes[:2]
    assert "style" in ax_style.get_xlabel() and "content" in ax_content.get_xlabel()
    for ax, key, mean in ((ax_style, "style", -9.0), (ax_content, "content", -2.0)):
        front = [ln for ln in ax.get_lines() if ln.get_label().startswith("frontier")]
        assert len(front) == 1
        x, y = front[0].get_data()
        assert list(y) == [-40.0, -35.0, -26.0] and list(x) == [mean] * 3    # w=50, policy (30), w=10
    labels = [t.get_text() for t in ax_style.texts]
    assert sorted(labels) == ["w=10", "w=50"]
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
