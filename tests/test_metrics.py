"""Tests of robustseg_lib.metrics against hand-computed oracles."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

from robustseg_lib import metrics as M

# Hand-built class maps, shape (1, 2, 4):
#   target          pred
#   [0 1 1 2]       [0 1 2 2]
#   [2 3 3 0]       [3 3 0 0]
TARGET = np.array([[[0, 1, 1, 2], [2, 3, 3, 0]]])
PRED = np.array([[[0, 1, 2, 2], [3, 3, 0, 0]]])


# ----------------------------------------------------------------------------- Dice
def test_dice_per_region_hand_counts() -> None:
    d = M.dice_per_region(PRED, TARGET)
    # WT {1,2,3}: |T|=6, |P|=5, |T∩P|=5 -> 10/11
    assert d["WT"] == pytest.approx(10 / 11)
    # TC {1,3}: T at (0,1),(0,2),(1,1),(1,2) = 4; P at (0,1),(1,0),(1,1) = 3; ∩ (0,1),(1,1) = 2 -> 4/7
    assert d["TC"] == pytest.approx(4 / 7)
    # ET {3}: T (1,1),(1,2); P (1,0),(1,1); ∩ (1,1) -> 2/4
    assert d["ET"] == pytest.approx(1 / 2)
    assert list(d) == ["WT", "TC", "ET"]


def test_tc_is_ncr_plus_et_not_ncr_plus_ed() -> None:
    # With a (wrong) TC = {1,2}: |T|=4, |P|=3, ∩=3 -> 6/7; the right answer is 4/7.
    d = M.dice_per_region(PRED, TARGET)
    assert d["TC"] != pytest.approx(6 / 7)
    # An ED-only disagreement must not touch TC or ET.
    t = np.array([[[1, 2, 2, 3]]])
    p = np.array([[[1, 0, 0, 3]]])
    d = M.dice_per_region(p, t)
    assert d["TC"] == 1.0 and d["ET"] == 1.0
    assert d["WT"] == pytest.approx(2 * 2 / (4 + 2))


def test_dice_per_label_hand_counts() -> None:
    d = M.dice_per_label(PRED, TARGET)
    # NCR: T (0,1),(0,2); P (0,1) -> 2/3.  ED: T (0,3),(1,0); P (0,2),(0,3) -> 2/4.  ET 2/4.
    assert d == pytest.approx({"NCR": 2 / 3, "ED": 1 / 2, "ET": 1 / 2})


def test_dice_empty_policy_both_ways() -> None:
    t = np.zeros((3, 3, 3), int)
    t[1, 1, 1] = 2  # only ED: TC and ET truth are empty
    same = M.dice_per_region(t, t)
    assert same == {"WT": 1.0, "TC": 1.0, "ET": 1.0}  # empty truth & empty pred -> 1
    p = t.copy()
    p[0, 0, 0] = 3  # ET predicted where truth has none
    d = M.dice_per_region(p, t)
    assert d["ET"] == 0.0 and d["TC"] == 0.0  # empty truth & non-empty pred -> 0
    assert d["WT"] == pytest.approx(2 * 1 / (1 + 2))
    # non-empty truth, empty prediction -> 0
    assert M.dice_per_region(np.zeros_like(t), t)["WT"] == 0.0
    # all background on both sides
    z = np.zeros((2, 2, 2), int)
    assert M.dice_per_region(z, z) == {"WT": 1.0, "TC": 1.0, "ET": 1.0}
    assert M.dice_per_label(z, z) == {"NCR": 1.0, "ED": 1.0, "ET": 1.0}


def test_monai_ignore_empty_semantics_differ() -> None:
    # MONAI's default ignore_empty=True gives NaN for an empty truth; our policy gives 1.0,
    # which is what ignore_empty=False gives - the setting metrics.py relies on.
    z = torch.zeros(1, 1, 3, 3, 3)
    assert torch.isnan(compute_dice(z, z, include_background=True, ignore_empty=True)).all()
    assert compute_dice(z, z, include_background=True, ignore_empty=False).item() == 1.0
    p = z.clone()
    p[0, 0, 1, 1, 1] = 1
    assert compute_dice(p, z, include_background=True, ignore_empty=False).item() == 0.0


def test_dice_torch_equals_numpy_and_validation() -> None:
    assert M.dice_per_region(torch.from_numpy(PRED), torch.from_numpy(TARGET)) == pytest.approx(
        M.dice_per_region(PRED, TARGET)
    )
    for dt in (np.uint8, np.uint16, np.uint32, np.int32, np.float32):  # any integer-valued dtype of the loaders
        assert M.dice_per_region(PRED.astype(dt), TARGET.astype(dt)) == pytest.approx(M.dice_per_region(PRED, TARGET))
    with pytest.raises(ValueError, match="numeric"):
        M.dice_per_region(PRED.astype(str), TARGET)
    with pytest.raises(ValueError, match="same shape"):
        M.dice_per_region(PRED, TARGET[..., :3])
    with pytest.raises(ValueError, match="pred"):
        M.dice_per_region(PRED + 2, TARGET)  # value 5
    with pytest.raises(ValueError, match="target"):
        M.dice_per_region(PRED, TARGET.astype(float) + 0.5)


def _blobby_pair(seed: int, shape: tuple[int, int, int] = (40, 44, 36)) -> tuple[np.ndarray, np.ndarray]:
    """A tumour-like truth (nested balls) and a noisy, shifted prediction with stray voxels."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")

    def ball(c: np.ndarray, r: float) -> np.ndarray:
        return ((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) < r * r

    out = []
    for shift in (0, 2):
        c = np.array(shape) / 2 + rng.integers(-shift, shift + 1, 3)
        m = np.zeros(shape, np.int64)
        m[ball(c, 11 + shift)] = 2
        m[ball(c + 1, 6)] = 3
        m[ball(c + 1, 3 - shift / 2)] = 1
        out.append(m)
    t, p = out
    noise = rng.random(shape) < 0.01
    p[noise] = rng.integers(0, 4, int(noise.sum()))
    return p, t


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dice_and_hd95_equal_monai_on_whole_volumes(seed: int) -> None:
    """Oracle: MONAI's compute_dice and compute_hausdorff_distance on the uncropped float one-hot
    region masks (what the module called before it computed Dice from the confusion matrix and
    cropped HD95 to the tumour's box)."""
    p, t = _blobby_pair(seed)
    if seed == 2:
        p[p == 1] = 0  # a region predicted empty: the policy path beside MONAI's
    pm = np.stack([np.isin(p, v) for v in M.REGIONS.values()])[None].astype(np.float64)
    tm = np.stack([np.isin(t, v) for v in M.REGIONS.values()])[None].astype(np.float64)
    want_dice = compute_dice(torch.from_numpy(pm), torch.from_numpy(tm), include_background=True, ignore_empty=False)[0]
    got = M.dice_per_region(p, t)
    assert [got[k] for k in M.REGIONS] == pytest.approx(want_dice.tolist(), abs=1e-12)
    for spacing in (None, (1.0, 1.2, 2.0)):
        want_hd = compute_hausdorff_distance(torch.from_numpy(pm), torch.from_numpy(tm), include_background=True, percentile=95, spacing=spacing)[0]
        got = M.hd95_per_region(p, t, spacing=spacing)
        for i, k in enumerate(M.REGIONS):
            if pm[0, i].any() and tm[0, i].any():
                assert got[k] == pytest.approx(float(want_hd[i]), abs=1e-9), (k, spacing)
            else:
                assert got[k] == pytest.approx(M._diagonal(p.shape, spacing)), k
    assert M.dice_per_label(p, t) == pytest.approx(
        dict(zip(M.LABELS, compute_dice(
            torch.from_numpy(np.stack([p == v for v in (1, 2, 3)])[None].astype(float)),
            torch.from_numpy(np.stack([t == v for v in (1, 2, 3)])[None].astype(float)), include_background=True, ignore_empty=False,
        )[0].tolist()))
    )


def test_hd95_box_touching_the_image_border() -> None:
    """A tumour on the volume's faces: the crop must not add or remove surface (oracle: MONAI uncropped)."""
    p, t = _blobby_pair(3, shape=(24, 24, 24))
    p, t = np.roll(p, 12, axis=(0, 1)), np.roll(t, 12, axis=(0, 1))  # the balls now straddle the faces
    pm = np.stack([np.isin(p, v) for v in M.REGIONS.values()])[None].astype(np.float64)
    tm = np.stack([np.isin(t, v) for v in M.REGIONS.values()])[None].astype(np.float64)
    want = compute_hausdorff_distance(torch.from_numpy(pm), torch.from_numpy(tm), include_background=True, percentile=95)[0]
    got = M.hd95_per_region(p, t)
    assert [got[k] for k in M.REGIONS] == pytest.approx(want.tolist(), abs=1e-9)


def test_confusion_matrix_hand_counts_and_pooling() -> None:
    cm = M.confusion_matrix(PRED, TARGET)
    want = np.zeros((4, 4), int)  # cm[pred, truth], counted from the 8 voxels by hand
    for p, t in zip(PRED.ravel(), TARGET.ravel()):
        want[p, t] += 1
    np.testing.assert_array_equal(cm.numpy(), want)
    assert M.dice_from_confusion(cm) == pytest.approx(M.dice_per_region(PRED, TARGET))
    # pooled Dice of two cases = Dice of their concatenation
    p2, t2 = _blobby_pair(5, shape=(12, 10, 8))
    pooled = M.dice_from_confusion(M.confusion_matrix(p2, t2) + M.confusion_matrix(PRED[..., :2].repeat(4, 2), TARGET[..., :2].repeat(4, 2)))
    both = (np.concatenate([p2.ravel(), PRED[..., :2].repeat(4, 2).ravel()]), np.concatenate([t2.ravel(), TARGET[..., :2].repeat(4, 2).ravel()]))
    assert pooled == pytest.approx(M.dice_per_region(*both))
    with pytest.raises(ValueError, match="cm"):
        M.dice_from_confusion(torch.zeros(3, 3))


# ----------------------------------------------------------------------------- HD95
def test_hd95_two_points() -> None:
    p = np.zeros((8, 8, 8), int)
    t = np.zeros((8, 8, 8), int)
    p[2, 2, 2] = 3
    t[2, 2, 5] = 3  # 3 voxels apart along the last axis
    h = M.hd95_per_region(p, t)
    assert h == pytest.approx({"WT": 3.0, "TC": 3.0, "ET": 3.0})
    h = M.hd95_per_region(p, t, spacing=(1.0, 1.0, 2.0))
    assert h["ET"] == pytest.approx(6.0)


def test_hd95_parallel_planes() -> None:
    p = np.zeros((8, 6, 6), int)
    t = np.zeros((8, 6, 6), int)
    p[1] = 2  # a full plane of ED at depth 1
    t[5] = 2  # ... and at depth 5: every point is 4 from the other plane
    h = M.hd95_per_region(p, t)
    assert h["WT"] == pytest.approx(4.0)
    assert h["TC"] == 0.0 and h["ET"] == 0.0  # both empty


def test_hd95_empty_policy() -> None:
    t = np.zeros((4, 5, 6), int)
    t[1, 1, 1] = 1
    diag = math.sqrt(4**2 + 5**2 + 6**2)
    h = M.hd95_per_region(np.zeros_like(t), t)  # empty prediction
    assert h["WT"] == pytest.approx(diag) and h["TC"] == pytest.approx(diag)
    assert h["ET"] == 0.0  # both empty
    h = M.hd95_per_region(t, np.zeros_like(t))  # empty truth
    assert h["WT"] == pytest.approx(diag)
    h = M.hd95_per_region(np.zeros_like(t), t, spacing=(2.0, 1.0, 1.0))
    assert h["WT"] == pytest.approx(math.sqrt(8**2 + 5**2 + 6**2))
    # the BraTS constant
    assert M._diagonal((240, 240, 155), None) == pytest.approx(373.13, abs=0.01)
    with pytest.raises(ValueError, match="spacing"):
        M.hd95_per_region(t, t, spacing=(1.0, 1.0))


# ----------------------------------------------------------------------------- evaluate
def test_evaluate_schema_and_values() -> None:
    preds = np.stack([PRED, TARGET])
    targets = np.stack([TARGET, TARGET])
    df = M.evaluate(preds, targets, ["c1", "c2"], model="baseline", attack="fgsm", eps=0.1, steps=1,
                    target_policy="erase", target_frac=[0.5, 0.25])  # fmt: skip
    assert list(df.columns) == ["case_id", "model", "attack", "eps", "steps", "region", "dice", "hd95",
                                "target_policy", "target_frac"]  # fmt: skip
    assert len(df) == 6
    assert list(df["region"]) == ["WT", "TC", "ET"] * 2
    assert (df["model"] == "baseline").all() and (df["attack"] == "fgsm").all()
    assert (df["eps"] == 0.1).all() and (df["steps"] == 1).all()
    assert (df["target_policy"] == "erase").all()
    assert list(df["target_frac"]) == [0.5] * 3 + [0.25] * 3
    c1 = df[df.case_id == "c1"].set_index("region")["dice"]
    assert c1["WT"] == pytest.approx(10 / 11) and c1["TC"] == pytest.approx(4 / 7)
    assert (df[df.case_id == "c2"]["dice"] == 1.0).all()
    assert (df[df.case_id == "c2"]["hd95"] == 0.0).all()
    # sequences of tensors, no HD95
    df2 = M.evaluate([torch.from_numpy(PRED)], [torch.from_numpy(TARGET)], ["x"], model="m", hd95=False)
    assert df2["hd95"].isna().all() and (df2["attack"] == "clean").all() and (df2["eps"] == 0.0).all()


def test_evaluate_validation() -> None:
    with pytest.raises(ValueError, match="case_ids"):
        M.evaluate([PRED], [TARGET], ["a", "b"], model="m")
    with pytest.raises(ValueError, match="targets"):
        M.evaluate([PRED, PRED], [TARGET], ["a", "b"], model="m")
    with pytest.raises(ValueError, match="fold"):
        M.evaluate([PRED], [TARGET], ["a"], model="m", fold=[1, 2])


# ----------------------------------------------------------------------------- perceptibility
def test_perceptibility_hand_values() -> None:
    clean = np.zeros((1, 8, 8, 8))
    adv = clean.copy()
    adv[0, 0, 0, :] = 0.1  # 8 voxels perturbed by 0.1 out of 512
    (row,) = M.perceptibility(clean, adv, data_range=2.0)
    assert row["modality"] == "ch0" and row["case_index"] == 0
    assert row["linf"] == pytest.approx(0.1)
    assert row["l2"] == pytest.approx(math.sqrt(8 * 0.01))
    mse = 8 * 0.01 / 512
    assert row["psnr"] == pytest.approx(10 * math.log10(2.0**2 / mse))
    assert row["ssim"] < 1.0


def test_perceptibility_default_range_over_brain() -> None:
    rng = np.random.default_rng(0)
    clean = rng.uniform(1, 4, size=(1, 8, 8, 8))
    brain = np.zeros((8, 8, 8), bool)
    brain[2:6, 2:6, 2:6] = True
    clean[0, 3, 3, 3], clean[0, 3, 3, 4] = 1.0, 4.0  # range over brain is exactly 3
    clean[0, 0, 0, 0] = 100.0  # outside the brain: must not enter the range
    adv = clean.copy()
    adv[0, 4, 4, 4] += 0.3
    (row,) = M.perceptibility(clean, adv, brain=brain)
    k = brain.sum()
    assert row["psnr"] == pytest.approx(10 * math.log10(3.0**2 / (0.09 / k)))


def test_perceptibility_identical_and_batch() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 4, 12, 12, 12)).astype(np.float32)
    rows = M.perceptibility(x, x, case_ids=["a", "b"])
    assert len(rows) == 8
    assert [r["modality"] for r in rows[:4]] == list(M.MODALITIES)
    assert [r["case_id"] for r in rows] == ["a"] * 4 + ["b"] * 4
    for r in rows:
        assert r["ssim"] == pytest.approx(1.0) and r["psnr"] == math.inf
        assert r["linf"] == 0.0 and r["l2"] == 0.0
    noisy = M.perceptibility(x[0], x[0] + 0.5 * rng.normal(size=x[0].shape))
    assert all(r["ssim"] < 0.99 for r in noisy)
    big = rng.normal(size=(1, 32, 32, 32))
    assert M.perceptibility(big, big)[0]["ssim"] == pytest.approx(1.0)
    small = M.perceptibility(x[0, :, :5, :6, :7], x[0, :, :5, :6, :7])  # window shrinks
    assert all(r["ssim"] == pytest.approx(1.0) for r in small)
    with pytest.raises(ValueError, match="x_adv"):
        M.perceptibility(x, x[:1])
    with pytest.raises(ValueError, match="brain"):
        M.perceptibility(x, x, brain=np.ones((3, 3, 3), bool))


def test_perceptibility_scores_ssim_on_the_callers_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tensors on one device go to SSIM as views of themselves (so on a GPU the SSIM runs there, not through
    numpy on the CPU); the numbers equal the numpy path's, which the hand-value tests above pin down."""
    rng = np.random.default_rng(2)
    clean = torch.from_numpy(rng.normal(size=(2, 4, 10, 11, 12)).astype(np.float32))
    adv = clean + 0.3 * torch.from_numpy(rng.normal(size=clean.shape).astype(np.float32))
    brain = torch.from_numpy(rng.random(size=(2, 10, 11, 12)) > 0.3)
    seen: list[torch.Tensor] = []
    real = M.compute_ssim_and_cs

    def spy(y_pred: torch.Tensor, y: torch.Tensor, **kw):
        seen.append(y_pred)
        return real(y_pred, y, **kw)

    monkeypatch.setattr(M, "compute_ssim_and_cs", spy)
    from_tensors = M.perceptibility(clean, adv, brain=brain)
    assert len(seen) == 8
    lo, hi = adv.data_ptr(), adv.data_ptr() + adv.numel() * adv.element_size()
    assert all(lo <= t.data_ptr() < hi for t in seen), "SSIM inputs were copied instead of viewed"
    from_numpy = M.perceptibility(clean.numpy(), adv.numpy(), brain=brain.numpy())
    for a, b in zip(from_tensors, from_numpy):  # key by key: pytest >= 9.2's approx refuses a mapping with strings
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == (b[k] if isinstance(b[k], str) else pytest.approx(b[k], rel=1e-6)), k
    mixed = M.perceptibility(clean, adv.numpy(), brain=brain)  # not both tensors: the numpy path
    assert [r["ssim"] for r in mixed] == pytest.approx([r["ssim"] for r in from_numpy], rel=1e-6)


# ----------------------------------------------------------------------------- target fraction
def test_target_fraction() -> None:
    pred = np.array([0, 1, 1, 3, 3, 2])
    target = np.array([1, 1, 1, 1, 3, 2])
    mask = np.array([True, True, True, True, False, False])
    # inside the mask pred == target at positions 1, 2 -> 2/4
    assert M.target_fraction(pred, target, mask) == pytest.approx(0.5)
    assert math.isnan(M.target_fraction(pred, target, np.zeros(6, bool)))
    with pytest.raises(ValueError, match="region_mask"):
        M.target_fraction(pred, target, mask[:3])


def test_region_masks() -> None:
    m = M.region_masks(np.array([0, 1, 2, 3]))
    assert m["WT"].tolist() == [False, True, True, True]
    assert m["TC"].tolist() == [False, True, False, True]
    assert m["ET"].tolist() == [False, False, False, True]
    assert isinstance(pd.DataFrame(m), pd.DataFrame)


def test_hd95_raises_no_monai_deprecation_warning_from_threads() -> None:
    """Outside pytest's warning capture, with FutureWarning as an error: hd95 from worker threads (as attack_sweep
    calls it) passes, because robustseg_lib.metrics filters MONAI's own internal deprecation message."""
    code = (
        "import numpy as np\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from robustseg_lib import metrics\n"
        "p = np.zeros((12, 12, 12), np.int64); t = p.copy(); p[3:8, 3:8, 3:8] = 2; t[4:9, 3:8, 3:8] = 2\n"
        "with ThreadPoolExecutor(2) as ex:\n"
        "    out = list(ex.map(lambda _: metrics.hd95_per_region(p, t), range(4)))\n"
        "assert out[0]['WT'] == 1.0, out\n"
    )
    proc = subprocess.run([sys.executable, "-W", "error::FutureWarning", "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


# ----------------------------------------------------------------------------- found by mutation testing (session 12)
def test_class_map_rejects_raw_brats_label_4_and_negative_values() -> None:
    """Raw BraTS files label ET as 4 (not 3); such maps, and negative values, must be refused with a
    ValueError, not silently re-indexed or crash deeper down."""
    t = np.zeros((3, 3, 3), int)
    t[1, 1, 1] = 2
    for bad in (4, -1):
        p = t.copy()
        p[0, 0, 0] = bad
        for fn in (M.dice_per_region, M.hd95_per_region, M.confusion_matrix):
            with pytest.raises(ValueError, match="0..3"):
                fn(p, t)
            with pytest.raises(ValueError, match="0..3"):
                fn(t, torch.from_numpy(p))


def test_perceptibility_signed_perturbation_and_per_channel_range() -> None:
    """Hand values: a negative perturbation counts by its magnitude in linf; each channel's PSNR uses its
    own data_range."""
    clean = np.zeros((2, 6, 6, 6))
    adv = clean.copy()
    adv[0, 0, 0, :4] = -0.2  # 4 voxels, only downwards
    adv[1, 1, :2, :4] = 0.1  # 8 voxels
    r0, r1 = M.perceptibility(clean, adv, data_range=[1.0, 4.0])
    assert r0["linf"] == pytest.approx(0.2) and r1["linf"] == pytest.approx(0.1)
    assert r0["l2"] == pytest.approx(math.sqrt(4 * 0.04))
    assert r0["psnr"] == pytest.approx(10 * math.log10(1.0**2 / (4 * 0.04 / 216)))
    assert r1["psnr"] == pytest.approx(10 * math.log10(4.0**2 / (8 * 0.01 / 216)))


def test_perceptibility_uses_each_cases_brain() -> None:
    """Hand values: case i's data range and PSNR MSE come from brain i, not from case 0's brain."""
    rng = np.random.default_rng(3)
    clean = rng.uniform(1, 2, size=(2, 1, 8, 8, 8))
    brain = np.zeros((2, 8, 8, 8), bool)
    brain[0, 1:5, 1:5, 1:5] = True  # 64 voxels
    brain[1, 3:8, 3:8, 3:8] = True  # 125 voxels
    clean[:, 0, 3, 3, 3], clean[:, 0, 4, 4, 4] = 1.0, 2.0  # in both brains: each brain's range is 1...
    clean[1, 0, 6, 6, 6] = 5.0  # ... except case 1's, which reaches 5 outside case 0's brain
    adv = clean.copy()
    adv[:, 0, 3, 4, 4] += 0.3  # inside both brains
    r0, r1 = M.perceptibility(clean, adv, brain=brain)
    assert r0["psnr"] == pytest.approx(10 * math.log10(1.0**2 / (0.09 / 64)))
    assert r1["psnr"] == pytest.approx(10 * math.log10(4.0**2 / (0.09 / 125)))


def test_perceptibility_constant_volume_range_falls_back_to_one() -> None:
    """Hand value: a constant clean channel has range 0, so data_range 1.0 is used (documented fallback)."""
    clean = np.full((1, 6, 6, 6), 2.0)
    adv = clean.copy()
    adv[0, 0, 0, 0] = 2.5
    (row,) = M.perceptibility(clean, adv)
    assert row["psnr"] == pytest.approx(10 * math.log10(1.0 / (0.25 / 216)))
    assert math.isfinite(row["ssim"]) and row["ssim"] < 1.0


@pytest.mark.parametrize("shape, win", [((12, 11, 10), 7), ((5, 6, 7), 5)])
def test_perceptibility_ssim_equals_monai_ssim_metric(shape: tuple[int, int, int], win: int) -> None:
    """Oracle: monai.metrics.SSIMMetric (Gaussian kernel, sigma 1.5) called directly with the channel's data range
    (max - min of the clean channel) and the window shrunk to the smallest odd size that fits."""
    from monai.metrics import SSIMMetric

    rng = np.random.default_rng(4)
    clean = rng.normal(0.0, 3.0, size=(2, *shape))  # range ~ 20: far from 1
    adv = clean + rng.normal(0.0, 0.8, size=clean.shape)
    rows = M.perceptibility(clean, adv)
    for ch, row in enumerate(rows):
        dr = float(clean[ch].max() - clean[ch].min())
        metric = SSIMMetric(spatial_dims=3, data_range=dr, kernel_type="gaussian", win_size=win, kernel_sigma=1.5)
        a, c = (torch.from_numpy(v[ch])[None, None].float() for v in (adv, clean))
        want = float(metric(a, c))
        assert row["ssim"] == pytest.approx(want, abs=1e-6)
        assert 0.0 < row["ssim"] < 0.99


def test_hd95_is_symmetric_for_under_segmentation() -> None:
    """Hand value: the prediction is one of the truth's two planes (4 apart). Every predicted voxel lies on the
    truth (distance 0) but half the truth is 4 from the prediction, so the symmetric HD95 is 4 either way round."""
    t = np.zeros((8, 6, 6), int)
    t[1], t[5] = 2, 2
    p = np.zeros_like(t)
    p[1] = 2
    assert M.hd95_per_region(p, t)["WT"] == pytest.approx(4.0)
    assert M.hd95_per_region(t, p)["WT"] == pytest.approx(4.0)


def test_target_fraction_accepts_a_flipped_numpy_mask() -> None:
    """A mask made by np.flip (negative strides, which torch.from_numpy refuses) is read like its copy."""
    pred = np.array([[0, 1], [1, 3]])
    target = np.array([[1, 1], [1, 1]])
    mask = np.flip(np.array([[True, True], [False, False]]), 0)  # [[F, F], [T, T]]
    assert M.target_fraction(pred, target, mask) == pytest.approx(0.5)  # hand: (1,0) hits, (1,1) misses


@pytest.mark.parametrize("value", [np.array(0.5), torch.tensor(0.5)])
def test_evaluate_broadcasts_a_zero_dim_extra_like_a_scalar(value) -> None:
    """A 0-d array or tensor (e.g. ``eps_t.max()``) is one value for every row, not a TypeError about iterating
    a float."""
    pred = np.zeros((2, 2, 2, 2), int)
    df = M.evaluate(pred, pred, ["a", "b"], model="m", hd95=False, extra=value)
    assert df["extra"].tolist() == [0.5] * 6


@pytest.mark.parametrize("win", [8, 6, 2, 1, 0, -3, 7.0, True, "7"])
def test_perceptibility_refuses_an_even_small_or_non_integer_win_size(win) -> None:
    """An even window (8) was silently lowered to 7, and 1 gave a window with no neighbourhood: the SSIM window
    must be an odd integer >= 3, and the error names win_size."""
    x = np.zeros((1, 9, 9, 9))
    with pytest.raises(ValueError, match="win_size"):
        M.perceptibility(x, x + 0.1, win_size=win)


def test_perceptibility_uses_an_explicit_odd_win_size() -> None:
    """Oracle: monai.metrics.SSIMMetric with win_size=5 on a 9³ volume (no shrinking), data range max - min."""
    from monai.metrics import SSIMMetric

    rng = np.random.default_rng(7)
    clean = rng.normal(size=(1, 9, 9, 9))
    adv = clean + rng.normal(0.0, 0.5, size=clean.shape)
    (row,) = M.perceptibility(clean, adv, win_size=5)
    dr = float(clean.max() - clean.min())
    metric = SSIMMetric(spatial_dims=3, data_range=dr, kernel_type="gaussian", win_size=5, kernel_sigma=1.5)
    want = float(metric(*(torch.from_numpy(v[0])[None, None].float() for v in (adv, clean))))
    assert row["ssim"] == pytest.approx(want, abs=1e-6)


def test_dice_from_confusion_refuses_group_values_outside_0_to_3() -> None:
    """A group value -1 indexed the confusion matrix's last row and column silently (the ET Dice under another
    name); 4 raised torch's IndexError; a bool is not a class. Hand value for a valid group: cm with 2 voxels
    predicted and true 1, one predicted 2 where the truth is 1 -> Dice of {1} = 2·2 / (2 + 3) = 0.8."""
    cm = torch.zeros(4, 4, dtype=torch.long)
    cm[1, 1], cm[2, 1], cm[3, 3] = 2, 1, 5
    assert M.dice_from_confusion(cm, {"NCR": (1,)})["NCR"] == pytest.approx(0.8)
    for bad in ((-1,), (4,), (True,), (1.0,)):
        with pytest.raises(ValueError, match="groups: 'X' must hold class values 0..3"):
            M.dice_from_confusion(cm, {"X": bad})


def test_hd95_accepts_a_zero_dim_spacing_like_a_scalar() -> None:
    """np.float64(2) passed np.isscalar, np.array(2.0) did not and failed iterating a 0-d array. Hand value: two
    one-voxel planes 3 apart along axis 0, spacing 2 -> 6."""
    t = np.zeros((6, 3, 3), int)
    t[1] = 2
    p = np.zeros_like(t)
    p[4] = 2
    assert M.hd95_per_region(p, t, spacing=np.array(2.0))["WT"] == pytest.approx(6.0)
    assert M.hd95_per_region(p, t, spacing=torch.tensor(2.0))["WT"] == pytest.approx(6.0)


@pytest.mark.parametrize("dr", [math.inf, [1.0, math.inf]])
def test_perceptibility_refuses_an_infinite_data_range(dr) -> None:
    """An infinite data_range passed the > 0 check and gave psnr inf and a NaN SSIM for a non-zero perturbation."""
    x = np.zeros((2, 7, 7, 7))
    with pytest.raises(ValueError, match="data_range: expected a positive finite"):
        M.perceptibility(x, x + 0.1, data_range=dr)
