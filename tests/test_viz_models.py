"""Figures of predictions and attacks: the overlay shows the slice with the most tumour, and a colour key names the classes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

from robustseg_lib import viz_models as VM


def _case(rng: np.random.Generator, z_tumour: int = 5) -> tuple[np.ndarray, np.ndarray]:
    img = rng.normal(size=(4, 8, 8, 8)).astype(np.float32)
    lab = np.zeros((8, 8, 8), dtype=np.int64)
    lab[2:5, 2:6, z_tumour] = 2  # ED: most tumour on this axial slice
    lab[3, 3, z_tumour] = 3
    lab[2, 2, 1] = 1  # a little NCR elsewhere
    return img, lab


def _legend_labels(fig: plt.Figure) -> list[str]:
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


def test_prediction_figure_shows_the_tumour_slice_and_a_class_key() -> None:
    img, lab = _case(np.random.default_rng(0))
    pred = lab.copy()
    pred[lab == 3] = 1
    fig = VM.plot_predictions(img[None], lab[None], {"net": pred[None]}, case_ids=["c0"])
    assert _legend_labels(fig) == ["NCR", "ED", "ET"]
    # each key colour is the overlay colour of its class
    colours = [tuple(h.get_facecolor()) for leg in fig.legends for h in leg.legend_handles]
    assert colours == [tuple(matplotlib.colors.to_rgba(VM.LABEL_CMAP.colors[i])) for i in (1, 2, 3)]
    truth_ax, pred_ax = fig.axes[0], fig.axes[1]
    # hand oracle: slice 5 holds 12 tumour voxels, slice 1 one; the overlay is that slice, transposed for display
    np.testing.assert_array_equal(np.asarray(truth_ax.images[1].get_array()), lab[:, :, 5].T)
    np.testing.assert_array_equal(np.asarray(pred_ax.images[1].get_array()), pred[:, :, 5].T)
    np.testing.assert_allclose(np.asarray(truth_ax.images[0].get_array()), img[3, :, :, 5].T)  # FLAIR underneath
    plt.close(fig)


def test_attack_example_and_gallery_carry_the_key() -> None:
    img, lab = _case(np.random.default_rng(1), z_tumour=6)
    adv = img + 0.1
    fig = VM.plot_attack_example(img, adv, lab, lab, np.zeros_like(lab), title="t")
    assert _legend_labels(fig) == ["NCR", "ED", "ET"]
    np.testing.assert_allclose(np.asarray(fig.axes[2].images[0].get_array()), (adv - img)[3, :, :, 6].T, rtol=1e-6)
    plt.close(fig)
    g = {"image": img, "truth": lab, "case_id": "c1", "panels": {("baseline", "clean"): lab, ("baseline", "fgsm"): lab * 0}}
    fig = VM.plot_gallery(g)
    assert _legend_labels(fig) == ["NCR", "ED", "ET"]
    plt.close(fig)


def _key_clear_of_the_panels(fig: plt.Figure) -> bool:
    """Drawn, the colour key lies inside the figure and below every panel with its title (pixel boxes)."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    (leg,) = fig.legends
    key = leg.get_window_extent(r)
    lowest = min(ax.get_tightbbox(r).y0 for ax in fig.axes if ax.get_visible())
    return key.y0 >= 0 and key.y1 <= lowest


def test_the_key_never_covers_a_panel_at_any_figure_size() -> None:
    """One case and one model (the smallest figure, 5.2 × 2.6 in) up to three cases and a gallery: the key keeps a
    strip of its own. A fixed 5 % strip (tight_layout's rect) was too short for the smallest figures."""
    img, lab = _case(np.random.default_rng(3))
    for n, models in ((1, 1), (1, 3), (3, 2)):
        fig = VM.plot_predictions(np.repeat(img[None], n, 0), np.repeat(lab[None], n, 0),
                                  {f"m{k}": np.repeat(lab[None], n, 0) for k in range(models)})
        assert _key_clear_of_the_panels(fig), (n, models)
        plt.close(fig)
    fig = VM.plot_attack_example(img, img + 0.1, lab, lab, lab, title="FGSM eps 0.1")
    assert _key_clear_of_the_panels(fig)
    plt.close(fig)
    fig = VM.plot_gallery({"image": img, "truth": lab, "case_id": "c", "panels": {("baseline", "clean"): lab}})
    assert _key_clear_of_the_panels(fig)
    plt.close(fig)


def test_bad_inputs_are_named() -> None:
    img, lab = _case(np.random.default_rng(2))
    with pytest.raises(ValueError, match="images must be"):
        VM.plot_predictions(img, lab, {})
    with pytest.raises(ValueError, match="no panels"):
        VM.plot_gallery({"image": img, "truth": lab, "panels": {}})


# ----------------------------------------------------------------------------- hand oracles (mutation testing)
def _images(ax: plt.Axes) -> list[np.ndarray]:
    return [np.ma.getdata(im.get_array()) for im in ax.images]


def test_tumour_slice_is_the_axial_index_with_most_tumour_else_the_middle() -> None:
    """Hand counts per axial slice: z=2 holds 3 tumour voxels, z=5 holds 2 -> 2; a tie goes to the first slice; no
    tumour -> shape[2] // 2 (8 // 2 = 4); the other axes are not the axial one (a (3, 4, 8) volume)."""
    lab = np.zeros((3, 4, 8), np.int64)
    lab[0, 0:3, 2] = 1
    lab[1, 1, 5] = 3
    lab[2, 3, 5] = 2
    assert VM._tumour_slice(lab) == 2
    lab[2, 2, 5] = 2  # now 3 on z=5 too: the first maximum
    assert VM._tumour_slice(lab) == 2
    lab[2, 1, 5] = 1
    assert VM._tumour_slice(lab) == 5
    assert VM._tumour_slice(np.zeros((3, 4, 8), np.int64)) == 4
    assert VM._tumour_slice(np.zeros((3, 4, 7), np.int64)) == 3


def test_class_legend_names_and_colours_the_three_classes() -> None:
    """A frameless 3-column key below the panels: labels NCR, ED, ET with LABEL_CMAP colours 1..3 (alpha included);
    the layout keeps the bottom 5 % of the figure for the key (a 6-inch-high figure of axis-off panels, whose plain
    tight layout would reach down to about 2.5 %)."""
    fig, ax = plt.subplots(figsize=(4, 6))
    ax.axis("off")
    VM._class_legend(fig)
    (leg,) = fig.legends
    assert [t.get_text() for t in leg.get_texts()] == ["NCR", "ED", "ET"]
    hand = [(0.9, 0.1, 0.1, 0.8), (0.1, 0.8, 0.2, 0.6), (1.0, 0.85, 0.0, 0.9)]
    for h, c in zip(leg.legend_handles, hand):
        np.testing.assert_allclose(h.get_facecolor(), c)
    assert not leg.get_frame_on()
    assert leg._ncols == 3
    assert ax.get_position().y0 >= 0.05 - 1e-9  # the panels leave room for the key
    plt.close(fig)


def test_history_draws_loss_and_the_present_dice_columns() -> None:
    """Left: loss vs epoch; right: one line per val_ column present (WT, ET here; no TC), labelled, y range 0..1."""
    import pandas as pd

    h = pd.DataFrame({"epoch": [1, 2, 3], "loss": [0.9, 0.5, 0.4],
                      "val_WT": [0.2, 0.5, 0.7], "val_ET": [0.1, 0.3, 0.4]})
    fig = VM.plot_history(h)
    a, b = fig.axes
    (loss,) = a.lines
    np.testing.assert_allclose(loss.get_xydata(), [[1, 0.9], [2, 0.5], [3, 0.4]])
    assert (a.get_xlabel(), a.get_ylabel(), a.get_title()) == ("epoch", "training loss", "loss")
    assert [ln.get_label() for ln in b.lines] == ["WT", "ET"]
    np.testing.assert_allclose(b.lines[0].get_xydata(), [[1, 0.2], [2, 0.5], [3, 0.7]])
    np.testing.assert_allclose(b.lines[1].get_xydata(), [[1, 0.1], [2, 0.3], [3, 0.4]])
    assert b.get_ylim() == (0.0, 1.0)
    assert (b.get_xlabel(), b.get_ylabel(), b.get_title()) == ("epoch", "validation Dice", "validation Dice")
    assert [t.get_text() for t in b.get_legend().get_texts()] == ["WT", "ET"]
    plt.close(fig)
    fig = VM.plot_history(h.assign(val_TC=[0.0, 0.1, 0.2]))
    assert [ln.get_label() for ln in fig.axes[1].lines] == ["WT", "TC", "ET"]  # fixed region order
    plt.close(fig)
    # validated every second epoch (NaN between): one line through the validated epochs, not isolated dots
    sparse = h[["epoch", "loss"]].assign(val_WT=[0.2, float("nan"), 0.6])
    (wt,) = VM.plot_history(sparse).axes[1].lines
    np.testing.assert_allclose(wt.get_xydata(), [[1, 0.2], [3, 0.6]])
    plt.close("all")
    # no validation columns: no empty legend (and no matplotlib warning), a note instead
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = VM.plot_history(h[["epoch", "loss"]])
    assert fig.axes[1].get_legend() is None and [t.get_text() for t in fig.axes[1].texts] == ["no validation"]
    plt.close(fig)
    for missing in ("epoch", "loss"):
        with pytest.raises(ValueError, match="'epoch' and 'loss'"):
            VM.plot_history(h.drop(columns=missing))


def test_history_draws_the_pooled_selection_score_and_marks_the_kept_epoch() -> None:
    """The checkpoint is chosen on val_score (pooled), not on the per-region lines: it is drawn dashed and its last
    maximum (epoch 4 here: a tie with epoch 2, later wins, as train() keeps) is starred, although WT peaks at 3."""
    import pandas as pd

    h = pd.DataFrame({"epoch": [1, 2, 3, 4, 5], "loss": [0.9, 0.6, 0.5, 0.4, 0.4], "val_WT": [0.2, 0.5, 0.8, 0.7, 0.6],
                      "val_score": [0.3, 0.6, 0.5, 0.6, float("nan")]})
    b = VM.plot_history(h).axes[1]
    labels = [ln.get_label() for ln in b.lines]
    assert labels == ["WT", "pooled score (selects the checkpoint)", "kept: epoch 4"]
    np.testing.assert_allclose(b.lines[1].get_xydata(), [[1, 0.3], [2, 0.6], [3, 0.5], [4, 0.6]])
    assert b.lines[1].get_linestyle() == "--"
    np.testing.assert_allclose(b.lines[2].get_xydata(), [[4, 0.6]])
    assert [t.get_text() for t in b.get_legend().get_texts()] == labels
    plt.close("all")


def test_predictions_grid_per_case_slice_titles_and_tensors() -> None:
    """Two cases (tumour on z=5 and z=2 by hand) and two models given as tensors: row i shows FLAIR (modality 3) at
    case i's slice under case i's truth, then each model's case-i prediction; default titles are the case index."""
    import torch

    rng = np.random.default_rng(3)
    img0, lab0 = _case(rng, z_tumour=5)
    img1, lab1 = _case(rng, z_tumour=2)
    lab1[2, 2, 1] = 0
    images, truths = np.stack([img0, img1]), np.stack([lab0, lab1])
    pa, pb = truths.copy(), np.zeros_like(truths)
    pa[0, 2, 2, 5] = 1
    pb[1, 4, 4, 2] = 3
    fig = VM.plot_predictions(torch.from_numpy(images), torch.from_numpy(truths),
                              {"a": torch.from_numpy(pa), "b": pb})
    axes = np.asarray(fig.axes[:6]).reshape(2, 3)
    assert [[ax.get_title() for ax in row] for row in axes] == [["0: truth", "a", "b"], ["1: truth", "a", "b"]]
    for i, z in enumerate((5, 2)):
        for j, lab in enumerate((truths[i], pa[i], pb[i])):
            flair, over = _images(axes[i, j])
            np.testing.assert_array_equal(flair, images[i, 3, :, :, z].T)
            np.testing.assert_array_equal(over, lab[:, :, z].T)
            assert axes[i, j].images[1].get_cmap() is VM.LABEL_CMAP
            assert axes[i, j].images[1].get_clim() == (0.0, 3.0)
            assert axes[i, j].images[0].origin == axes[i, j].images[1].origin == "lower"
            assert not axes[i, j].axison
            assert axes[i, j].title.get_fontsize() == 9
    plt.close(fig)
    with pytest.raises(ValueError, match=r"truths \(N, D, H, W\)"):
        VM.plot_predictions(images, truths[:, :, :, :7], {})
    with pytest.raises(ValueError, match="images must be"):
        VM.plot_predictions(images[:, 0], truths, {})
    with pytest.raises(ValueError, match=r"truths \(N, D, H, W\)"):
        VM.plot_predictions(images, truths[:1], {})  # one truth for two cases


def _attack_case(delta_scale: float = 0.3, t2_scale: float = 0.0):
    """Tumour on z=6; the perturbation is +delta_scale on one voxel of FLAIR and -delta_scale/3 elsewhere on T1c, so
    max|delta| = delta_scale, by hand; ``t2_scale`` puts a perturbation on T2 (not shown) that may be the largest."""
    img, lab = _case(np.random.default_rng(4), z_tumour=6)
    delta = np.zeros_like(img)
    delta[3, 1, 1, 6] = delta_scale
    delta[1, :, :, 6] = -delta_scale / 3
    delta[2, 0, 0, 0] = t2_scale
    pc, pa = lab.copy(), np.zeros_like(lab)
    pa[0, 0, 6] = 2
    return img, img + delta, lab, pc, pa


def test_attack_example_panels_and_perturbation_window() -> None:
    """Panels by hand (slice z=6, FLAIR = modality 3, T1c = modality 1): titles, arrays, overlays; the perturbation
    window is +/- max|delta| (0.3) and +/- 0.3 / amplify when amplified; tensors are accepted."""
    import torch

    img, adv, lab, pc, pa = _attack_case()
    z = 6
    fig = VM.plot_attack_example(*(torch.from_numpy(a) for a in (img, adv, lab, pc, pa)), title="case x")
    axes = np.asarray(fig.axes[:8]).reshape(2, 4)
    assert [ax.get_title() for ax in axes.ravel()] == [
        "clean FLAIR", "adversarial FLAIR", "perturbation FLAIR (±0.3)", "perturbation T1c",
        "truth", "prediction, clean", "prediction, attacked", "adversarial T1c"]
    d = adv - img
    shown = {
        (0, 0): (img[3], None), (0, 1): (adv[3], None), (0, 2): (d[3], None), (0, 3): (d[1], None),
        (1, 0): (img[1], lab), (1, 1): (img[1], pc), (1, 2): (adv[1], pa), (1, 3): (adv[1], None),
    }
    for (r, c), (base, over) in shown.items():
        arrs = _images(axes[r, c])
        assert len(arrs) == (1 if over is None else 2)
        np.testing.assert_allclose(arrs[0], base[:, :, z].T, rtol=1e-6, atol=1e-7)
        if over is not None:
            np.testing.assert_array_equal(arrs[1], over[:, :, z].T)
        assert not axes[r, c].axison
    for c in (2, 3):
        np.testing.assert_allclose(axes[0, c].images[0].get_clim(), (-0.3, 0.3), rtol=1e-6)
        assert axes[0, c].images[0].get_cmap().name == "seismic"
    assert axes[0, 0].images[0].get_cmap().name == "gray"
    # clean and adversarial slices share one grey window per modality: the joint range of both slices, by numpy
    for mod, cells in ((3, [(0, 0), (0, 1)]), (1, [(1, 0), (1, 1), (1, 2), (1, 3)])):
        both = np.stack([img[mod, :, :, z], adv[mod, :, :, z]])
        for r, c in cells:
            np.testing.assert_allclose(axes[r, c].images[0].get_clim(), (both.min(), both.max()), rtol=1e-6)
    assert fig.get_suptitle() == "case x"
    plt.close(fig)
    fig = VM.plot_attack_example(img, adv, lab, pc, pa, amplify=4.0)
    for c in (2, 3):
        np.testing.assert_allclose(fig.axes[c].images[0].get_clim(), (-0.075, 0.075), rtol=1e-6)
    assert fig.axes[2].get_title() == "perturbation FLAIR (±0.075, ×4)"  # the window's ends, 0.3 / 4, and the gain
    plt.close(fig)


def test_attack_example_without_perturbation_uses_a_unit_window() -> None:
    """adv == image: max|delta| is 0, so the window falls back to +/- 1, and the title says there is none."""
    img, _, lab, pc, pa = _attack_case()
    fig = VM.plot_attack_example(img, img.copy(), lab, pc, pa)
    assert fig.axes[2].images[0].get_clim() == (-1.0, 1.0)
    assert fig.axes[2].get_title() == "perturbation FLAIR (none)"
    plt.close(fig)


def test_gallery_grid_missing_panel_and_titles() -> None:
    """Models m1, m2 × conditions clean, pgd, fgsm (first-seen order, not sorted) -> a 2 × 4 grid: truth column then
    conditions; (m2, fgsm) is missing so its axes is off and empty; every overlay is the given map at the hand slice
    z=5."""
    import torch

    img, lab = _case(np.random.default_rng(5), z_tumour=5)
    maps = {k: np.where(lab > 0, k, 0) for k in (1, 2, 3)}
    panels = {("m1", "clean"): maps[1], ("m1", "pgd"): np.zeros_like(lab), ("m2", "clean"): maps[3],
              ("m2", "pgd"): lab, ("m1", "fgsm"): torch.from_numpy(maps[2])}
    fig = VM.plot_gallery({"image": torch.from_numpy(img), "truth": lab, "case_id": "c9", "panels": panels})
    axes = np.asarray(fig.axes).reshape(2, 4)
    assert [[ax.get_title() for ax in row] for row in axes] == [
        ["m1\ntruth", "clean", "pgd", "fgsm"], ["m2\ntruth", "clean", "pgd", ""]]
    want = [[lab, maps[1], np.zeros_like(lab), maps[2]], [lab, maps[3], lab, None]]
    for i in range(2):
        for j in range(4):
            ax = axes[i, j]
            assert not ax.axison
            if want[i][j] is None:
                assert len(ax.images) == 0
                continue
            flair, over = _images(ax)
            np.testing.assert_allclose(flair, img[3, :, :, 5].T)
            np.testing.assert_array_equal(over, want[i][j][:, :, 5].T)
    assert fig.get_suptitle() == "case c9"
    plt.close(fig)
    fig = VM.plot_gallery({"image": img, "truth": lab, "panels": {("m", "c"): lab}})
    assert fig.get_suptitle() == "case "  # no case id
    assert np.asarray(fig.axes).size == 2
    plt.close(fig)


def test_attack_window_is_shared_and_set_by_the_largest_change_of_any_modality() -> None:
    """Both perturbation panels use one window, +/- max|adv - image| over the whole volume: here 0.5 on T2 (hand
    value), although the FLAIR change peaks at 0.3 and T1c at 0.1."""
    img, adv, lab, pc, pa = _attack_case(t2_scale=0.5)
    fig = VM.plot_attack_example(img, adv, lab, pc, pa)
    for c in (2, 3):
        np.testing.assert_allclose(fig.axes[c].images[0].get_clim(), (-0.5, 0.5), rtol=1e-6)
    assert fig.axes[2].get_title() == "perturbation FLAIR (±0.5)"
    plt.close(fig)


# ----------------------------------------------------------------------------- input validation (before any figure)
def test_predictions_refuse_a_prediction_case_ids_or_image_that_does_not_match() -> None:
    """A prediction of another shape (here W 10 instead of 8) was sliced at the truth's z and overlaid silently,
    a short case_ids list failed with IndexError mid-figure, a 3-channel image with IndexError: each is a ValueError
    naming the argument, raised before a figure is opened (none left open)."""
    img, lab = _case(np.random.default_rng(6))
    plt.close("all")
    wide = np.zeros((1, 8, 8, 10), np.int64)
    with pytest.raises(ValueError, match=r"preds\['net'\].*\(1, 8, 8, 8\)"):
        VM.plot_predictions(img[None], lab[None], {"net": wide})
    with pytest.raises(ValueError, match="case_ids"):
        VM.plot_predictions(np.repeat(img[None], 2, 0), np.repeat(lab[None], 2, 0), {}, case_ids=["only one"])
    with pytest.raises(ValueError, match="images must be"):
        VM.plot_predictions(img[None, :3], lab[None], {})
    assert plt.get_fignums() == []


def test_attack_example_refuses_mismatched_volumes_and_a_non_positive_gain() -> None:
    """adv of another shape, a class map of another shape and amplify <= 0 (a negative gain inverted the colour
    window, 0 was read as 'no gain') are ValueErrors naming the argument; no figure is left open."""
    img, lab = _case(np.random.default_rng(7))
    plt.close("all")
    with pytest.raises(ValueError, match="adv"):
        VM.plot_attack_example(img, img[:, :, :, :6], lab, lab, lab)
    with pytest.raises(ValueError, match="pred_adv"):
        VM.plot_attack_example(img, img, lab, lab, lab[:, :, :6])
    with pytest.raises(ValueError, match="image"):
        VM.plot_attack_example(img[0], img[0], lab, lab, lab)
    for gain in (0.0, -2.0, float("nan")):
        with pytest.raises(ValueError, match="amplify"):
            VM.plot_attack_example(img, img + 0.1, lab, lab, lab, amplify=gain)
    assert plt.get_fignums() == []


def test_gallery_refuses_a_panel_of_another_shape_or_missing_keys() -> None:
    img, lab = _case(np.random.default_rng(8))
    plt.close("all")
    with pytest.raises(ValueError, match=r"panels.*'m', 'fgsm'"):
        VM.plot_gallery({"image": img, "truth": lab, "panels": {("m", "clean"): lab, ("m", "fgsm"): lab[:, :, :6]}})
    with pytest.raises(ValueError, match="truth"):
        VM.plot_gallery({"image": img, "truth": lab[:6], "panels": {("m", "clean"): lab}})
    with pytest.raises(ValueError, match="missing keys"):
        VM.plot_gallery({"image": img, "panels": {("m", "clean"): lab}})
    assert plt.get_fignums() == []
