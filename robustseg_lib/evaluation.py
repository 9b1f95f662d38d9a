"""Experiment helpers the notebooks call: splits, clean/attacked evaluation, attack records, diagnostics.

Everything here reads and writes the run folder through :class:`RunPaths`, so each
notebook reads only what earlier notebooks wrote. Every ``device`` argument takes what
:func:`robustseg_lib.runtime.resolve_device` takes (``"auto"``, ``"cpu"``, ``"cuda"``,
``"cuda:N"`` or a ``torch.device``) and is resolved by it (ValueError naming ``device`` otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .artefacts import RunPaths, atomic_write_json, read_json
from .checks import check_float, check_int
from .runtime import resolve_device

__all__ = [
    "MASKING_MARGIN",
    "masking_verdict",
    "EvalSet",
    "AttackSpec",
    "load_split",
    "resident",
    "resident_tensors",
    "wrap_model",
    "predict_set",
    "clean_table",
    "attack_table",
    "evaluate_under_attacks",
    "attack_example",
    "iteration_curve",
    "masking_diagnostics",
    "gallery",
    "save_attack_spec",
    "load_attack_specs",
    "save_train_config",
    "load_train_config",
    "read_results",
    "evaluated_region_volumes",
    "paper_attacks",
    "with_baseline",
]


@dataclass
class EvalSet:
    """One split of the prepared dataset as tensors (CPU).

    Attributes:
        images: ``(N, 4, D, H, W)`` float32, z-scored, zero outside the brain.
        labels: ``(N, D, H, W)`` int64 class maps.
        brain: ``(N, D, H, W)`` bool brain masks.
        lo, hi: ``(N, 4)`` per-case, per-modality intensity range over the brain (attack clip).
        std: ``(N, 4)`` raw-intensity std of each modality (one z-unit in scanner units).
        case_ids: case identifiers.
    """

    images: torch.Tensor
    labels: torch.Tensor
    brain: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    std: torch.Tensor
    case_ids: list[str]

    def __len__(self) -> int:
        return len(self.case_ids)

    def subset(self, n: int) -> "EvalSet":
        """The first ``n`` cases."""
        return EvalSet(self.images[:n], self.labels[:n], self.brain[:n], self.lo[:n], self.hi[:n], self.std[:n], self.case_ids[:n])


def resident(es: EvalSet, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Training tensors for ``device``: on CUDA the whole split moves to the GPU once, images as
    float16 and labels as uint8 (the paper profile's 285 training volumes at its 144×176×144 work shape: 285 × 4 ×
    144·176·144 × 2 B ≈ 8.3 GB of images, 1.0 GB of labels), so the training loop
    (which casts each batch to float32/int64) makes no per-step host-device copies. On the CPU
    the tensors are returned unchanged.

    Args:
        es: the split.
        device: where training runs (see the module docstring; ``"auto"`` allowed).

    Returns:
        ``(images, labels)``.
    """
    return resident_tensors(es.images, es.labels, device)


def resident_tensors(images: torch.Tensor, labels: torch.Tensor, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`resident` for bare tensors (float16 images and uint8 labels on CUDA, unchanged elsewhere).

    Args:
        images, labels: the split's tensors.
        device: where training runs (see the module docstring; ``"auto"`` allowed).

    Returns:
        ``(images, labels)``.
    """
    dev = resolve_device(device)
    if dev.type != "cuda":
        return images, labels
    return images.to(dev, torch.float16), labels.to(dev, torch.uint8)


def load_split(run: RunPaths, split: str) -> EvalSet:
    """Load one split (``train``, ``val`` or ``test``) of ``data/prepared.npz``.

    Args:
        run: the run folder.
        split: split name.

    Returns:
        :class:`EvalSet`.
    """
    from .data import load_prepared

    prep = load_prepared(run.prepared, mmap_images=True)  # reads only this split's images
    sel = np.asarray(prep["split"]) == split
    if not sel.any():
        raise ValueError(f"{run.prepared}: split {split!r} is empty (splits: {sorted(set(prep['split']))})")
    return EvalSet(
        images=torch.from_numpy(np.ascontiguousarray(prep["images"][sel], dtype=np.float32)),
        labels=torch.from_numpy(prep["labels"][sel].astype(np.int64)),
        brain=torch.from_numpy(prep["brain"][sel].astype(bool)),
        lo=torch.from_numpy(prep["lo"][sel].astype(np.float32)),
        hi=torch.from_numpy(prep["hi"][sel].astype(np.float32)),
        std=torch.from_numpy(prep["std"][sel].astype(np.float32)),
        case_ids=[str(c) for c in prep["case_ids"][sel]],
    )


def wrap_model(net: torch.nn.Module, spec: dict[str, Any], shape: Sequence[int]) -> torch.nn.Module:
    """The network as used for prediction on volumes of ``shape`` (see :func:`robustseg_lib.models.inference_roi`).

    Args:
        net: the network.
        spec: its model spec (``crop``, ``overlap``, ``inference``).
        shape: spatial shape of the volumes.

    Returns:
        ``net`` itself (one pass) or a :class:`robustseg_lib.attacks.SlidingWindowModel` around it.
    """
    from .attacks import SlidingWindowModel
    from .models import inference_roi

    roi = inference_roi(spec, shape)
    if roi is None:
        return net
    return SlidingWindowModel(net, roi, sw_batch_size=2, overlap=float(spec.get("overlap", 0.25)))


@torch.no_grad()
def predict_set(net: torch.nn.Module, es: EvalSet, spec: dict[str, Any], *, device: torch.device | str = "cpu", batch_size: int = 2) -> torch.Tensor:
    """Class maps ``(N, D, H, W)`` of a whole split (one pass or sliding window as in :func:`wrap_model`)."""
    from .models import inference_roi, predict_classes

    device = resolve_device(device)
    roi = inference_roi(spec, es.images.shape[2:])
    net = net.to(device)
    return predict_classes(net, es.images, batch_size=batch_size, roi_size=roi, overlap=float(spec.get("overlap", 0.25))).cpu()


def clean_table(net: torch.nn.Module, es: EvalSet, model_name: str, spec: dict[str, Any], *, device: torch.device | str = "cpu", hd95: bool = True) -> pd.DataFrame:
    """Tidy per-case × region table of the clean predictions (attack ``clean``, eps 0)."""
    from .metrics import evaluate

    device = resolve_device(device)
    preds = predict_set(net, es, spec, device=device)
    return evaluate(preds, es.labels, es.case_ids, model=model_name, attack="clean", eps=0.0, steps=0, hd95=hd95)


@dataclass(frozen=True)
class AttackSpec:
    """One attack as run by notebooks 03–05 and replayed on every defended model.

    Attributes:
        attack: ``fgsm``, ``ifgsm`` or ``tifgsm``.
        eps_grid: budgets in z-score units (0 = clean), finite and >= 0.
        steps: iterations (1 for FGSM).
        alpha_frac: step size as a fraction of eps (iterative attacks).
        policy: ti-FGSM target policy (required for ``tifgsm``, None for the others).
    """

    attack: str
    eps_grid: tuple[float, ...]
    steps: int = 1
    alpha_frac: float = 0.25
    policy: str | None = None

    def __post_init__(self) -> None:
        if self.attack not in ("fgsm", "ifgsm", "tifgsm"):
            raise ValueError(f"attack must be fgsm, ifgsm or tifgsm, got {self.attack!r}")
        object.__setattr__(self, "eps_grid", tuple(float(e) for e in self.eps_grid))
        if not self.eps_grid or not all(math.isfinite(e) and e >= 0 for e in self.eps_grid):
            raise ValueError(f"eps_grid must be non-empty, finite and >= 0, got {self.eps_grid}")
        if self.attack == "fgsm":
            object.__setattr__(self, "steps", 1)
        object.__setattr__(self, "steps", check_int(self.steps, "steps", minimum=1))
        # as attack_sweep: alpha_frac 0 would leave every iterate at its start (an attack that never moves)
        object.__setattr__(self, "alpha_frac", check_float(self.alpha_frac, "alpha_frac", minimum=0, strict=True))
        if self.attack == "tifgsm" and not self.policy:
            raise ValueError("tifgsm needs a target policy")
        if self.attack != "tifgsm" and self.policy is not None:  # attack_sweep would refuse it, after the record
            raise ValueError(f"policy is only used by tifgsm, got policy={self.policy!r} for {self.attack}")

    @property
    def name(self) -> str:
        """File-friendly name, e.g. ``ifgsm`` or ``tifgsm_erase``."""
        return f"{self.attack}_{self.policy}" if self.policy else self.attack


def save_attack_spec(run: RunPaths, spec: AttackSpec) -> Path:
    """Record an attack's settings under ``attacks/<name>.json`` (read back by the defense notebooks and notebook 08).

    A run holds one record per attack: an earlier record of the same attack under another name (notebook 05 rerun
    with another ti-FGSM ``policy``) is removed, or notebooks 06-08 would replay and judge both policies.

    Args:
        run: run folder.
        spec: the attack as run.

    Returns:
        The record's path.
    """
    path = atomic_write_json(run.root / "attacks" / f"{spec.name}.json", asdict(spec))
    for other in sorted(path.parent.glob("*.json")):
        if other != path and read_json(other).get("attack") == spec.attack:
            other.unlink()
    return path


def load_attack_specs(run: RunPaths, names: Sequence[str] | None = None) -> list[AttackSpec]:
    """The attacks recorded by notebooks 03–05, in the order fgsm, ifgsm, tifgsm.

    Args:
        run: run folder.
        names: only these (e.g. ``["fgsm", "tifgsm_erase"]``); default all recorded.

    Returns:
        The attack specs, one per record.
    """
    if isinstance(names, str):
        raise ValueError(f"names: expected a list of attack record names, e.g. [{names!r}], got the string {names!r}")
    folder = run.root / "attacks"
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"{folder}: no attack records; run notebooks 03-05 first")
    specs = [AttackSpec(**read_json(f)) for f in files]
    if names is not None:
        known = {s.name for s in specs}
        missing = [n for n in names if n not in known]
        if missing:
            raise ValueError(f"attacks {missing} not recorded in {folder}; recorded: {sorted(known)}")
        specs = [s for s in specs if s.name in names]
    order = {"fgsm": 0, "ifgsm": 1, "tifgsm": 2}
    return sorted(specs, key=lambda s: (order[s.attack], s.name))


def save_train_config(run: RunPaths, name: str, config: Any, result: Any = None) -> Path:
    """Record a model's training config (and best epoch/score) under ``models/<name>.train.json``."""
    cfg = asdict(config) if hasattr(config, "__dataclass_fields__") else dict(config)
    blob = {"config": cfg}
    if result is not None:
        blob.update(best_epoch=int(result.best_epoch), best_score=float(result.best_score), seconds=float(result.seconds))
    return atomic_write_json(run.models / f"{name}.train.json", blob)


def load_train_config(run: RunPaths, name: str) -> dict[str, Any]:
    """The TrainConfig fields recorded for model ``name`` (to train defenses the same way)."""
    from .training import TrainConfig

    blob = read_json(run.models / f"{name}.train.json")
    valid = {f.name for f in fields(TrainConfig)}
    return {k: v for k, v in blob["config"].items() if k in valid}


def _sweep(
    net: torch.nn.Module,
    es: EvalSet,
    spec_a: AttackSpec,
    model_name: str,
    spec: dict[str, Any],
    *,
    device: torch.device | str,
    batch_size: int,
    seed: int,
    predict_net: torch.nn.Module | None = None,
    attack_name: str | None = None,
    keep_examples: int = 0,
    hd95: bool = True,
    percept: bool = True,
):
    from .attacks import attack_sweep

    torch.manual_seed(seed)
    net = net.to(device).eval()
    model = wrap_model(net, spec, es.images.shape[2:])
    predict_fn = None if predict_net is None else wrap_model(predict_net.to(device).eval(), spec, es.images.shape[2:])
    res, per, ex = attack_sweep(
        model, es.images, es.labels, attack=spec_a.attack, eps_grid=spec_a.eps_grid, alpha_frac=spec_a.alpha_frac,
        steps=spec_a.steps, policy=spec_a.policy, clip=(es.lo, es.hi), mask=es.brain, batch_size=batch_size,
        predict_fn=predict_fn, case_ids=es.case_ids, model_name=model_name, keep_examples=keep_examples, hd95=hd95,
        with_percept=percept,
    )
    if attack_name is not None:
        res["attack"] = attack_name
        per["attack"] = attack_name
    return res, per, ex


def attack_table(
    net: torch.nn.Module, es: EvalSet, spec_a: AttackSpec, model_name: str, spec: dict[str, Any], *,
    device: torch.device | str = "cpu", batch_size: int = 2, seed: int = 0, percept: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Attack ``net`` on every case at every eps of ``spec_a``.

    Args:
        percept: also compute perceptibility (L∞, L2, PSNR, SSIM per modality).

    Returns:
        ``(results, percept)``: the tidy Dice/HD95 table and the perceptibility table.
    """
    device = resolve_device(device)
    res, per, _ = _sweep(net, es, spec_a, model_name, spec, device=device, batch_size=batch_size, seed=seed, percept=percept)
    return res, per


def evaluate_under_attacks(
    net: torch.nn.Module, es: EvalSet, specs: Sequence[AttackSpec], model_name: str, spec: dict[str, Any], *,
    device: torch.device | str = "cpu", batch_size: int = 2, seed: int = 0, percept: bool = False,
    largest_eps_only: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Clean rows plus every recorded attack for one model (same cases, eps grids and seeds).

    Perceptibility is off by default here: it depends only on the perturbation, which the
    attack notebooks already characterise for the baseline. ``largest_eps_only`` runs each
    attack at its largest eps only (a cheaper comparison, e.g. of extra temperatures).

    Args:
        specs: the attacks (e.g. :func:`load_attack_specs`), at least one: an empty list is
            refused (use :func:`clean_table` for the clean rows alone), since a defended model's
            table without attack rows would only fail later, in notebook 08.

    Returns:
        ``(results, percept)`` concatenated over the attacks.
    """
    if isinstance(specs, (str, AttackSpec)) or not isinstance(specs, Sequence):
        raise TypeError(f"specs must be a list of AttackSpec, got {type(specs).__name__}")
    if not specs:
        raise ValueError("specs is empty: evaluate_under_attacks needs at least one AttackSpec "
                         "(load_attack_specs(run) gives the recorded ones; clean_table gives the clean rows alone)")
    bad = [type(s).__name__ for s in specs if not isinstance(s, AttackSpec)]
    if bad:
        raise TypeError(f"specs must hold AttackSpec objects only, got {', '.join(sorted(set(bad)))}")
    device = resolve_device(device)
    rs = [clean_table(net, es, model_name, spec, device=device)]
    ps = []
    for s in specs:
        if largest_eps_only:
            s = AttackSpec(s.attack, (max(s.eps_grid),), s.steps, s.alpha_frac, s.policy)
        r, p = attack_table(net, es, s, model_name, spec, device=device, batch_size=batch_size, seed=seed, percept=percept)
        rs.append(r)
        ps.append(p)
    return pd.concat(rs, ignore_index=True), pd.concat(ps, ignore_index=True)


def attack_example(
    net: torch.nn.Module, es: EvalSet, spec_a: AttackSpec, eps: float, spec: dict[str, Any], *,
    case_index: int = 0, device: torch.device | str = "cpu", seed: int = 0,
) -> dict[str, Any]:
    """Clean and adversarial image and predictions of one case (for ``viz.plot_attack_example``)."""
    device = resolve_device(device)
    one = EvalSet(*(t[case_index : case_index + 1] for t in (es.images, es.labels, es.brain, es.lo, es.hi, es.std)), es.case_ids[case_index : case_index + 1])
    single = AttackSpec(spec_a.attack, (0.0, float(eps)), spec_a.steps, spec_a.alpha_frac, spec_a.policy)
    res, _, ex = _sweep(net, one, single, "example", spec, device=device, batch_size=1, seed=seed, keep_examples=1, hd95=False, percept=False)
    return {
        "image": one.images[0], "adv": ex[float(eps)]["x_adv"][0], "truth": one.labels[0],
        "pred_clean": ex[0.0]["pred"][0], "pred_adv": ex[float(eps)]["pred"][0],
    }


def iteration_curve(
    net: torch.nn.Module, es: EvalSet, spec_a: AttackSpec, eps: float, spec: dict[str, Any], *,
    device: torch.device | str = "cpu", batch_size: int = 2, seed: int = 0,
) -> pd.DataFrame:
    """Dice per case and region after each iteration k = 0..steps of an iterative attack at ``eps``.

    Runs the attack once per batch; its callback (which also reports k = 0, the clean input)
    predicts and scores each iterate as soon as it is produced, so only one iterate is alive
    at a time: memory does not grow with ``spec_a.steps``.

    Args:
        net: the attacked network (wrapped as for prediction, :func:`wrap_model`).
        es: the cases.
        spec_a: an iterative attack (``ifgsm`` or ``tifgsm``); its steps, alpha_frac and policy are used.
        eps: the budget.
        spec: the network's model spec.
        device: see the module docstring.
        batch_size: cases per attack call.
        seed: seeds torch before the attack.

    Returns:
        One row per case, region and iteration: ``case_id, iteration, region, dice``.
    """
    from . import attacks
    from .attacks import make_target
    from .metrics import dice_per_region

    if spec_a.attack == "fgsm":
        raise ValueError("iteration_curve needs an iterative attack (ifgsm or tifgsm)")
    device = resolve_device(device)
    torch.manual_seed(seed)
    net = net.to(device).eval()
    model = wrap_model(net, spec, es.images.shape[2:])
    rows = []
    for start in range(0, len(es), batch_size):
        sl = slice(start, start + batch_size)
        x, y = es.images[sl].to(device), es.labels[sl].to(device)
        clip = (es.lo[sl].to(device)[..., None, None, None], es.hi[sl].to(device)[..., None, None, None])
        mask = es.brain[sl].to(device)[:, None]
        labels, ids = es.labels[sl], es.case_ids[sl]

        def score(k: int, xk: torch.Tensor, labels: torch.Tensor = labels, ids: list[str] = ids) -> None:
            with torch.no_grad():  # the callback runs under no_grad already, with the model in eval mode
                pred = model(xk).argmax(1).cpu()
            for i in range(len(pred)):
                for region, d in dice_per_region(pred[i], labels[i]).items():
                    rows.append({"case_id": ids[i], "iteration": k, "region": region, "dice": d})

        if spec_a.attack == "ifgsm":
            attacks.ifgsm(model, x, y, eps, spec_a.alpha_frac * eps, spec_a.steps, clip=clip, mask=mask, callback=score)
        else:
            attacks.tifgsm(model, x, make_target(y, spec_a.policy), eps, spec_a.alpha_frac * eps, spec_a.steps, clip=clip, mask=mask, callback=score)
    return pd.DataFrame(rows)


def masking_diagnostics(
    net: torch.nn.Module, es: EvalSet, specs: Sequence[AttackSpec], model_name: str, spec: dict[str, Any], *,
    source: torch.nn.Module, rescale: float | None = None, direct: pd.DataFrame | None = None,
    device: torch.device | str = "cpu", batch_size: int = 2, seed: int = 0, threshold: float = 1e-10,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Gradient-masking diagnostics for a defended model, at each untargeted attack's largest eps.

    (a) transfer: examples crafted on ``source`` (the undefended baseline), evaluated on ``net``
    (attack name ``transfer_<attack>``); (b) if ``rescale`` is given, the attack on
    ``net``'s logits × rescale (``<attack>_logit_rescaled``; same predictions, gradients
    restored); (c) gradient statistics of ``net`` vs ``source`` over the brain
    (:func:`robustseg_lib.defenses.input_gradient_stats`, mean over cases): the fraction of
    near-zero input gradients and the median |input gradient|, which in a UNet stay non-zero
    even under saturation, and the fraction of *saturated* output voxels (float32 softmax
    probability of the true class exactly 1: no loss gradient), which shows it.
    ``direct`` (the model's own attacked results, e.g. from :func:`evaluate_under_attacks`)
    avoids recomputing the direct attacks for the summary.

    Returns:
        ``(results, summary)``: tidy rows for (a)/(b), and a per-attack summary at the
        largest eps: mean WT Dice of the direct, transfer and rescaled attacks plus the
        gradient statistics (``frac_near_zero_grad``, ``median_abs_grad``,
        ``frac_saturated_voxels``, each also ``*_baseline`` for ``source``), with a one-line
        verdict from (a) and (b).
    """
    from .defenses import input_gradient_stats
    from .models import LogitScale

    device = resolve_device(device)

    untargeted = [AttackSpec(s.attack, (max(s.eps_grid),), s.steps, s.alpha_frac) for s in specs if s.attack in ("fgsm", "ifgsm")]
    rows = []
    for s in untargeted:  # at each attack's largest eps: where masking would show most
        r, _, _ = _sweep(source, es, s, model_name, spec, device=device, batch_size=batch_size, seed=seed, predict_net=net, attack_name=f"transfer_{s.attack}", percept=False)
        r["source_model"] = "baseline"
        rows.append(r)
        if rescale is not None:
            r2, _, _ = _sweep(LogitScale(net, rescale), es, s, model_name, spec, device=device, batch_size=batch_size, seed=seed, predict_net=net, attack_name=f"{s.attack}_logit_rescaled", percept=False)
            rows.append(r2)
    results = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    # (c) input-gradient statistics over the brain
    grads = {}
    for name, m in (("defended", net), ("baseline", source)):
        wm = wrap_model(m.to(device).eval(), spec, es.images.shape[2:])
        stats_ = [input_gradient_stats(wm, es.images[i : i + 1].to(device), es.labels[i : i + 1].to(device), mask=es.brain[i : i + 1, None].to(device), threshold=threshold) for i in range(len(es))]
        grads[name] = {k: float(np.mean([d[k] for d in stats_])) for k in stats_[0]}
    summary = []
    for s in untargeted:
        e = max(s.eps_grid)
        if direct is not None and ((direct.attack == s.attack) & np.isclose(direct.eps, e) & (direct.model == model_name)).any():
            direct_e = direct[(direct.attack == s.attack) & np.isclose(direct.eps, e) & (direct.model == model_name)]
        else:
            direct_e = _sweep(net, es, AttackSpec(s.attack, (e,), s.steps, s.alpha_frac), model_name, spec, device=device, batch_size=batch_size, seed=seed, hd95=False, percept=False)[0]
        direct_v = _mean_dice(direct_e)
        transfer = _mean_dice(results[(results.attack == f"transfer_{s.attack}") & (results.eps == e)])
        resc = _mean_dice(results[(results.attack == f"{s.attack}_logit_rescaled") & (results.eps == e)]) if rescale is not None else float("nan")
        summary.append({
            "model": model_name, "attack": s.attack, "eps": e, "dice_direct": direct_v, "dice_transfer": transfer,
            "dice_logit_rescaled": resc, "frac_near_zero_grad": grads["defended"]["frac_near_zero"],
            "frac_near_zero_grad_baseline": grads["baseline"]["frac_near_zero"],
            "median_abs_grad": grads["defended"]["median_abs"], "median_abs_grad_baseline": grads["baseline"]["median_abs"],
            "frac_saturated_voxels": grads["defended"]["frac_saturated_voxels"],
            "frac_saturated_voxels_baseline": grads["baseline"]["frac_saturated_voxels"],
            "verdict": masking_verdict(direct_v, transfer, resc),
        })
    return results, pd.DataFrame(summary)


#: How much lower (WT Dice) a diagnostic attack must go than the direct one to be read as gradient masking.
MASKING_MARGIN = 0.05


def masking_verdict(direct: float, transfer: float, rescaled: float = float("nan"), margin: float = MASKING_MARGIN) -> str:
    """One-line reading of the gradient-masking diagnostics of one attack.

    Args:
        direct: mean WT Dice under the attack computed on the defended model itself.
        transfer: mean WT Dice under the same attack crafted on the undefended baseline (NaN if not run).
        rescaled: mean WT Dice under the attack on the logits divided back (NaN if not run).
        margin: a diagnostic attack must be this much stronger than the direct one to count as masking.

    Returns:
        "gradient masking: …" when a diagnostic attack lowers Dice by more than ``margin`` below the direct attack;
        otherwise "no sign of gradient masking", saying whether the direct attack was the strongest or a diagnostic
        one came within ``margin`` of it.
    """
    vals = {"direct": float(direct), "transfer": float(transfer), "rescaled": float(rescaled)}
    if not np.isfinite(vals["direct"]):
        raise ValueError(f"direct must be a finite Dice, got {direct!r}")
    if not (np.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    diag = {k: v for k, v in vals.items() if k != "direct" and np.isfinite(v)}
    name, worst = min(diag.items(), key=lambda kv: kv[1]) if diag else ("", np.inf)
    what = {"transfer": "the transfer attack from the baseline", "rescaled": "the attack on the rescaled logits"}.get(name, "")
    d = vals["direct"]
    if worst < d - margin:
        return f"gradient masking: {what} lowers WT Dice to {worst:.2f} (direct attack: {d:.2f})"
    if worst < d:
        return (f"no clear sign of gradient masking: {what} is stronger than the direct attack (WT {worst:.2f} vs "
                f"{d:.2f}) by less than {margin:g}; compare with the baseline's")
    return f"no sign of gradient masking: the direct attack is the strongest (WT {d:.2f}); compare it with the baseline's"


def _mean_dice(df: pd.DataFrame, region: str = "WT") -> float:
    d = df[df.region == region]["dice"]
    return float(d.mean()) if len(d) else float("nan")


def gallery(
    models: dict[str, torch.nn.Module], es: EvalSet, specs: Sequence[AttackSpec], spec: dict[str, Any], *,
    case_index: int = 0, device: torch.device | str = "cpu", seed: int = 0,
) -> dict[str, Any]:
    """Predictions of each model on one case, clean and under each attack at its largest eps (attacks made on each model itself).

    Returns:
        ``{"image", "truth", "case_id", "panels": {(model, attack): class map}}`` for ``viz.plot_gallery``.
    """
    device = resolve_device(device)
    panels: dict[tuple[str, str], torch.Tensor] = {}
    for mname, m in models.items():
        for s in specs:
            ex = attack_example(m, es, s, max(s.eps_grid), spec, case_index=case_index, device=device, seed=seed)
            panels[(mname, "clean")] = ex["pred_clean"]
            panels[(mname, f"{s.name} ε={max(s.eps_grid):g}")] = ex["pred_adv"]
    return {"image": es.images[case_index], "truth": es.labels[case_index], "case_id": es.case_ids[case_index], "panels": panels}


def paper_attacks(run: RunPaths, table: pd.DataFrame) -> pd.DataFrame:
    """Rows of the paper's experiment: clean, the recorded attacks (FGSM, i-FGSM and ti-FGSM with
    its main policy, as replayed on every model) and the diagnostics; drops the extra ti-FGSM
    policies that notebook 05 explores on the baseline only.

    Args:
        run: the run folder (its ``attacks/*.json`` records).
        table: tidy results.
    """
    specs = load_attack_specs(run)
    policies = {s.policy for s in specs if s.attack == "tifgsm"}
    keep = table.attack != "tifgsm"
    if "target_policy" in table:
        keep |= (table.attack == "tifgsm") & table.target_policy.isin(policies)
    return table[keep].reset_index(drop=True)


def with_baseline(run: RunPaths, results: pd.DataFrame) -> pd.DataFrame:
    """The baseline's rows of the paper's experiment (the run's ``tables/results_*.csv``) joined to ``results``.

    Only :func:`paper_attacks` rows: the extra ti-FGSM policies of notebook 05 ran on the baseline alone and have
    nothing to compare with.

    Args:
        run: the run folder (its result tables and ``attacks/*.json`` records).
        results: tidy results of other models (a defense notebook's own table).

    Returns:
        The baseline's rows followed by ``results``'s, both restricted to the paper's attacks.
    """
    if not isinstance(results, pd.DataFrame):
        raise ValueError(f"results: expected a pandas DataFrame, got {type(results).__name__}")
    base = read_results(run, models=["baseline"])
    if base.empty:
        raise FileNotFoundError(f"{run.tables}: no baseline rows in results_*.csv; run notebooks 02-05 first")
    return paper_attacks(run, pd.concat([base, results], ignore_index=True))


def read_results(run: RunPaths, models: Sequence[str] | None = None) -> pd.DataFrame:
    """All per-case result tables of the run (``tables/results_*.csv``) in one DataFrame.

    Args:
        run: the run folder.
        models: keep only these models.
    """
    files = sorted(run.tables.glob("results_*.csv"))
    if not files:
        raise FileNotFoundError(f"{run.tables}: no results_*.csv tables; run notebooks 02-07 first")
    df = pd.concat([pd.read_csv(f, dtype={"case_id": str}) for f in files], ignore_index=True)
    if models is not None:
        df = df[df.model.isin(list(models))]
    return df.reset_index(drop=True)



def evaluated_region_volumes(run: RunPaths) -> pd.DataFrame | None:
    """Ground-truth region volumes (notebook 01's ``tables/data_region_volumes.csv``) of the cases that
    appear in the run's result tables.

    Args:
        run: the run folder.

    Returns:
        One row per evaluated case (``case_id``, voxel counts per class and region), or ``None`` when the
        volumes table or the result tables are not there.
    """
    vols = run.tables / "data_region_volumes.csv"
    results = sorted(run.tables.glob("results_*.csv"))
    if not vols.is_file() or not results:
        return None
    ids: set[str] = set()
    for f in results:
        ids |= set(pd.read_csv(f, usecols=["case_id"], dtype={"case_id": str})["case_id"])
    v = pd.read_csv(vols, dtype={"case_id": str})
    return v[v["case_id"].isin(ids)].reset_index(drop=True)
