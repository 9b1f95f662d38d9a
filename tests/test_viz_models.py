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


def test_bad_inputs_are_named() -> None:
    img, lab = _case(np.random.default_rng(2))
    with pytest.raises(ValueError, match="images must be"):
        VM.plot_predictions(img, lab, {})
    with pytest.raises(ValueError, match="no panels"):
        VM.plot_gallery({"image": img, "truth": lab, "panels": {}})
