"""Experiment helpers of robustseg_lib.evaluation: iteration curves and gradient-masking diagnostics."""

from __future__ import annotations

import numpy as np
import pandas as pd
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


# ----------------------------------------------------------------------------- found by mutation testing (session 13)
_ONE_PASS = {"name": "unet", "crop": None}


def _clip(es: EvalSet, sl: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
    return es.lo[sl][..., None, None, None], es.hi[sl][..., None, None, None]


def _wt_dice(pred: torch.Tensor, truth: torch.Tensor) -> list[float]:
    from robustseg_lib.metrics import dice_per_region

    return [dice_per_region(p, t)["WT"] for p, t in zip(pred, truth)]


def test_attack_spec_forces_fgsm_to_one_step_needs_a_ti_fgsm_policy_and_names_it() -> None:
    """Hand values: FGSM is one step whatever is asked, ti-FGSM without a target policy is refused, and the name
    carries the policy (``tifgsm_erase``) only for ti-FGSM."""
    assert AttackSpec("fgsm", (0.1,), steps=5).steps == 1 and AttackSpec("ifgsm", (0.1,), steps=5).steps == 5
    with pytest.raises(ValueError, match="policy"):
        AttackSpec("tifgsm", (0.1,))
    with pytest.raises(ValueError, match="eps_grid"):
        AttackSpec("fgsm", (0.1, -0.1))
    assert AttackSpec("tifgsm", (0.1,), policy="erase").name == "tifgsm_erase" and AttackSpec("ifgsm", (0.1,)).name == "ifgsm"
    # a step size of 0 (an attack that never moves) and fractional steps are refused when the spec is made
    for bad in (0, -0.25, float("nan")):
        with pytest.raises(ValueError, match="alpha_frac must be a finite number > 0"):
            AttackSpec("ifgsm", (0.1,), alpha_frac=bad)
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        AttackSpec("ifgsm", (0.1,), steps=2.5)
    assert type(AttackSpec("ifgsm", (0.1,), alpha_frac=np.float64(0.5)).alpha_frac) is float  # JSON-able record


def test_attack_spec_refuses_non_finite_budgets_and_a_policy_on_untargeted_attacks(tmp_path) -> None:
    """Validated when the spec is made, before save_attack_spec records it: a NaN or inf eps (NaN passed
    ``min(eps_grid) < 0``) would be written into attacks/*.json as NaN/Infinity, and a policy on FGSM/i-FGSM gave
    a record named ``fgsm_erase`` that attack_sweep then refused ("policy is only used by tifgsm")."""
    for bad in ((0.1, float("nan")), (float("inf"),)):
        with pytest.raises(ValueError, match="eps_grid"):
            AttackSpec("ifgsm", bad)
    for attack in ("fgsm", "ifgsm"):
        with pytest.raises(ValueError, match="policy"):
            AttackSpec(attack, (0.1,), policy="erase")
    assert AttackSpec("fgsm", (0.1,), policy=None).name == "fgsm"


def test_load_split_returns_the_rows_of_that_split_for_every_array(tmp_path) -> None:
    """A hand-written prepared.npz with splits train/test/train: the train EvalSet holds rows 0 and 2 of every
    array (labels as int64, lo/hi/std float32), the test one row 1 (oracle: numpy indexing)."""
    from robustseg_lib.artefacts import RunPaths

    rng = np.random.default_rng(0)
    n, sp = 3, (4, 4, 4)
    arrays = {
        "images": rng.normal(size=(n, 4, *sp)).astype(np.float32), "labels": rng.integers(0, 4, (n, *sp)).astype(np.uint8),
        "brain": rng.random((n, *sp)) < 0.7, "case_ids": np.array(["a", "b", "c"]), "split": np.array(["train", "test", "train"]),
        "lo": rng.normal(size=(n, 4)), "hi": rng.normal(size=(n, 4)) + 3, "mean": rng.normal(size=(n, 4)), "std": rng.random((n, 4)) + 1,
    }
    run = RunPaths(tmp_path / "run")
    run.prepared.parent.mkdir(parents=True, exist_ok=True)
    np.savez(run.prepared, **arrays)
    for split, rows in (("train", [0, 2]), ("test", [1])):
        es = evaluation.load_split(run, split)
        assert es.case_ids == [str(arrays["case_ids"][r]) for r in rows]
        assert es.labels.dtype == torch.int64 and es.brain.dtype == torch.bool
        for k in ("images", "labels", "brain", "lo", "hi", "std"):
            want = arrays[k][rows]
            got = getattr(es, k).numpy()
            assert got.shape == want.shape and np.array_equal(got, want.astype(got.dtype)), (split, k)
        assert es.lo.dtype == es.hi.dtype == es.std.dtype == torch.float32


def test_wrap_model_and_predict_set_slide_with_the_spec_overlap() -> None:
    """The wrapped model, and predict_set's class maps, are MONAI's gaussian sliding_window_inference with the spec's
    overlap (0.5, not the 0.25 default, on a side where the two place different windows; oracle: MONAI called directly)."""
    from monai.inferers import sliding_window_inference

    net = _net().eval()
    x = torch.randn(1, 4, 20, 8, 8, generator=torch.Generator().manual_seed(0))
    spec = {"name": "unet", "crop": [8, 8, 8], "overlap": 0.5}
    model = evaluation.wrap_model(net, spec, x.shape[2:])
    with torch.no_grad():
        want = sliding_window_inference(x, (8, 8, 8), 2, net, overlap=0.5, mode="gaussian")
        other = sliding_window_inference(x, (8, 8, 8), 2, net, overlap=0.25, mode="gaussian")
        got = model(x)
    assert not torch.allclose(want, other)
    assert torch.allclose(got, want, atol=1e-6)
    es = EvalSet(x, torch.zeros(1, 20, 8, 8, dtype=torch.long), torch.ones(1, 20, 8, 8, dtype=torch.bool), x.amin((2, 3, 4)),
                 x.amax((2, 3, 4)), torch.ones(1, 4), ["a"])
    assert torch.equal(evaluation.predict_set(net, es, spec), want.argmax(1))


def test_load_train_config_drops_keys_trainconfig_does_not_know(tmp_path) -> None:
    """A record written with an extra key (an older or newer version) loads into TrainConfig's fields only, and the
    recorded best epoch/score are stored under their own names (oracle: the written values)."""
    from types import SimpleNamespace

    from robustseg_lib.artefacts import RunPaths, read_json
    from robustseg_lib.training import TrainConfig

    run = RunPaths(tmp_path / "run")
    run.models.mkdir(parents=True, exist_ok=True)
    evaluation.save_train_config(run, "m", {"epochs": 3, "lr": 0.01, "retired_option": 1},
                                 SimpleNamespace(best_epoch=2, best_score=0.75, seconds=9.5))
    assert evaluation.load_train_config(run, "m") == {"epochs": 3, "lr": 0.01}
    assert TrainConfig(**evaluation.load_train_config(run, "m")).epochs == 3
    blob = read_json(run.models / "m.train.json")
    assert (blob["best_epoch"], blob["best_score"], blob["seconds"]) == (2, 0.75, 9.5)


def test_attack_example_is_that_case_attacked_inside_its_brain_and_clip_range() -> None:
    """attack_example(case_index=2): the image is case 2, the adversarial volume is attacks.fgsm of case 2 with its
    brain mask and intensity range (oracle: fgsm called directly), unchanged outside the brain, inside [lo, hi], and
    the predictions are the net's argmax of the clean and adversarial volumes."""
    from robustseg_lib import attacks

    es, net = _eval_set(3), _net().eval()
    ex = evaluation.attack_example(net, es, AttackSpec("fgsm", (0.1, 0.5)), 0.5, _ONE_PASS, case_index=2)
    sl = slice(2, 3)
    want = attacks.fgsm(net, es.images[sl], es.labels[sl], 0.5, clip=_clip(es, sl), mask=es.brain[sl, None])
    assert torch.equal(ex["image"], es.images[2]) and torch.equal(ex["truth"], es.labels[2])
    assert torch.equal(ex["adv"], want[0])
    outside = ~es.brain[2]
    assert torch.equal(ex["adv"][:, outside], es.images[2][:, outside]) and not torch.equal(ex["adv"], es.images[2])
    assert (ex["adv"] <= _clip(es)[1][2]).all() and (ex["adv"] >= _clip(es)[0][2]).all()
    assert (ex["adv"] - es.images[2]).abs().amax() > 0.49  # the full budget was used somewhere
    with torch.no_grad():
        assert torch.equal(ex["pred_clean"], net(es.images[sl]).argmax(1)[0]) and torch.equal(ex["pred_adv"], net(want).argmax(1)[0])


def test_attack_table_runs_the_spec_alpha_steps_mask_and_clip() -> None:
    """attack_table's Dice at eps 0.3 of i-FGSM with alpha_frac 0.5 and 2 steps equals that of attacks.ifgsm run by
    hand with alpha 0.15, the brain mask and the per-case clip (oracle: the attack and the metrics called directly)."""
    from robustseg_lib import attacks

    es, net = _eval_set(3), _net().eval()
    spec_a = AttackSpec("ifgsm", (0.0, 0.3), steps=2, alpha_frac=0.5)
    res, _ = evaluation.attack_table(net, es, spec_a, "m", _ONE_PASS, percept=False)
    got = res[(res.eps == 0.3) & (res.region == "WT")].sort_values("case_id")["dice"].tolist()
    adv = attacks.ifgsm(net, es.images, es.labels, 0.3, 0.15, 2, clip=_clip(es), mask=es.brain[:, None])
    with torch.no_grad():
        want = _wt_dice(net(adv).argmax(1), es.labels)
        other = _wt_dice(net(attacks.ifgsm(net, es.images, es.labels, 0.3, 0.075, 2)).argmax(1), es.labels)
    assert got == pytest.approx(want, abs=1e-12) and other != pytest.approx(want, abs=1e-12)


def test_evaluate_under_attacks_has_clean_rows_and_only_the_largest_eps() -> None:
    """Clean rows (attack "clean", eps 0) hold the Dice of the net's own argmax; largest_eps_only keeps each attack's
    largest eps only (oracle: metrics.dice_per_region, and max of the grid)."""
    es, net = _eval_set(2), _net().eval()
    res, _ = evaluation.evaluate_under_attacks(net, es, [AttackSpec("fgsm", (0.0, 0.1, 0.3))], "m", _ONE_PASS, largest_eps_only=True)
    assert sorted(res.attack.unique()) == ["clean", "fgsm"] and sorted(res[res.attack == "fgsm"].eps.unique()) == [0.3]
    clean = res[(res.attack == "clean") & (res.region == "WT")].sort_values("case_id")
    with torch.no_grad():
        assert clean.dice.tolist() == pytest.approx(_wt_dice(net(es.images).argmax(1), es.labels), abs=1e-12)
    assert (clean.eps == 0).all()


def test_evaluate_under_attacks_refuses_empty_or_wrong_specs_up_front(monkeypatch) -> None:
    """An empty attack list is refused before any model runs, with an error naming ``specs`` (it used to die in
    pd.concat after the clean predictions); so are a bare AttackSpec and non-AttackSpec entries."""
    es, net = _eval_set(2), _net().eval()

    def no_model_run(*a, **k):
        raise AssertionError("the model ran before the specs were checked")

    monkeypatch.setattr(evaluation, "clean_table", no_model_run)
    with pytest.raises(ValueError, match="specs is empty"):
        evaluation.evaluate_under_attacks(net, es, [], "m", _ONE_PASS)
    with pytest.raises(TypeError, match="specs must be a list"):
        evaluation.evaluate_under_attacks(net, es, AttackSpec("fgsm", (0.1,)), "m", _ONE_PASS)
    with pytest.raises(TypeError, match="specs must hold AttackSpec"):
        evaluation.evaluate_under_attacks(net, es, [{"attack": "fgsm", "eps_grid": (0.1,)}], "m", _ONE_PASS)


def test_iteration_curve_matches_a_hand_loop_over_the_attack_iterates() -> None:
    """Each row's Dice is that of the net's argmax on i-FGSM's k-th iterate with alpha = alpha_frac·eps, the brain
    mask and the clip (oracle: attacks.ifgsm's callback and metrics.dice_per_region); FGSM is refused."""
    from robustseg_lib import attacks
    from robustseg_lib.metrics import dice_per_region

    es, net = _eval_set(3), _net().eval()
    spec_a = AttackSpec("ifgsm", (0.4,), steps=3, alpha_frac=0.25)
    curve = evaluation.iteration_curve(net, es, spec_a, 0.4, _ONE_PASS, batch_size=2)
    iterates: list[tuple[int, torch.Tensor]] = []
    attacks.ifgsm(net, es.images, es.labels, 0.4, 0.1, 3, clip=_clip(es), mask=es.brain[:, None],
                  callback=lambda k, xk: iterates.append((k, xk.detach())))
    for k, xk in iterates:
        with torch.no_grad():
            pred = net(xk).argmax(1)
        for i, cid in enumerate(es.case_ids):
            for region, d in dice_per_region(pred[i], es.labels[i]).items():
                row = curve[(curve.case_id == cid) & (curve.iteration == k) & (curve.region == region)]
                assert row.dice.tolist() == [pytest.approx(d, abs=1e-12)], (k, cid, region)
    with pytest.raises(ValueError, match="iterative"):
        evaluation.iteration_curve(net, es, AttackSpec("fgsm", (0.4,)), 0.4, _ONE_PASS)


def test_masking_diagnostics_transfer_rescaled_and_summary_by_hand() -> None:
    """(a) transfer rows: FGSM crafted on the source, scored on the defended net; (b) rescaled rows: FGSM on the
    defended logits × rescale, scored on the defended net (oracle: attacks.fgsm and the metrics called directly);
    summary: dice_direct is the mean WT Dice of the given direct rows at the largest eps only, and the verdict reads
    (direct, transfer, rescaled) in that order."""
    from robustseg_lib import attacks
    from robustseg_lib.models import LogitScale

    es, eps = _eval_set(3), 0.5
    source = _net().eval()
    torch.manual_seed(7)
    inner = torch.nn.Sequential(torch.nn.Conv3d(4, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(8, 4, 1)).eval()
    defended = LogitScale(inner, 30.0)
    direct = pd.DataFrame({"case_id": ["c0", "c0", "c1", "c1", "c0", "c1"], "model": "d", "attack": "fgsm",
                           "eps": [eps, eps, eps, eps, 0.25, 0.25], "region": ["WT", "TC", "WT", "TC", "WT", "WT"],
                           "dice": [0.9, 0.1, 0.7, 0.1, 0.2, 0.2]})
    results, summary = evaluation.masking_diagnostics(defended, es, [AttackSpec("fgsm", (0.25, eps))], "d", _ONE_PASS,
                                                      source=source, rescale=1 / 30, direct=direct)
    assert sorted(results.attack.unique()) == ["fgsm_logit_rescaled", "transfer_fgsm"]
    clip, mask = _clip(es), es.brain[:, None]
    with torch.no_grad():
        transfer = _wt_dice(defended(attacks.fgsm(source, es.images, es.labels, eps, clip=clip, mask=mask)).argmax(1), es.labels)
        rescaled = _wt_dice(defended(attacks.fgsm(LogitScale(defended, 1 / 30), es.images, es.labels, eps, clip=clip, mask=mask)).argmax(1), es.labels)
        on_defended = _wt_dice(defended(attacks.fgsm(defended, es.images, es.labels, eps, clip=clip, mask=mask)).argmax(1), es.labels)
        on_source = _wt_dice(source(attacks.fgsm(source, es.images, es.labels, eps, clip=clip, mask=mask)).argmax(1), es.labels)
    assert transfer != pytest.approx(on_defended) and transfer != pytest.approx(on_source)  # the roles matter here
    assert rescaled != pytest.approx(on_defended)
    for name, want in (("transfer_fgsm", transfer), ("fgsm_logit_rescaled", rescaled)):
        got = results[(results.attack == name) & (results.eps == eps) & (results.region == "WT")].sort_values("case_id")
        assert got.dice.tolist() == pytest.approx(want, abs=1e-12), name
    row = summary.iloc[0]
    assert row["eps"] == eps and row["dice_direct"] == pytest.approx(0.8, abs=1e-12)
    assert row["dice_transfer"] == pytest.approx(np.mean(transfer)) and row["dice_logit_rescaled"] == pytest.approx(np.mean(rescaled))
    assert row["verdict"] == evaluation.masking_verdict(0.8, np.mean(transfer), np.mean(rescaled))
    assert row["verdict"] != evaluation.masking_verdict(np.mean(transfer), 0.8, np.mean(rescaled))


def test_masking_verdict_margin_and_ties_are_strict() -> None:
    """Docstring: masking only when a diagnostic is *more than* the margin below the direct attack (exactly the margin
    is not), and "stronger" means strictly lower (a tie is no sign). Hand values exact in binary."""
    v = evaluation.masking_verdict
    assert v(0.5, 0.25, margin=0.25).startswith("no clear sign of gradient masking")
    assert v(0.5, 0.2, margin=0.25).startswith("gradient masking")
    assert v(0.5, 0.5, 0.5).startswith("no sign of gradient masking")
    assert v(0.5, 0.5, margin=0.0).startswith("no sign of gradient masking") and v(0.5, 0.25, margin=0.0).startswith("gradient masking")


def test_paper_attacks_keeps_the_recorded_ti_fgsm_policy_only_and_read_results_filters_models(tmp_path) -> None:
    """paper_attacks drops ti-FGSM rows of policies not recorded in attacks/*.json and keeps every other attack;
    read_results(models=[...]) keeps those models' rows, with case ids read as strings (oracle: hand tables)."""
    from robustseg_lib.artefacts import RunPaths

    run = RunPaths(tmp_path / "run")
    for spec_a in (AttackSpec("fgsm", (0.1,)), AttackSpec("tifgsm", (0.1,), policy="erase")):
        evaluation.save_attack_spec(run, spec_a)
    table = pd.DataFrame({"attack": ["clean", "fgsm", "tifgsm", "tifgsm", "transfer_fgsm"],
                          "target_policy": [None, None, "erase", "grow", None], "dice": [1.0, 0.5, 0.4, 0.3, 0.6]})
    assert evaluation.paper_attacks(run, table).dice.tolist() == [1.0, 0.5, 0.4, 0.6]
    # notebook 05 rerun with another policy: its record replaces the earlier one, and only its rows are the paper's
    evaluation.save_attack_spec(run, AttackSpec("tifgsm", (0.1,), policy="grow"))
    assert [s.name for s in evaluation.load_attack_specs(run)] == ["fgsm", "tifgsm_grow"]
    assert evaluation.paper_attacks(run, table).dice.tolist() == [1.0, 0.5, 0.3, 0.6]
    run.tables.mkdir(parents=True, exist_ok=True)
    for m in ("a", "b", "c"):
        pd.DataFrame({"case_id": ["007", "010"], "model": m, "dice": [0.1, 0.2]}).to_csv(run.tables / f"results_{m}.csv", index=False)
    df = evaluation.read_results(run, models=["a", "c"])
    assert df.model.tolist() == ["a", "a", "c", "c"] and df.case_id.tolist() == ["007", "010"] * 2
    assert len(evaluation.read_results(run)) == 6


def test_load_attack_specs_selects_by_name_and_refuses_a_bare_string(tmp_path) -> None:
    """names=[...] keeps those records in the fgsm, ifgsm, tifgsm order; a bare string (whose characters would be
    taken as names) is refused with the list it should have been; an unknown name is named."""
    from robustseg_lib.artefacts import RunPaths

    run = RunPaths(tmp_path / "run")
    for spec_a in (AttackSpec("tifgsm", (0.1,), policy="erase"), AttackSpec("ifgsm", (0.1,)), AttackSpec("fgsm", (0.1,))):
        evaluation.save_attack_spec(run, spec_a)
    assert [s.name for s in evaluation.load_attack_specs(run, ["tifgsm_erase", "fgsm"])] == ["fgsm", "tifgsm_erase"]
    with pytest.raises(ValueError, match=r"names: expected a list of attack record names, e\.g\. \['fgsm'\]"):
        evaluation.load_attack_specs(run, "fgsm")
    with pytest.raises(ValueError, match=r"attacks \['pgd'\] not recorded"):
        evaluation.load_attack_specs(run, ["pgd"])


def test_gallery_attacks_each_model_itself_and_takes_no_source_model() -> None:
    """gallery(models, es, specs, spec): per model, the clean prediction and the prediction under each attack at
    its largest eps, the attack made on that model (oracle: attacks.fgsm on case 1 and the net's argmax). The unused
    ``source`` argument is gone: the first argument is the dict of models."""
    from robustseg_lib import attacks

    es = _eval_set(2)
    nets = {"a": _net().eval(), "b": torch.nn.Conv3d(4, 4, 1).eval()}
    g = evaluation.gallery(nets, es, [AttackSpec("fgsm", (0.1, 0.5))], _ONE_PASS, case_index=1)
    assert torch.equal(g["image"], es.images[1]) and torch.equal(g["truth"], es.labels[1]) and g["case_id"] == "c1"
    assert list(g["panels"]) == [("a", "clean"), ("a", "fgsm ε=0.5"), ("b", "clean"), ("b", "fgsm ε=0.5")]
    sl = slice(1, 2)
    for name, net in nets.items():
        adv = attacks.fgsm(net, es.images[sl], es.labels[sl], 0.5, clip=_clip(es, sl), mask=es.brain[sl, None])
        with torch.no_grad():
            assert torch.equal(g["panels"][(name, "clean")], net(es.images[sl]).argmax(1)[0])
            assert torch.equal(g["panels"][(name, "fgsm ε=0.5")], net(adv).argmax(1)[0])


def test_device_arguments_follow_resolve_device(monkeypatch) -> None:
    """Every evaluation function takes what runtime.resolve_device takes: "auto" (here the CPU) gives the same table
    as "cpu" (it used to reach net.to("auto") and fail in torch); a non-device is refused by a ValueError naming
    ``device`` before anything runs (an int used to reach torch's CUDA init, a bad string torch's parser)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    es, net = _eval_set(2), _net().eval()
    spec_a = AttackSpec("ifgsm", (0.3,), steps=2)
    want = evaluation.clean_table(net, es, "m", _ONE_PASS, device="cpu", hd95=False)
    pd.testing.assert_frame_equal(evaluation.clean_table(net, es, "m", _ONE_PASS, device="auto", hd95=False), want)
    images, labels = evaluation.resident(es, "auto")
    assert images is es.images and labels is es.labels
    calls = [
        lambda d: evaluation.predict_set(net, es, _ONE_PASS, device=d),
        lambda d: evaluation.clean_table(net, es, "m", _ONE_PASS, device=d),
        lambda d: evaluation.attack_table(net, es, spec_a, "m", _ONE_PASS, device=d),
        lambda d: evaluation.evaluate_under_attacks(net, es, [spec_a], "m", _ONE_PASS, device=d),
        lambda d: evaluation.attack_example(net, es, spec_a, 0.3, _ONE_PASS, device=d),
        lambda d: evaluation.iteration_curve(net, es, spec_a, 0.3, _ONE_PASS, device=d),
        lambda d: evaluation.masking_diagnostics(net, es, [spec_a], "m", _ONE_PASS, source=net, device=d),
        lambda d: evaluation.gallery({"m": net}, es, [spec_a], _ONE_PASS, device=d),
        lambda d: evaluation.resident(es, d),
    ]
    for call in calls:
        for bad, match in ((0, "device must be a string"), ("gpu", "device='gpu' is not a device"), ("cuda", "CUDA is not available")):
            with pytest.raises(ValueError, match=match):
                call(bad)


def _old_iteration_curve(net, es, spec_a, eps, spec, batch_size):
    """iteration_curve as it was before it scored iterates in the callback: every iterate kept, then all scored after the attack."""
    from robustseg_lib import attacks
    from robustseg_lib.metrics import dice_per_region

    torch.manual_seed(0)
    net = net.eval()
    model = evaluation.wrap_model(net, spec, es.images.shape[2:])
    rows = []
    for start in range(0, len(es), batch_size):
        sl = slice(start, start + batch_size)
        x, y = es.images[sl], es.labels[sl]
        clip = (es.lo[sl][..., None, None, None], es.hi[sl][..., None, None, None])
        iterates = []
        cb = lambda k, xk: iterates.append((k, xk.detach()))  # noqa: E731
        if spec_a.attack == "ifgsm":
            attacks.ifgsm(model, x, y, eps, spec_a.alpha_frac * eps, spec_a.steps, clip=clip, mask=es.brain[sl][:, None], callback=cb)
        else:
            attacks.tifgsm(model, x, attacks.make_target(y, spec_a.policy), eps, spec_a.alpha_frac * eps, spec_a.steps, clip=clip,
                           mask=es.brain[sl][:, None], callback=cb)
        with torch.no_grad():
            for k, xk in iterates:
                pred = model(xk).argmax(1).cpu()
                for i in range(len(pred)):
                    for region, d in dice_per_region(pred[i], es.labels[sl][i]).items():
                        rows.append({"case_id": es.case_ids[start + i], "iteration": k, "region": region, "dice": d})
    return pd.DataFrame(rows)


def test_iteration_curve_scores_each_iterate_as_it_comes_and_equals_the_old_algorithm(monkeypatch) -> None:
    """Each iterate is freed before the attack produces the next (it was kept until the attack ended: steps + 1
    volumes on the device), and the table is bit-identical to the old keep-then-score algorithm (above), for i-FGSM
    and ti-FGSM, one pass and sliding window, eps 0 included."""
    import weakref

    from robustseg_lib import attacks

    es, net = _eval_set(3), _net().eval()
    alive_at_call: list[int] = []
    real_ifgsm = attacks.ifgsm

    def watching_ifgsm(*args, callback, **kwargs):
        refs: list[weakref.ref] = []

        def cb(k, xk):
            alive_at_call.append(sum(r() is not None for r in refs))
            refs.append(weakref.ref(xk.untyped_storage()))  # its storage: a detached view keeps it alive
            callback(k, xk)

        return real_ifgsm(*args, callback=cb, **kwargs)

    monkeypatch.setattr(attacks, "ifgsm", watching_ifgsm)
    spec_a = AttackSpec("ifgsm", (0.3,), steps=3)
    got = evaluation.iteration_curve(net, es, spec_a, 0.3, _ONE_PASS, batch_size=2)
    assert alive_at_call == [0] * 8  # 2 batches × (steps + 1) iterates, none alive when the next arrives
    monkeypatch.setattr(attacks, "ifgsm", real_ifgsm)
    pd.testing.assert_frame_equal(got, _old_iteration_curve(net, es, spec_a, 0.3, _ONE_PASS, 2), check_exact=True)
    sliding = {"name": "unet", "crop": [8, 8, 4], "overlap": 0.5}
    for spec_a, eps, spec in ((AttackSpec("ifgsm", (0.3,), steps=2), 0.0, _ONE_PASS),
                              (AttackSpec("tifgsm", (0.3,), steps=2, policy="erase"), 0.3, sliding)):
        got = evaluation.iteration_curve(net, es, spec_a, eps, spec, batch_size=2)
        pd.testing.assert_frame_equal(got, _old_iteration_curve(net, es, spec_a, eps, spec, 2), check_exact=True)


def test_masking_diagnostics_reads_only_the_named_models_direct_rows() -> None:
    """A ``direct`` table that also holds another model's rows at the same attack and eps (e.g. the whole run's
    ``read_results``) must give dice_direct from the named model's WT rows alone. Oracle: the hand mean of model
    "d"'s WT rows, (0.9 + 0.7) / 2 = 0.8; the other model's rows (0.1, 0.1) would pull a pooled mean to 0.45."""
    es, eps = _eval_set(2), 0.5
    source, defended = _net().eval(), _net().eval()
    direct = pd.DataFrame({"case_id": ["c0", "c1", "c0", "c1"], "model": ["d", "d", "baseline", "baseline"],
                           "attack": "fgsm", "eps": eps, "region": "WT", "dice": [0.9, 0.7, 0.1, 0.1]})
    _, summary = evaluation.masking_diagnostics(defended, es, [AttackSpec("fgsm", (eps,))], "d", _ONE_PASS,
                                                source=source, direct=direct)
    assert summary.iloc[0]["dice_direct"] == pytest.approx(0.8, abs=1e-12)


def test_with_baseline_keeps_the_paper_attacks_of_the_baseline_and_the_defense(tmp_path) -> None:
    """with_baseline joins the baseline's rows of the run's tables to a defense's results and drops notebook 05's
    extra ti-FGSM policies (baseline only), so that a table of both never mixes them (oracle: hand tables)."""
    from robustseg_lib.artefacts import RunPaths

    run = RunPaths(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="no results"):
        evaluation.with_baseline(run, pd.DataFrame())
    evaluation.save_attack_spec(run, AttackSpec("tifgsm", (1.0,), policy="erase"))
    run.tables.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"case_id": ["1", "1", "1"], "model": "baseline", "attack": ["clean", "tifgsm", "tifgsm"],
                  "target_policy": [None, "erase", "et_to_ncr"], "eps": [0.0, 1.0, 1.0], "region": "WT",
                  "dice": [0.8, 0.0, 0.9]}).to_csv(run.table("results_05_tifgsm"), index=False)
    pd.DataFrame({"case_id": ["1"], "model": "other", "attack": ["clean"], "eps": [0.0], "region": "WT",
                  "dice": [0.5]}).to_csv(run.table("results_99_other"), index=False)
    defense = pd.DataFrame({"case_id": ["1"], "model": "advtrain", "attack": ["tifgsm"], "target_policy": ["erase"],
                            "eps": [1.0], "region": "WT", "dice": [0.4]})
    both = evaluation.with_baseline(run, defense)
    assert list(zip(both.model, both.attack, both.dice)) == [("baseline", "clean", 0.8), ("baseline", "tifgsm", 0.0),
                                                              ("advtrain", "tifgsm", 0.4)]
    with pytest.raises(ValueError, match="results: expected a pandas DataFrame"):
        evaluation.with_baseline(run, defense.to_dict())
    pd.DataFrame({"case_id": ["1"], "model": "x", "dice": [0.1]}).to_csv(run.table("results_05_tifgsm"), index=False)
    with pytest.raises(FileNotFoundError, match="no baseline rows"):
        evaluation.with_baseline(run, defense)
