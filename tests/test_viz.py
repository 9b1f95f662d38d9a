"""Data figures (``viz``) checked against hand-computed oracles on tiny volumes: which planes are shown, which arrays
and display windows each panel holds, the overlay and its key, and which voxels feed each intensity violin."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pytest

from robustseg_lib import viz

SHAPE = (5, 6, 7)  # all sides different, so a wrong axis or a missing transpose changes the panel's shape
MODS = ["t1", "t1ce", "t2", "flair"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _planes_case() -> tuple[np.ndarray, np.ndarray]:
    """Random image with a zero border (background) and three tumour voxels of classes 1, 2, 3.

    Hand oracle of the tumour centroid: voxels (1,1,1), (1,2,5), (2,4,5) -> mean (4/3, 7/3, 11/3) = (1.33, 2.33, 3.67),
    rounded to (1, 2, 4) (floor would give z=3, ceil would give x=2 and y=3).
    """
    rng = np.random.default_rng(0)
    img = rng.uniform(1.0, 9.0, size=(4, *SHAPE))
    img[:, 0] = 0.0  # background slab: excluded from the display window
    img[2] *= 10.0  # a modality with a very different range
    cls = np.zeros(SHAPE, np.int64)
    cls[1, 1, 1], cls[1, 2, 5], cls[2, 4, 5] = 1, 2, 3
    return img, cls


def _hand_planes(vol: np.ndarray, centre: tuple[int, int, int]) -> list[np.ndarray]:
    """The three planes written out by hand: sagittal vol[x], coronal vol[:, y], axial vol[:, :, z], transposed."""
    x, y, z = centre
    return [vol[x, :, :].T, vol[:, y, :].T, vol[:, :, z].T]


def test_case_planes_cut_through_the_rounded_tumour_centroid() -> None:
    """Each grey panel is the hand-sliced plane through (1, 2, 4) of its own modality (transposed, origin lower)."""
    img, cls = _planes_case()
    fig = viz.plot_case_planes(img, cls)
    axes = np.asarray(fig.axes).reshape(3, 5)
    for p in range(3):
        for m in range(4):
            im = axes[p, m].images[0]
            assert len(axes[p, m].images) == 1
            np.testing.assert_array_equal(np.asarray(im.get_array()), _hand_planes(img[m], (1, 2, 4))[p])
            assert im.origin == "lower"
            assert im.get_cmap().name == "gray"
        # the overlay column shows FLAIR (modality 3) underneath
        np.testing.assert_array_equal(np.asarray(axes[p, 4].images[0].get_array()), _hand_planes(img[3], (1, 2, 4))[p])
    assert [axes[p, 0].get_ylabel() for p in range(3)] == ["sagittal 1", "coronal 2", "axial 4"]


def test_case_planes_without_tumour_cut_through_the_volume_centre() -> None:
    """No tumour: planes through shape // 2 = (2, 3, 3), by hand."""
    img, _ = _planes_case()
    fig = viz.plot_case_planes(img, np.zeros(SHAPE, np.int64))
    axes = np.asarray(fig.axes).reshape(3, 5)
    assert [axes[p, 0].get_ylabel() for p in range(3)] == ["sagittal 2", "coronal 3", "axial 3"]
    for p in range(3):
        np.testing.assert_array_equal(np.asarray(axes[p, 1].images[0].get_array()), _hand_planes(img[1], (2, 3, 3))[p])
        lab = axes[p, 4].images[1].get_array()
        assert np.ma.getmaskarray(lab).all()  # nothing to overlay


def test_case_planes_display_window_is_the_percentiles_of_the_nonzero_voxels() -> None:
    """clim of every grey panel = numpy percentile (0.5, 99.5) of that modality's non-zero voxels; an all-zero
    modality gets the window (0, 1)."""
    img, cls = _planes_case()
    img[0] = 0.0
    fig = viz.plot_case_planes(img, cls)
    axes = np.asarray(fig.axes).reshape(3, 5)
    for m in range(4):
        vol = img[m]
        want = (0.0, 1.0) if m == 0 else tuple(np.percentile(vol[vol != 0], [0.5, 99.5]))
        for p in range(3):
            np.testing.assert_allclose(axes[p, m].images[0].get_clim(), want)
    flair = img[3][img[3] != 0]
    for p in range(3):
        np.testing.assert_allclose(axes[p, 4].images[0].get_clim(), np.percentile(flair, [0.5, 99.5]))
    # the window really excludes the zero background (it would start near 0 otherwise)
    assert axes[0, 3].images[0].get_clim()[0] > 0.5


def test_case_planes_overlay_masks_the_background_and_uses_the_class_colours() -> None:
    """Overlay = the hand-sliced class plane, masked exactly where it is 0, drawn with ListedColormap
    (transparent, NCR, ED, ET) on the fixed range 0..3 at the requested alpha."""
    img, cls = _planes_case()
    fig = viz.plot_case_planes(img, cls, alpha=0.7)
    axes = np.asarray(fig.axes).reshape(3, 5)
    # hand oracle: the axial plane z=4 holds no tumour, the sagittal plane x=1 holds classes 1 and 2
    expected_classes = [{1, 2}, {2}, set()]
    for p in range(3):
        assert len(axes[p, 4].images) == 2
        ov = axes[p, 4].images[1]
        arr = ov.get_array()
        hand = _hand_planes(cls, (1, 2, 4))[p]
        np.testing.assert_array_equal(np.ma.getdata(arr), hand)
        np.testing.assert_array_equal(np.ma.getmaskarray(arr), hand == 0)
        assert set(np.ma.compressed(arr).tolist()) == expected_classes[p]
        assert ov.get_clim() == (0.0, 3.0)
        assert ov.get_alpha() == pytest.approx(0.7)
        assert ov.origin == "lower"
        cmap = ov.get_cmap()
        assert cmap.N == 4
        assert mcolors.to_rgba(cmap(0)) == (0.0, 0.0, 0.0, 0.0)  # "none": background transparent
        for k, name in enumerate(("NCR", "ED", "ET"), start=1):
            assert mcolors.to_hex(cmap(k)) == viz.CLASS_COLORS[name]


def test_case_planes_titles_labels_and_key() -> None:
    """Column titles only on the first row, plane labels only on the first column, no ticks, the figure title, and a
    key whose labels and colours are CLASS_COLORS in order."""
    img, cls = _planes_case()
    fig = viz.plot_case_planes(img, cls, title="case 7")
    axes = np.asarray(fig.axes).reshape(3, 5)
    assert [ax.get_title() for ax in axes[0]] == [*MODS, "flair + labels"]
    assert all(ax.get_title() == "" for ax in axes[1:].ravel())
    assert all(ax.get_ylabel() == "" for ax in axes[:, 1:].ravel())
    assert all(len(ax.get_xticks()) == 0 and len(ax.get_yticks()) == 0 for ax in axes.ravel())
    assert fig.get_suptitle() == "case 7"
    (leg,) = fig.legends
    assert [t.get_text() for t in leg.get_texts()] == ["NCR", "ED", "ET"]
    assert [mcolors.to_hex(h.get_facecolor()) for h in leg.legend_handles] == ["#e41a1c", "#4daf4a", "#ffd92f"]
    assert viz.plot_case_planes(img, cls).get_suptitle() == ""  # no title given: none drawn
    fig.canvas.draw()  # the key has a strip of its own, below every panel and its labels
    r = fig.canvas.get_renderer()
    assert 0 <= leg.get_window_extent(r).y0 and leg.get_window_extent(r).y1 <= min(ax.get_tightbbox(r).y0 for ax in fig.axes)


def test_case_planes_accepts_the_alpha_bounds_and_rejects_bad_inputs() -> None:
    """alpha 0 and 1 are valid; every ValueError path names the problem."""
    img, cls = _planes_case()
    for a in (0.0, 1.0):
        fig = viz.plot_case_planes(img, cls, alpha=a)
        assert fig.axes[4].images[1].get_alpha() == a
    for a in (-0.01, 1.01):
        with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
            viz.plot_case_planes(img, cls, alpha=a)
    with pytest.raises(ValueError, match=r"image must be \(4, X, Y, Z\)"):
        viz.plot_case_planes(img[:3], cls)
    with pytest.raises(ValueError, match=r"image must be \(4, X, Y, Z\)"):
        viz.plot_case_planes(img[0], cls)
    with pytest.raises(ValueError, match="must equal the image's spatial shape"):
        viz.plot_case_planes(img, cls[:, :, :6])
    bad = cls.copy()
    bad[0, 0, 0] = 4  # a BraTS label, not a class
    with pytest.raises(ValueError, match="class map in 0..3"):
        viz.plot_case_planes(img, bad)
    bad[0, 0, 0] = -1
    with pytest.raises(ValueError, match="class map in 0..3"):
        viz.plot_case_planes(img, bad)
    cls3 = cls.copy()
    cls3[0, 0, 0] = 3  # the largest valid class is accepted
    assert len(viz.plot_case_planes(img, cls3).axes) == 15


# ------------------------------------------------------------------------------------------------ intensities
def _intensity_case(n_cases: int = 2, shape: tuple[int, int, int] = (3, 4, 5)):
    """Images whose modality-m, class-k brain voxels equal 10*m + k + u, u a per-voxel offset in [0, 0.5) shared by
    the four modalities (distinct for every voxel of every case); voxels outside the brain are -100 (tumour ones too).

    Hand counts per class over both cases (brain only): class 1 (NCR): 3 voxels, class 2 (ED): 8, class 3 (ET): 0,
    healthy: the rest of the brain.
    """
    n_vox = int(np.prod(shape))
    u = (np.arange(n_cases * n_vox).reshape(n_cases, *shape) * 0.5 / (n_cases * n_vox))
    cls = np.zeros((n_cases, *shape), np.int64)
    brain = np.ones((n_cases, *shape), bool)
    brain[:, 0, 0, :] = False  # 5 non-brain voxels per case
    cls[0, 1, 1, :2] = 1  # 2 NCR in case 0
    cls[1, 2, 3, 4] = 1  # 1 NCR in case 1
    cls[1, 1, 2:3, :] = 2  # 5 ED in case 1
    cls[0, 2, 0, 1:4] = 2  # 3 ED in case 0
    cls[0, 0, 0, 0] = 3  # an ET voxel outside the brain: not counted
    images = np.empty((n_cases, 4, *shape))
    for m in range(4):
        images[:, m] = 10 * m + cls + u
    images[:, :, ~brain[0]] = -100.0
    return images, cls, brain, u


def _spy_violins(monkeypatch, draw: bool = True) -> list:
    """Record the keyword arguments (data frame, order...) of each seaborn.violinplot call (one per modality panel);
    with ``draw=False`` nothing is drawn (faster, for tests of the data only)."""
    import seaborn

    calls: list = []
    real = seaborn.violinplot

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs) if draw else kwargs.get("ax")

    monkeypatch.setattr(seaborn, "violinplot", spy)
    return calls


def test_violins_use_the_brain_voxels_of_each_class_from_the_right_modality(monkeypatch) -> None:
    """Per modality panel and class: the values are exactly 10*m + k + u of the in-brain voxels of that class (hand
    counts 3 NCR, 8 ED, no ET), so the violin's extent (cut=0) lies in [10m+k, 10m+k+0.5]; ET is absent."""
    images, cls, brain, u = _intensity_case()
    calls = _spy_violins(monkeypatch)
    fig = viz.plot_intensity_distributions(images, cls, brain, max_voxels=1000)
    axes = fig.axes
    assert len(axes) == 4 and len(calls) == 4
    n_healthy = int(brain.sum()) - 3 - 8
    for m, (ax, call) in enumerate(zip(axes, calls)):
        assert ax.get_title() == MODS[m]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["healthy brain", "NCR", "ED"]
        sub = call["data"]
        assert set(sub["modality"]) == {MODS[m]}
        assert call["order"] == ["healthy brain", "NCR", "ED"]
        for k, name in enumerate(("healthy brain", "NCR", "ED")):
            vals = np.sort(sub.loc[sub["class"] == name, "intensity"].to_numpy())
            want = np.sort(10 * m + k + u[brain & (cls == k)])
            assert len(vals) == (n_healthy, 3, 8)[k]
            np.testing.assert_allclose(vals, want)
        # drawn violins: one per class present, each spanning its own class's value band
        assert len(ax.collections) == 3
        for k, coll in enumerate(ax.collections):
            y = coll.get_paths()[0].vertices[:, 1]
            assert 10 * m + k - 1e-9 <= y.min() and y.max() < 10 * m + k + 0.5
    assert axes[0].get_ylabel() == "intensity (z-score)"
    assert all(ax.get_xlabel() == "" for ax in axes)
    # one shared intensity axis
    assert all(axes[0].get_shared_y_axes().joined(axes[0], ax) for ax in axes[1:])


def test_violin_colours_follow_the_class_palette() -> None:
    """Violin face colours: grey #999999 for healthy brain, then CLASS_COLORS (seaborn desaturates slightly, so the
    closest palette entry must be the class's own)."""
    images, cls, brain, _ = _intensity_case()
    cls[0, 2, 2, 2:4] = 3  # two ET voxels in the brain (one point draws no violin): all four classes present
    fig = viz.plot_intensity_distributions(images, cls, brain)
    pal = ["#999999", *viz.CLASS_COLORS.values()]
    ref = np.array([mcolors.to_rgb(c) for c in pal])
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["healthy brain", "NCR", "ED", "ET"]
        got = [np.asarray(c.get_facecolor())[0, :3] for c in ax.collections]
        assert [int(np.argmin(((ref - g) ** 2).sum(1))) for g in got] == [0, 1, 2, 3]
    assert fig.axes[0].get_ylabel() == "intensity (z-score)"  # what the preprocessed images are
    assert viz.plot_intensity_distributions(images, cls, brain, unit="raw").axes[0].get_ylabel() == "intensity (raw)"


def test_violins_sample_at_most_max_voxels_per_class_without_replacement_and_repeatably(monkeypatch) -> None:
    """Per class min(count, max_voxels) distinct voxels (hand counts: healthy > 4, NCR 3, ED 8 -> 4, 3, 4), the same
    voxels in every modality, the same draw for the same seed and a different one for another seed."""
    images, cls, brain, u = _intensity_case()
    calls = _spy_violins(monkeypatch, draw=False)
    viz.plot_intensity_distributions(images, cls, brain, max_voxels=4, seed=3)
    viz.plot_intensity_distributions(images, cls, brain, max_voxels=4, seed=3)
    viz.plot_intensity_distributions(images, cls, brain, max_voxels=4, seed=4)
    assert len(calls) == 12
    draws = []
    for run in range(3):
        chosen = {}
        for m in range(4):
            sub = calls[4 * run + m]["data"]
            for k, name in enumerate(("healthy brain", "NCR", "ED")):
                v = sub.loc[sub["class"] == name, "intensity"].to_numpy()
                assert len(v) == (4, 3, 4)[k]
                off = np.sort(v - 10 * m - k)  # back to the voxel offsets u
                assert len(np.unique(off)) == len(off)  # no voxel drawn twice
                assert np.isin(np.round(off, 12), np.round(u[brain & (cls == k)], 12)).all()
                if m == 0:
                    chosen[name] = off
                else:
                    np.testing.assert_allclose(off, chosen[name])  # same voxels in every modality
        draws.append(chosen)
    for name in draws[0]:
        np.testing.assert_allclose(draws[0][name], draws[1][name])
    assert any(not np.allclose(draws[0][n], draws[2][n]) for n in ("healthy brain", "ED"))


def test_violins_take_a_single_image_and_any_nonzero_brain_mask(monkeypatch) -> None:
    """A (4, X, Y, Z) image is one case; a non-bool mask counts its non-zero voxels as brain (here 0/2 ints)."""
    images, cls, brain, u = _intensity_case()
    calls = _spy_violins(monkeypatch, draw=False)
    fig = viz.plot_intensity_distributions(images[0], cls[0], brain[0].astype(np.int64) * 2, max_voxels=10_000)
    assert len(fig.axes) == 4
    sub = calls[0]["data"]
    # hand counts in case 0: 2 NCR, 3 ED, 60 - 5 non-brain - 5 tumour = 50 healthy
    assert [int((sub["class"] == n).sum()) for n in ("healthy brain", "NCR", "ED")] == [50, 2, 3]
    assert sub["intensity"].min() >= 0.0  # no non-brain (-100) voxel


def test_violins_without_brain_voxels_say_so() -> None:
    """An empty brain mask: four panels each with the single text 'no brain voxels', no violins."""
    images, cls, brain, _ = _intensity_case()
    fig = viz.plot_intensity_distributions(images, cls, np.zeros_like(brain))
    assert len(fig.axes) == 4
    for ax in fig.axes:
        assert [t.get_text() for t in ax.texts] == ["no brain voxels"]
        assert len(ax.collections) == 0


def test_violins_reject_bad_inputs() -> None:
    """Each ValueError path names the problem; max_voxels=1 is the smallest valid sample."""
    images, cls, brain, _ = _intensity_case()
    with pytest.raises(ValueError, match=r"images must be \(N, 4, X, Y, Z\)"):
        viz.plot_intensity_distributions(images[:, :3], cls, brain)
    with pytest.raises(ValueError, match=r"images must be \(N, 4, X, Y, Z\)"):
        viz.plot_intensity_distributions(images[0, 0], cls[0], brain[0])
    with pytest.raises(ValueError, match="must be \\(N, X, Y, Z\\) matching"):
        viz.plot_intensity_distributions(images, cls[:1], brain)
    with pytest.raises(ValueError, match="must be \\(N, X, Y, Z\\) matching"):
        viz.plot_intensity_distributions(images, cls, brain[:, :, :3])
    with pytest.raises(ValueError, match="max_voxels must be >= 1, got 0"):
        viz.plot_intensity_distributions(images, cls, brain, max_voxels=0)
    fig = viz.plot_intensity_distributions(images, cls, brain, max_voxels=1)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["healthy brain", "NCR", "ED"]


def test_robustness_curve_counts_each_case_once_at_eps_0() -> None:
    """A model's clean rows are its eps-0 point; the attack's own eps-0 rows (the same predictions in a real table)
    are left out, or each case would count twice there and the band would be about sqrt(2) too narrow. Oracle: the
    attack's eps-0 rows are given other values here, so the plotted mean shows which rows were used (clean mean 0.8
    by hand; 0.45 if both were pooled)."""
    import pandas as pd

    from robustseg_lib.viz_stats import plot_robustness_curves

    rows = [("clean", 0.0, [0.9, 0.8, 0.7]), ("fgsm", 0.0, [0.1, 0.1, 0.1]), ("fgsm", 0.1, [0.5, 0.4, 0.3])]
    t = pd.DataFrame([{"case_id": f"c{i}", "model": "baseline", "attack": a, "eps": e, "region": "WT", "dice": v[i]}
                      for a, e, v in rows for i in range(3)])
    line = [ln for ln in plot_robustness_curves(t, n_boot=20).get_axes()[0].lines if len(ln.get_xdata())][0]
    np.testing.assert_allclose(line.get_xdata(), [0.0, 0.1])
    np.testing.assert_allclose(line.get_ydata(), [0.8, 0.4])


def test_statistics_figures_render_themselves_for_jupyter() -> None:
    """viz_stats figures are built without pyplot, so the inline backend's display hook does not know them, and
    matplotlib-inline registers its PNG printer only after ``%matplotlib inline``: IPython's own formatter (the
    oracle, as a kernel runs it) must still find a PNG, or ``display(fig)`` shows ``<Figure size ...>``."""
    import pandas as pd
    from IPython.core.formatters import DisplayFormatter

    from robustseg_lib.viz_stats import plot_robustness_curves

    t = pd.DataFrame([{"case_id": f"c{i}", "model": "baseline", "attack": a, "eps": e, "region": "WT", "dice": d}
                      for a, e, d in (("clean", 0.0, 0.9), ("fgsm", 0.1, 0.5)) for i in range(3)])
    data, _ = DisplayFormatter().format(plot_robustness_curves(t, n_boot=10))
    assert data["image/png"][:8] == b"\x89PNG\r\n\x1a\n"


def test_robustness_curves_refuse_attacks_without_rows() -> None:
    """attacks=["pgd"] (absent), a diagnostic label without include_diagnostics, or a bare string ("fgsm" read as
    the labels f, g, s, m) drew panels of clean points titled with attacks that have no rows: ValueErrors naming
    attacks. The valid choice still gives its one panel."""
    import pandas as pd

    from robustseg_lib.viz_stats import plot_robustness_curves

    rows = [("clean", 0.0), ("fgsm", 0.1), ("transfer_fgsm", 0.1)]
    t = pd.DataFrame([{"case_id": f"c{i}", "model": "baseline", "attack": a, "eps": e, "region": "WT", "dice": 0.5}
                      for a, e in rows for i in range(3)])
    with pytest.raises(ValueError, match=r"attacks: no WT rows for \['pgd'\]; available: \['fgsm'\]"):
        plot_robustness_curves(t, attacks=["fgsm", "pgd"], n_boot=10)
    with pytest.raises(ValueError, match="attacks: .*include_diagnostics=True"):
        plot_robustness_curves(t, attacks=["transfer_fgsm"], n_boot=10)
    with pytest.raises(ValueError, match="attacks: expected a sequence"):
        plot_robustness_curves(t, attacks="fgsm", n_boot=10)
    assert [ax.get_title() for ax in plot_robustness_curves(t, attacks=["fgsm"], n_boot=10).get_axes()] == ["fgsm"]


def test_violins_refuse_raw_brats_labels_and_non_class_values() -> None:
    """Raw BraTS labels (ET = 4) were accepted and their voxels silently left out of every violin (only 0..3 are
    pooled); a NaN or 1.5 likewise. Same refusal as plot_case_planes, which also refuses NaN and 1.5 now (NaN passed
    its min/max test)."""
    images, cls, brain, _ = _intensity_case()
    img, pc = _planes_case()
    for value in (4, 1.5, np.nan):
        bad = cls.astype(float)
        bad[0, 0, 0, 0] = value
        with pytest.raises(ValueError, match="classes must be a class map in 0..3"):
            viz.plot_intensity_distributions(images, bad, brain)
        badp = pc.astype(float)
        badp[0, 0, 0] = value
        if value != 4:  # 4 was refused before
            with pytest.raises(ValueError, match="classes must be a class map in 0..3"):
                viz.plot_case_planes(img, badp)
    assert plt.get_fignums() == []
    assert len(viz.plot_case_planes(img, pc.astype(np.float32)).axes) == 15  # integer-valued floats are fine
