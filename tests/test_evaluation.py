"""Experiment helpers of robustseg_lib.evaluation: iteration curves and gradient-masking diagnostics."""

from __future__ import annotations

import pytest
import torch

from robustseg_lib import evaluation
from robustseg_lib.evaluation import AttackSpec, EvalSet
from robustseg_lib.models import LogitScale


def _eval_set(n: int = 3, shape: tuple[int, int, int] = (8, 8, 8), seed: int = 0) -> EvalSet:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, *shape, generator=g)
    brain = torch.ones(n, *shape, dtype=torch.bool)
    brain[:, :2] = False
    x = x * brain[:, None]
    y = torch.randint(0, 4, (n, *shape), generator=g) * brain
    lo = torch.stack([x[i][:, brain[i]].amin(1) for i in range(n)])
    hi = torch.stack([x[i][:, brain[i]].amax(1) for i in range(n)])
    return EvalSet(x, y, brain, lo, hi, torch.ones(n, 4), [f"c{i}" for i in range(n)])


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(4, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(8, 4, 1))


def test_iteration_curve_has_one_row_per_case_region_and_iteration() -> None:
    """k = 0 (clean) must be recorded once, like every other iterate (the callback reports it)."""
    es, steps = _eval_set(), 3
    for spec_a in (AttackSpec("ifgsm", (0.0, 0.3), steps=steps, alpha_frac=0.25), AttackSpec("tifgsm", (0.3,), steps=steps, policy="erase")):
        curve = evaluation.iteration_curve(_net(), es, spec_a, 0.3, {"name": "unet", "crop": None}, batch_size=2)
        regions = sorted(curve.region.unique())
        assert len(regions) >= 3
        counts = curve.groupby(["case_id", "region", "iteration"]).size()
        assert (counts == 1).all()
        assert len(curve) == len(es) * len(regions) * (steps + 1)
        assert sorted(curve.iteration.unique()) == list(range(steps + 1))


def _step_eval_set() -> tuple[torch.nn.Module, EvalSet]:
    """1×1×1 net with logits (x₀, 0, 0, 0) and two cases of known logit gaps (class 0 the label everywhere in
    the brain): case 0 has gaps 0.1, 0.4, 1, 3 (one D-slice each), case 1 half of them."""
    net = torch.nn.Conv3d(4, 4, 1)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.zero_()
        net.weight[0, 0] = 1.0
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 4, 4, 4, generator=g).abs() + 0.5
    x[:, 0] = torch.tensor([0.1, 0.4, 1.0, 3.0]).reshape(1, 4, 1, 1)
    x[1, 0] *= 0.5
    brain = torch.ones(2, 4, 4, 4, dtype=torch.bool)
    brain[:, :, :, 3] = False  # 4 × 4 × 3 = 48 brain voxels per case, 12 per slice
    x = x * brain[:, None]
    y = torch.zeros(2, 4, 4, 4, dtype=torch.long)
    y[:, :, 0] = 2  # row h = 0: ED, misclassified, never saturated (9 brain voxels per slice keep label 0)
    lo = torch.stack([x[i][:, brain[i]].amin(1) for i in range(2)])
    hi = torch.stack([x[i][:, brain[i]].amax(1) for i in range(2)])
    return net, EvalSet(x, y, brain, lo, hi, torch.ones(2, 4), ["a", "b"])


def test_masking_diagnostics_reports_output_saturation() -> None:
    """Summary columns frac_saturated_voxels(_baseline): the mean over cases of the fraction of brain voxels
    whose float32 softmax probability of the label is exactly 1. Logits × 50: saturated where label 0 and
    3·exp(−50·gap) ≤ 2⁻²⁴ (50·gap ≥ 17.7): case 0 gaps 0.4, 1, 3 (27 of 48 voxels), case 1 gaps 0.5, 1.5
    (18 of 48); at × 1 (the baseline) none is."""
    net, es = _step_eval_set()
    defended = LogitScale(net, 50.0)
    specs = [AttackSpec("fgsm", (0.0, 0.1))]
    _, summary = evaluation.masking_diagnostics(defended, es, specs, "distilled", {"name": "unet", "crop": None}, source=net, rescale=1 / 50)
    assert len(summary) == 1
    row = summary.iloc[0]
    assert row["frac_saturated_voxels"] == (27 / 48 + 18 / 48) / 2
    assert row["frac_saturated_voxels_baseline"] == 0.0


def test_masking_verdict_reads_the_margin_and_names_the_attack():
    """Hand values: masking only when a diagnostic attack is more than the margin (0.05) below the direct one; a
    diagnostic within the margin is reported, not called the weakest (session 10's i-FGSM row: 0.112 vs 0.161)."""
    v = evaluation.masking_verdict
    assert v(0.455, 0.447, 0.382).startswith("gradient masking: the attack on the rescaled logits lowers WT Dice to 0.38")
    assert v(0.50, 0.40).startswith("gradient masking: the transfer attack from the baseline lowers WT Dice to 0.40")
    within = v(0.161, 0.164, 0.112)
    assert within.startswith("no clear sign of gradient masking: the attack on the rescaled logits is stronger")
    assert "0.11 vs 0.16" in within and "less than 0.05" in within
    assert v(0.256, 0.425).startswith("no sign of gradient masking: the direct attack is the strongest (WT 0.26)")
    assert v(0.30, float("nan"), float("nan")).startswith("no sign")  # no diagnostics run
    assert v(0.30, 0.26, margin=0.02).startswith("gradient masking") and v(0.30, 0.26).startswith("no clear sign")
    with pytest.raises(ValueError, match="direct"):
        v(float("nan"), 0.2)
    with pytest.raises(ValueError, match="margin"):
        v(0.3, 0.2, margin=-0.1)
