"""Generate the eight notebooks (badges, navigation, setup and parameter cells) from one source.

Usage: ``python tools/build_notebooks.py`` (rewrites ``notebooks/*.ipynb`` without outputs).
``python tools/build_notebooks.py --check`` exits 1 when a committed notebook differs.
The parameter defaults are the ``teaching`` profile (tests/test_pipeline.py checks it).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
#: Where the project is published (owner/name on GitHub); the badges and the Colab install cell use it.
#: A fork publishing elsewhere changes this one line and reruns this script (README, "Publishing").
REPO = "robustseg/robustseg"
BRANCH = "main"

TITLES = {
    "01_data": "Data: a synthetic BraTS-like dataset (or real BraTS/MSD)",
    "02_unet": "A 3D UNet baseline",
    "03_fgsm": "FGSM: one gradient-sign step",
    "04_ifgsm": "i-FGSM: iterating the gradient sign",
    "05_tifgsm": "ti-FGSM: targeted iterative attacks",
    "06_distillation": "Defense 1: defensive distillation",
    "07_adversarial_training": "Defense 2: adversarial training",
    "08_statistics": "Statistics and the reproduction report",
}


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str, tags: list[str] | None = None):
    cell = new_code_cell(text.strip("\n"))
    if tags:
        cell.metadata["tags"] = tags
    return cell


def header(stage: str, intro: str) -> list:
    names = list(TITLES)
    i = names.index(stage)
    nav = []
    if i > 0:
        nav.append(f"← [{names[i-1]}]({names[i-1]}.ipynb)")
    if i < len(names) - 1:
        nav.append(f"[{names[i+1]}]({names[i+1]}.ipynb) →")
    colab = f"https://colab.research.google.com/github/{REPO}/blob/{BRANCH}/notebooks/{stage}.ipynb"
    binder = f"https://mybinder.org/v2/gh/{REPO}/{BRANCH}?labpath=notebooks%2F{stage}.ipynb"
    badges = (
        f"[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab}) "
        f"[![Binder](https://mybinder.org/badge_logo.svg)]({binder})"
    )
    before = " ".join(names[:i])
    colab_cell = """
# On Colab, install the package once (idempotent); elsewhere it is installed already.
import sys
if "google.colab" in sys.modules:
    import importlib.util, os, subprocess
    if importlib.util.find_spec("robustseg_lib") is None:
        subprocess.run("git clone -q --depth 1 https://github.com/@REPO@ /content/robustseg && "
                       "pip install -q -e /content/robustseg", shell=True, check=True)
        sys.path.insert(0, "/content/robustseg")
    os.chdir("/content/robustseg/notebooks")  # every time: run_dir below is relative to this folder
""".replace("@REPO@", REPO)
    if before:  # each Colab notebook gets a fresh machine: make the earlier notebooks' artefacts first
        colab_cell += """    # A fresh Colab machine has no run folder: run the earlier notebooks headless once (teaching profile;
    # a few minutes on a GPU). Stages already finished there are skipped.
    subprocess.run("robustseg reproduce --profile teaching --out runs/teaching --only @BEFORE@",
                   shell=True, check=True, cwd="/content/robustseg")
""".replace("@BEFORE@", before)
    return [
        md(f"# {stage[:2]} · {TITLES[stage]}\n\n{badges}\n\n{intro}\n\n{' · '.join(nav)}"),
        md("## Setup"),
        code(colab_cell),
    ]


def setup_imports(extra: str) -> object:
    return code(
        f"""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

from robustseg_lib.runtime import print_config, setup_run
{extra.strip()}

pd.set_option("display.precision", 3)
print_config()
"""
    )


def _lit(v) -> str:
    """A Python literal for a profile value (lists, strings, numbers, booleans)."""
    if isinstance(v, str):
        return '"' + v + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_lit(x) for x in v) + "]"
    return repr(v)


def _teaching() -> dict:
    prof = yaml.safe_load((NB_DIR / "profiles" / "teaching.yaml").read_text())
    return prof


def params(stage: str, text: str):
    """The parameters cell; a default the teaching profile sets must equal the profile's value (refused otherwise)."""
    prof = _teaching()
    values = {**(prof.get("common") or {}), **(prof["notebooks"].get(stage) or {})}
    lines = []
    for line in text.strip("\n").splitlines():
        m = re.match(r"^(\w+): ([\w| ]+) = (.*?)(  # .*)$", line)
        if not m:
            raise ValueError(f"{stage}: parameter line not in 'name: type = value  # comment' form: {line!r}")
        name, typ, val, comment = m.groups()
        if "=" in comment:  # papermill's parameter parser gives up on such lines
            raise ValueError(f"{stage}: no '=' in parameter comments: {line!r}")
        if name in values and val != _lit(values[name]):  # the builder's text is read as the defaults too
            raise ValueError(f"{stage}: {name} = {val} here but {_lit(values[name])} in profiles/teaching.yaml: "
                             "make them equal")
        lines.append(f"{name}: {typ} = {val}{comment}")
    return [md("## Parameters\nOne cell tagged `parameters`; papermill injects overrides right after it. Derived values go below."),
            code("\n".join(lines), tags=["parameters"])]


RESOLVE = [
    md("## Resolve run folder, device, seed"),
    code(
        """
run, dev = setup_run(run_dir, seed=seed, device=device)
print(f"run folder: {run.root.resolve()}\\ndevice: {dev}; torch threads: {torch.get_num_threads()}")
"""
    ),
]

COMMON_PARAMS = '''
run_dir: str = "../runs/teaching"  # run folder shared by all notebooks (the pipeline sets it)
device: str = "auto"  # auto | cpu | cuda
seed: int = 0  # seed of every random choice in this notebook
'''


def nb01() -> list:
    return [
        *header(
            "01_data",
            "Brain-tumour segmentation data in the BraTS convention: four co-registered MR series (T1, post-contrast T1, "
            "T2, FLAIR) of a skull-stripped brain and a label map with necrotic/non-enhancing core (NCR), peritumoral "
            "edema (ED) and Gd-enhancing tumour (ET). Nobody can download BraTS inside Binder or CI, so by default we "
            "**generate** a realistic synthetic dataset from the MNI152 brain templates that nilearn ships, written in the "
            "real BraTS layout and read back by the same loaders that read real data (`data_dir`). At BraTS scale "
            "(`write_nifti = False`) only the first case is written; the others are generated and preprocessed in one pass, "
            "with identical arrays.\n\n"
            "**Writes** `data/raw/` (NIfTI), `data/prepared.npz` (z-scored volumes, class maps, split), `tables/data_*.csv`, `figures/data_*.png`.",
        ),
        setup_imports(
            "import shutil\n\nfrom robustseg_lib import data\nfrom robustseg_lib.artefacts import atomic_to_csv, atomic_savefig\nfrom robustseg_lib.viz import plot_case_planes, plot_intensity_distributions"
        ),
        *params(
            "01_data",
            COMMON_PARAMS
            + '''n_cases: int = 48  # synthetic cases to generate
shape: list = [48, 48, 48]  # grid of the generated volumes (BraTS itself is 240 x 240 x 155)
layout: str = "brats2021"  # brats2021 | brats2023 | msd: the on-disk layout written
data_dir: str = ""  # a real BraTS/MSD folder; empty for synthetic data
work_shape: list = [48, 48, 48]  # volumes are cropped to the brain and padded/resized to this
fractions: list = [0.55, 0.15, 0.3]  # train / val / test split
workers: int = 1  # processes generating and preparing cases in parallel (BraTS-scale data on many cores; capped at the CPU budget)
write_nifti: bool = True  # write every synthetic case as NIfTI and prepare from it; False: only case 0 is written, the set is generated and prepared in one pass (identical arrays)
threshold_cases: int = 0  # cases the threshold check fits on: 0 for all, else a seeded sample (BraTS scale)
train_seed: int = -1  # other training and validation cases, the same test cases: synthetic data draws them from this seed, data_dir resamples its own (bootstrap); -1: seed
'''
        ),
        *RESOLVE,
        md("## Get the data\nEither generate the synthetic set in the chosen layout or list a real folder. Both go through `data.list_cases`, which detects the layout. With `write_nifti = False` only case 0 is written here (the next section reads it); the whole set is generated with its preprocessing below."),
        code(
            """
if train_seed < -1:
    raise ValueError(f"train_seed = {train_seed}: expected -1 (the data seed) or a seed >= 0")
redraw = None if train_seed == -1 else train_seed  # other training cases, the same test cases
if data_dir:
    source = data_dir
else:
    shutil.rmtree(run.raw_data, ignore_errors=True)  # the run's own copy, written whole: no case of an earlier call stays
    seeds = data.synthetic_case_seeds(data.case_ids_for(layout, n_cases), seed, train_seed=redraw, fractions=fractions)
    data.make_synthetic_dataset(run.raw_data, n_cases if write_nifti else 1, shape=tuple(shape), seed=seed,
                                layout=layout, workers=workers, case_seeds=seeds[:n_cases if write_nifti else 1])
    source = run.raw_data
cases = data.list_cases(source)
print(f"{len(cases)} cases in {source} (layout {cases[0].layout})")
"""
        ),
        md(
            """
## Label conventions and their pitfalls
| dataset | files | labels |
|---|---|---|
| BraTS 2018–2021 | `<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz` | 1 NCR, 2 ED, **4** ET (3 unused) |
| BraTS 2023 / 2024 GLI | `<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz` | 1 NCR, 2 ED, **3** ET (2024: **4** resection cavity, read as background) |
| MSD Task01 | `imagesTr/BRATS_001.nii.gz` (4-D: FLAIR, T1w, T1gd, T2w), `labelsTr/` | **1 edema, 2 non-enhancing, 3 enhancing** |

So MSD's label 2 is *not* ET (MONAI's own tutorial gets this wrong: tutorials issue 1355), and MONAI's
`ConvertToMultiChannelBasedOnBratsClasses` assumes the 2018 labels. We load everything into one internal representation
(BraTS 2018 values on disk, contiguous classes 0 bg, 1 NCR, 2 ED, 3 ET for training) with explicit converters,
and evaluate the BraTS regions: **WT** = NCR ∪ ED ∪ ET, **TC** = NCR ∪ ET, **ET**. Every volume is also turned to the
same voxel orientation (closest canonical RAS+): BraTS files are stored LPS, MSD's may not be.
"""
        ),
        code(
            """
shown = next((c for c in cases if "seg" in c.paths or "label" in c.paths), None)  # validation folders have no labels
if shown is None:
    raise ValueError(f"{source}: no case has a label file (a validation or test folder?); training needs labelled cases")
image, label, affine = data.load_case(shown)
classes = data.to_classes(label)
print("image", image.shape, image.dtype, "| label values", np.unique(label), "-> classes", np.unique(classes))
fig = plot_case_planes(image, classes, title=shown.case_id)
atomic_savefig(fig, run.figure("data_case_planes"))
plt.show()
"""
        ),
        md("## Preprocess: crop to the brain, z-score each modality over the brain, pad to the working shape, split\nEverything later reads `prepared.npz`: attack budgets are in these z-score units."),
        code(
            """
if data_dir or write_nifti:  # real data with train_seed: a bootstrap of its training and validation cases
    data.prepare_dataset(cases, run.prepared, tuple(work_shape), fractions=tuple(fractions), seed=seed, workers=workers,
                         train_seed=redraw if data_dir else None)
else:  # same arrays as writing NIfTI and preparing from it, without the round trip
    data.prepare_synthetic(run.prepared, n_cases, shape=tuple(shape), work_shape=tuple(work_shape), seed=seed,
                           layout=layout, fractions=tuple(fractions), workers=workers, case_seeds=seeds)
prep = data.load_prepared(run.prepared, mmap_images=True)  # images read on demand (22 GB at BraTS scale)
split = pd.Series(prep["split"]).value_counts().rename("cases")
display(split.to_frame())
if data_dir and redraw not in (None, seed):
    boot = pd.DataFrame({"case": [data.original_case_id(c) for c in prep["case_ids"]], "part": prep["split"]})
    print("bootstrap of the training and validation cases, distinct cases per part:",
          boot.groupby("part")["case"].nunique().to_dict())
print("std of raw intensities (what one z-unit means), mean over cases:", {m: round(float(v), 1) for m, v in zip(data.MODALITIES, prep["std"].mean(0))})
"""
        ),
        md("## Region volumes\nHow big are the regions, and how often is a region absent (ET in non-enhancing tumours)? Empty regions matter for the Dice policy."),
        code(
            """
vols = data.region_volumes(prep["labels"], case_ids=prep["case_ids"])
atomic_to_csv(vols, run.table("data_region_volumes"))
display(vols.describe().T)
"""
        ),
        md("## Intensity per class and modality\nThe contrasts follow the BraTS task description: ET bright on T1c, NCR dark on T1c, ED bright on FLAIR and T2, CSF dark on FLAIR (the figure pools healthy tissue, CSF included). "
           "On a coarse grid they blur: at 48³ a voxel is about 4 mm, so a 2–6 mm enhancing rim shares its voxels with the core and the edema "
           "(partial volume). Each voxel is labelled with its majority class, so voxels labelled ET are brighter than white matter on T1c in every "
           "case, but on average about 1.3 × rather than enhancing tissue's 1.4–1.6 ×, and the core picks up some of the rim's brightness "
           "(measured in [docs/design.md](../docs/design.md#the-synthetic-generator-departures-from-the-brief-and-known-limitations))."),
        code(
            """
fig = plot_intensity_distributions(prep["images"], prep["labels"], prep["brain"])
atomic_savefig(fig, run.figure("data_intensities"))
plt.show()
"""
        ),
        md("## Is it too easy? The best single-channel threshold\nIf one threshold on one modality already segmented a region, a UNet would teach nothing. The search below picks, per region, the best modality, direction and threshold (mean Dice over cases; over a seeded sample of `threshold_cases` cases when that is set)."),
        code(
            """
thr = data.threshold_baseline(prep["images"], prep["labels"], prep["brain"], max_cases=threshold_cases or None)
atomic_to_csv(thr, run.table("data_threshold_baseline"))
display(thr)
"""
        ),
        md(
            """
## Summary
The run folder now holds the dataset in a real BraTS layout and its preprocessed cache. The contrasts are BraTS-like, the
regions nest (ET ⊂ TC ⊂ WT), and a single threshold does not solve the task: it falls far short on TC and ET, where the
UNet in the next notebook has its work. On WT, though, a FLAIR threshold comes close to what the UNet reaches in the
teaching run (compare the table above with notebook 02's): WT, the region the claims are judged on, is the easy one on
these data, as edema is bright on FLAIR in real scans too.

## Exercises
1. Does the on-disk layout change the data? In a new cell, write the first two cases in two layouts to scratch folders,
   `data.make_synthetic_dataset(f"/tmp/layout_{lay}", 2, shape=tuple(shape), seed=seed, layout=lay)` for `lay` in
   `"brats2021"` and `"msd"`, and compare what `data.load_case` returns for each case of `data.list_cases(...)`:
   identical arrays, since MSD's channel order and labels are converted back (setting the `layout` parameter
   instead would rewrite this run's data).
2. Generate one case at BraTS size in a new cell and time it: `%time data.make_synthetic_case(0, shape=(240, 240, 155))`
   (changing the `shape` parameter instead would regenerate all cases and invalidate every later notebook).
3. Which region does the threshold baseline do best on, and why is TC the hardest for a threshold?
4. What do the background look-alikes (white-matter hyperintensities, enhancing vessels) cost a threshold? Generate a
   few cases with and without them, `from robustseg_lib import synthetic` then
   `c = synthetic.generate_case(s, (48, 48, 48), distractors=False)` (same seed `s`: only the distractors differ),
   preprocess each as notebook 01 does, `p = data.preprocess_case(c.image, c.label, (48, 48, 48))` (z-scored
   `p["image"]`, class map `p["classes"]`, `p["brain"]`), and run `data.threshold_baseline` on both sets, each stacked
   with `np.stack` (a second or two a case at 48³).
"""
        ),
    ]


def nb02() -> list:
    return [
        *header(
            "02_unet",
            "Train the baseline every robustness number is measured against: a MONAI 3D UNet with Dice + cross-entropy, "
            "AdamW with a one-cycle cosine schedule, flips and intensity augmentation, and best-checkpoint selection on "
            "validation Dice. Switch `arch` to try another architecture.\n\n"
            "**Reads** `data/prepared.npz`. **Writes** `models/baseline.pt` with its training recipe `models/baseline.train.json` (notebooks 06 and 07 train the same way), `tables/results_02_unet.csv`, `tables/history_baseline.csv`, `figures/unet_*.png`.",
        ),
        setup_imports(
            "from robustseg_lib import evaluation, models\nfrom robustseg_lib.training import TrainConfig, train\nfrom robustseg_lib.artefacts import atomic_to_csv, atomic_savefig\nfrom robustseg_lib.viz_models import plot_history, plot_predictions"
        ),
        *params(
            "02_unet",
            COMMON_PARAMS
            + '''arch: str = "unet"  # unet | basicunet | dynunet
width: int = 16  # channels of the first level (doubling per level)
levels: int = 4  # resolution levels
epochs: int = 15  # training epochs
steps_per_epoch: int = 20  # optimizer steps per epoch
batch_size: int = 2  # volumes (crops) per step
lr: float = 0.005  # peak learning rate
crop: list = [48, 48, 48]  # training crop, also the sliding-window size at inference
sw_overlap: float = 0.25  # sliding-window overlap at inference
inference: str = "sliding"  # volumes larger than crop: sliding (windows of crop) | whole (one pass)
'''
        ),
        *RESOLVE,
        md("## Data\nThe split written by notebook 01."),
        code(
            """
train_set = evaluation.load_split(run, "train")
val_set = evaluation.load_split(run, "val")
test_set = evaluation.load_split(run, "test")
print(f"train {len(train_set)}, val {len(val_set)}, test {len(test_set)} volumes of shape {tuple(train_set.images.shape[1:])}")
"""
        ),
        md("## Model"),
        code(
            """
spec = models.model_spec(arch, width=width, levels=levels, crop=crop, overlap=sw_overlap, inference=inference)
roi = models.inference_roi(spec, train_set.images.shape[2:])  # checks the volume shape up front
net = models.build_unet(spec["name"], seed=seed, **spec["kwargs"])
print(f"{arch}: {sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters; "
      f"inference on {tuple(train_set.images.shape[2:])} volumes: {'one pass' if roi is None else f'sliding windows of {roi}'}")
"""
        ),
        md("## Train\nThe training function keeps a full checkpoint (`models/baseline_ckpt/last.pt`) every epoch: rerunning after a crash resumes where it stopped."),
        code(
            """
cfg = TrainConfig(epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size, lr=lr,
                  crop=tuple(crop), seed=seed, sw_overlap=sw_overlap, inference=inference)
train_x, train_y = evaluation.resident(train_set, dev)  # on a GPU: the whole split stays there (float16)
result = train(net, train_x, train_y, cfg, val_images=val_set.images, val_labels=val_set.labels,
               ckpt_dir=run.models / "baseline_ckpt", device=dev, desc="baseline")
print(f"best epoch {result.best_epoch}, validation score (pooled Dice, mean of regions) {result.best_score:.3f}, {result.seconds:.0f} s")
atomic_to_csv(result.history, run.table("history_baseline"))
fig = plot_history(result.history)
atomic_savefig(fig, run.figure("unet_history"))
plt.show()
"""
        ),
        md(r"""
## Test-set Dice and HD95 per region
For a region with predicted voxels $P$ and true voxels $T$ in one case, $\mathrm{Dice} = 2|P \cap T| / (|P| + |T|)$;
HD95 is the 95th-percentile Hausdorff distance between the two regions' boundaries (symmetric, in voxels). BraTS policy for empty regions: absent
from both truth and prediction scores Dice 1 and HD95 0; absent from exactly one of them scores Dice 0 and HD95 the
image diagonal. (The validation score printed above is different: one *pooled* Dice per region over all validation
voxels, $2\sum TP / (\sum |P| + \sum |T|)$, averaged over the three regions.)
"""),
        code(
            """
models.save_model(net, run.checkpoint("baseline"), spec)
evaluation.save_train_config(run, "baseline", cfg, result)
clean = evaluation.clean_table(net, test_set, "baseline", spec, device=dev)
atomic_to_csv(clean, run.table("results_02_unet"))
display(clean.groupby("region")[["dice", "hd95"]].agg(["mean", "std", "median"]))
"""
        ),
        md("## Predictions beside the ground truth"),
        code(
            """
preds = evaluation.predict_set(net, test_set, spec, device=dev)
fig = plot_predictions(test_set.images[:3], test_set.labels[:3], {"baseline": preds[:3]}, case_ids=test_set.case_ids[:3])
atomic_savefig(fig, run.figure("unet_predictions"))
plt.show()
"""
        ),
        md(
            """
## Summary
`models/baseline.pt` is the undefended model every attack notebook loads; `tables/results_02_unet.csv` starts the tidy
per-case table (case × model × attack × eps × region) that the statistics notebook reads.

## Exercises
Retraining changes `models/baseline.pt`, which notebooks 03–07 load, and `tables/results_02_unet.csv`, which notebook 08
reads: try these on a copy of the run
(`cp -r runs/teaching runs/mine`, then `run_dir = "../runs/mine"`).
1. Set `arch = "basicunet"` and compare the test Dice and the training time.
2. Halve `epochs`: how much Dice do you lose? A weaker baseline makes attacks look stronger: why?
3. Set `crop` smaller than the volume, then compare `inference = "sliding"` (windows of the crop) with `"whole"`
   (one pass over the volume; the network is fully convolutional): test Dice and time.
"""
        ),
    ]


#: Exercises that rewrite a run's artefacts: try them on a copy of the run.
COPY_RUN = ("Exercises that change results later notebooks read are best tried on a copy of the run "
            "(`cp -r runs/teaching runs/mine`, then `run_dir = \"../runs/mine\"`).\n")

ATTACK_PARAMS = '''batch_size: int = 4  # volumes per attack call
'''


def attack_nb(stage: str, intro: str, extra_params: str, explain: str, spec_code: str, extra_cells: list, exercises: str) -> list:
    return [
        *header(stage, intro),
        setup_imports(
            "from robustseg_lib import attacks, evaluation, models\nfrom robustseg_lib.artefacts import atomic_to_csv, atomic_savefig\nfrom robustseg_lib.viz_models import plot_attack_example\nfrom robustseg_lib.viz_stats import plot_robustness_curves"
        ),
        *params(stage, COMMON_PARAMS + extra_params + ATTACK_PARAMS),
        *RESOLVE,
        md(explain),
        code(
            """
net, spec = models.load_model(run.checkpoint("baseline"), device=dev)
test_set = evaluation.load_split(run, "test")
"""
            + spec_code
            + """
evaluation.save_attack_spec(run, attack_spec)
print(attack_spec)
"""
        ),
        md("## Sweep eps\nEvery test case at every eps; eps 0 is the clean prediction. The perturbation is confined to the brain and clipped to each volume's per-modality intensity range."),
        code(
            """
results, percept = evaluation.attack_table(net, test_set, attack_spec, "baseline", spec, device=dev, batch_size=batch_size, seed=seed)
atomic_to_csv(results, run.table("results_@STAGE@"))
atomic_to_csv(percept, run.table("percept_@STAGE@"))
display(results.pivot_table(index="eps", columns="region", values="dice", aggfunc="mean"))
fig = plot_robustness_curves(results)
atomic_savefig(fig, run.figure("@STAGE@_dice_vs_eps"))
display(fig)  # a statistics figure is built without pyplot, so plt.show() would not show it
""".replace("@STAGE@", stage)
        ),
        md("## Would a radiologist see it? Perceptibility per modality\nL∞ is the budget; L2 and PSNR are computed over the brain voxels, SSIM (MONAI) over the whole volume, each against the clean image."),
        code(
            """
display(percept.groupby(["eps", "modality"])[["linf", "l2", "psnr", "ssim"]].mean().unstack("modality").round(3))
"""
        ),
        md("## One case, clean and attacked\nClean image, adversarial image, the perturbation (amplified), and both predictions."),
        code(
            f"""
eps_show = max(attack_spec.eps_grid)
ex = evaluation.attack_example(net, test_set, attack_spec, eps_show, spec, case_index=0, device=dev, seed=seed)
fig = plot_attack_example(**ex, title=f"{{attack_spec.name}} at eps = {{eps_show}}")
atomic_savefig(fig, run.figure("{stage}_example"))
plt.show()
"""
        ),
        *extra_cells,
        md(f"## Summary and exercises\n{exercises}"),
    ]


def nb03() -> list:
    return attack_nb(
        "03_fgsm",
        "The fast gradient sign method (Goodfellow et al., 2015) adapted to dense 3D segmentation: one step of size eps "
        "in the sign of the gradient of the voxel-averaged cross-entropy, in every brain voxel of every modality.\n\n"
        "**Reads** `models/baseline.pt`, `data/prepared.npz`. **Writes** `tables/results_03_fgsm.csv`, `tables/percept_03_fgsm.csv`, `attacks/fgsm.json`, `figures/03_fgsm_*.png`.",
        '''eps_grid: list = [0.0, 0.1, 0.3, 1.0]  # L-inf budgets in z-score units
''',
        r"""
## FGSM on a segmentation network
For an image $x$ (4 × D × H × W, z-scored) with labels $y$ and brain mask $M$,
$$x' = \mathrm{clip}_{[lo,\,hi]}\big(x + \epsilon\, M \odot \mathrm{sign}\,\nabla_x L(f(x), y)\big),\qquad L = \tfrac{1}{|V|}\sum_{v} \mathrm{CE}(f(x)_v, y_v),$$
with $[lo, hi]$ each volume's per-modality intensity range over its brain.
Budgets are in **z-score units**: eps = 0.5 moves every brain voxel by half a standard deviation of that modality's
intensities, less where the clip stops it and not at all where the gradient is exactly 0 (the raw size is eps × that
case's std of the modality; notebook 01 prints its mean over cases).
""",
        """
attack_spec = evaluation.AttackSpec("fgsm", tuple(eps_grid))
""",
        [
            md(
                """
## Attack one batch by hand
The sweep above wraps the steps below; the exercises edit this cell. `evaluation.wrap_model` gives the network as the
attacks see it (sliding windows or one pass, as in prediction), the clip range is each volume's per-modality intensity
range, the mask keeps the perturbation inside the brain, and `eps` may be one number or one per modality
(T1, T1c, T2, FLAIR).
"""
            ),
            code(
                """
from robustseg_lib.metrics import dice_per_region

model = evaluation.wrap_model(net, spec, test_set.images.shape[2:])
x, y = test_set.images[:2].to(dev), test_set.labels[:2].to(dev)
clip = (test_set.lo[:2].to(dev)[..., None, None, None], test_set.hi[:2].to(dev)[..., None, None, None])
mask = test_set.brain[:2].to(dev)[:, None]
eps_hand = max(eps_grid)  # or per modality, e.g. [0.0, 0.0, 0.0, eps_hand] for FLAIR only
x_adv = attacks.fgsm(model, x, y, eps_hand, clip=clip, mask=mask)  # loss_fn=... changes the loss
with torch.no_grad():
    for name, xi in [("clean", x), (f"FGSM eps={eps_hand}", x_adv)]:
        pred = model(xi).argmax(1).cpu()
        print(f"{name:>16}:", {r: round(d, 3) for r, d in dice_per_region(pred[0], test_set.labels[0]).items()})
"""
            ),
        ],
        "FGSM takes a single step along the gradient sign at the clean image, a linearisation of the loss that holds only near it: "
        "compare its curve with i-FGSM's (notebook 04), which re-linearises at every step, at small and at large eps.\n"
        + COPY_RUN
        + "1. In the hand-made cell, change the loss to Dice loss (`from monai.losses import DiceLoss`, then `loss_fn=lambda logits, y: DiceLoss(to_onehot_y=True, softmax=True)(logits, y[:, None])`): is it stronger?\n"
        "2. Attack only one modality at a time (per-modality eps, e.g. `[0, 0, 0, eps_hand]` for FLAIR): which one is the model most sensitive to?",
    )


def nb04() -> list:
    return attack_nb(
        "04_ifgsm",
        "Iterative FGSM (Kurakin et al., 2017a, *Adversarial examples in the physical world*): many small sign steps of size alpha, each projected back into the eps-ball "
        "around the clean image and into the valid intensity range. With the same budget it is stronger than FGSM, by far at large eps.\n\n"
        "**Reads** `models/baseline.pt`, `data/prepared.npz`. **Writes** `tables/results_04_ifgsm.csv`, `tables/percept_04_ifgsm.csv`, `tables/ifgsm_iterations.csv`, `attacks/ifgsm.json`, `figures/04_ifgsm_*.png`.",
        '''eps_grid: list = [0.0, 0.1, 0.3, 1.0]  # L-inf budgets in z-score units
steps: int = 5  # iterations
alpha_frac: float = 0.4  # step size alpha as a fraction of eps
curve_eps: float = 0.3  # eps of the Dice-vs-iteration curve
''',
        r"""
## i-FGSM
$$x_0 = x,\qquad x_{k+1} = \Pi\Big(x_k + \alpha\,\mathrm{sign}\,\nabla_x L(f(x_k), y)\Big),$$
where $\Pi$ projects onto the feasible set $B_\infty(x,\epsilon) \cap [lo, hi]$, with $x' = x$ outside the brain (a
per-voxel clamp), $\alpha$ = `alpha_frac` × eps and `steps` iterations. Only with `alpha_frac` × `steps` ≥ 1 can the
iterates reach the faces of the eps-ball; the cell below prints it.
""",
        """
attack_spec = evaluation.AttackSpec("ifgsm", tuple(eps_grid), steps=steps, alpha_frac=alpha_frac)
print(f"alpha x steps = {alpha_frac * steps:g} x eps" + ("" if alpha_frac * steps >= 1 else ": the iterates cannot reach the edge of the eps-ball"))
""",
        [
            md("## Dice vs iteration\nHow many steps does it take? Each point is the mean test Dice after k iterations at `curve_eps`."),
            code(
                """
curve = evaluation.iteration_curve(net, test_set, attack_spec, curve_eps, spec, device=dev, batch_size=batch_size, seed=seed)
atomic_to_csv(curve, run.table("ifgsm_iterations"))
ax = curve.groupby(["iteration", "region"])["dice"].mean().unstack().plot(marker="o")
ax.set(xlabel="iteration", ylabel="mean Dice", title=f"i-FGSM, eps = {curve_eps}")
atomic_savefig(ax.figure, run.figure("04_ifgsm_iterations"))
plt.show()
"""
            ),
        ],
        COPY_RUN + "1. Try PGD: in a copy of notebook 03's hand-made cell, `attacks.ifgsm(model, x, y, eps_hand, eps_hand / 4, 10, clip=clip, mask=mask, random_start=True, generator=torch.Generator(device=dev).manual_seed(0))`: stronger or not?\n2. Take half as many steps, each twice as large (halve `steps`, rounding down, and double `alpha_frac`): what changes?\n3. Compare the PSNR at the eps where Dice halves with FGSM's.",
    )


def nb05() -> list:
    return attack_nb(
        "05_tifgsm",
        "Targeted iterative FGSM: instead of pushing the prediction *away* from the truth, pull it *towards* a target "
        "segmentation chosen by the attacker, by descending the loss to the target. (This is the targeted i-FGSM of "
        "the paper, not torchattacks' translation-invariant TIFGSM.)\n\n"
        "**Reads** `models/baseline.pt`, `data/prepared.npz`. **Writes** `tables/results_05_tifgsm.csv`, `tables/percept_05_tifgsm.csv`, `attacks/tifgsm_<policy>.json`, `figures/05_tifgsm_*.png`.",
        '''eps_grid: list = [0.0, 0.1, 0.3, 1.0]  # L-inf budgets in z-score units
steps: int = 5  # iterations
alpha_frac: float = 0.4  # step size alpha as a fraction of eps
policy: str = "erase"  # main target policy (erase | et_to_ncr | ed_to_et)
extra_policies: list = ["et_to_ncr"]  # further policies evaluated for comparison
''',
        r"""
## Targets an attacker would want
$$x_{k+1} = \Pi\Big(x_k - \alpha\,\mathrm{sign}\,\nabla_x L(f(x_k), t)\Big)$$
descends the loss (the same voxel-averaged cross-entropy, now against $t$) towards the target map
$t$ = `make_target(y, policy)`, built from the ground truth: the voxels the policy relabels are pulled to their new
class, every other voxel is held at its true label. The policies:
""",
        """
if policy in extra_policies or len(set(extra_policies)) < len(extra_policies):  # their rows would be written twice
    raise ValueError(f"extra_policies = {extra_policies!r} must not repeat the main policy {policy!r} or one another")
for name, why in attacks.TARGET_POLICIES.items():
    print(f"{name:>10}: {why}")
attack_spec = evaluation.AttackSpec("tifgsm", tuple(eps_grid), steps=steps, alpha_frac=alpha_frac, policy=policy)
print(f"alpha x steps = {alpha_frac * steps:g} x eps" + ("" if alpha_frac * steps >= 1 else ": the iterates cannot reach the edge of the eps-ball"))
""",
        [
            md("## How far does the prediction move towards the target?\n`target_frac`: the fraction of the voxels the policy changes that the model now predicts as the target."),
            code(
                """
display(results.groupby("eps")["target_frac"].mean().to_frame("mean target_frac"))
"""
            ),
            md("## Other target policies\nThe same sweep for the other clinically meaningful relabellings, on the baseline only: the defense notebooks replay the paper's three attacks (FGSM, i-FGSM and ti-FGSM with the main `policy`), and the claims are judged on those. `et_to_ncr` only relabels tumour as tumour core, so its target equals the truth on WT and on TC (both NCR and ET are core): the attack pulls the WT and TC predictions *towards* the ground truth, and their Dice can rise under it (see the robustness curves in notebook 08). Judge it on ET and on `target_frac`, where it does its damage."),
            code(
                """
extra = []
for pol in extra_policies:
    spec_p = evaluation.AttackSpec("tifgsm", tuple(eps_grid), steps=steps, alpha_frac=alpha_frac, policy=pol)
    r, p = evaluation.attack_table(net, test_set, spec_p, "baseline", spec, device=dev, batch_size=batch_size, seed=seed)
    extra.append((r, p))
if extra:
    results_all = pd.concat([results] + [r for r, _ in extra], ignore_index=True)
    percept_all = pd.concat([percept] + [p for _, p in extra], ignore_index=True)
    atomic_to_csv(results_all, run.table("results_05_tifgsm"))
    atomic_to_csv(percept_all, run.table("percept_05_tifgsm"))
    display(results_all.groupby(["target_policy", "eps"])["target_frac"].mean().unstack("target_policy"))
"""
            ),
        ],
        "At small eps the *erase* attack may first remove false positives, so a case's WT Dice can even rise while the mean falls: compare the cases' clean and attacked Dice in `results` (e.g. `results[results.region == \"WT\"].pivot_table(index=\"case_id\", columns=\"eps\", values=\"dice\")`).\n" + COPY_RUN + "1. Try `policy = \"ed_to_et\"`: fabricating enhancing tumour changes the apparent grade.\n2. Is a targeted attack cheaper or dearer in PSNR than i-FGSM for the same Dice drop?",
    )


DEFENSE_EVAL = [
    md("## Every model under every attack\nThe attack settings are those recorded by notebooks 03–05 (same eps grids, cases and seeds)."),
    code(
        """
specs = evaluation.load_attack_specs(run)
results, _ = evaluation.evaluate_under_attacks(net, test_set, specs, MODEL, spec, device=dev, batch_size=batch_size, seed=seed)
atomic_to_csv(results, run.table("results_@STAGE@"))
both = evaluation.with_baseline(run, results)  # the baseline's rows of the same attacks (not notebook 05's extra policies)
fig = plot_robustness_curves(both)
atomic_savefig(fig, run.figure("@STAGE@_robustness"))
display(fig)  # built without pyplot: plt.show() would not show it
display(stats.mean_table(both, "WT"))  # mean WT Dice per attack (x target policy) x eps and model
"""
    ),
]


def nb06() -> list:
    return [
        *header(
            "06_distillation",
            "Defensive distillation (Papernot et al., 2016), per voxel: a teacher trained with softmax(logits / T); its soft "
            "labels at temperature T; a student of the same architecture trained at T on those soft labels; the student "
            "deployed at T = 1. Its logits are then ~T times larger and the softmax saturates: at most voxels the float32 loss has (almost) no gradient left, which "
            "is why distillation is also the textbook case of **gradient masking** (Carlini & Wagner, 2016). We measure both.\n\n"
            "**Reads** `models/baseline.pt` and `models/baseline.train.json`, `data/prepared.npz`, `attacks/*.json`. **Writes** `models/distilled*.pt`, `tables/results_06_distillation.csv`, `tables/results_06_distillation_diagnostics.csv` (the transfer and logit-rescaled attacks' per-case rows), `tables/diagnostics_06_distillation.csv`, `figures/06_*.png`.",
        ),
        setup_imports(
            "from dataclasses import asdict\n\nfrom robustseg_lib import defenses, evaluation, models, stats\nfrom robustseg_lib.training import TrainConfig, train\nfrom robustseg_lib.artefacts import atomic_to_csv, atomic_savefig\nfrom robustseg_lib.viz_models import plot_gallery\nfrom robustseg_lib.viz_stats import plot_robustness_curves"
        ),
        *params(
            "06_distillation",
            COMMON_PARAMS
            + '''temperature: float = 20.0  # distillation temperature T: teacher and student are trained at T, the student is deployed at temperature 1
compare_temperatures: list = [1.0, 5.0]  # further distillation temperatures compared (with output_scaling the same student, logits times T)
output_scaling: bool = True  # train at T through logits T * f(x), converging like the baseline (False: the plain net at T)
hard_weight: float = 0.0  # weight of a hard-label Dice+CE term for the student (0 for Papernot)
epochs: int = 15  # epochs of teacher and student (as the baseline)
steps_per_epoch: int = 20  # optimizer steps per epoch
lr: float = 0.005  # peak learning rate
batch_size: int = 4  # volumes per attack call
'''
        ),
        *RESOLVE,
        md(
            r"""
## The distillation loss
`defenses.distillation_loss` is the soft cross-entropy of Papernot's student, averaged over voxels:
$$L = s\,\frac{1}{|V|}\sum_v -\sum_c p_{v,c}\log q_{v,c},\quad p = \mathrm{softmax}(z^{teacher}/T),\ q = \mathrm{softmax}(z^{student}/T).$$
The student also gets a soft-label Dice term between $q$ and $p$, as the baseline gets Dice + CE (and, with
`hard_weight` > 0, a Dice + CE term against the true labels). The factor $s$ depends on the parametrisation below: for
a plain student (`output_scaling = False`) $s = T^2$ (Hinton et al., 2015): the soft term's gradient w.r.t. the logits
is $(q - p)/T$, which shrinks like $1/T^2$ at high T, and $T^2$ keeps its size independent of T. For the
output-scaled student (the default, logits $z = T f_\theta$) $s = 1$: the gradient w.r.t. $f_\theta$ is $q - p$, with
no $1/T$ to compensate, and a $T^2$ would only make the cross-entropy outweigh the Dice term 400-fold at T = 20.

## Training at T without waiting for the logits to grow
A network trained at T = 20 only becomes confident once its logits are about 20 times larger than a normal
network's. With the plain parametrisation the optimiser has to grow the last layer's weights twentyfold first: on
the teaching budget (300 steps), in one measured run ([docs/results.md](../docs/results.md#how-distillation-got-here-tuning-measured-on-the-same-vm-and-data);
not this run's numbers), a plain teacher at T = 20 reached a validation score of 0.46 against the baseline's 0.80, and
its student deployed at T = 1 had logits about the baseline's size (mean |logit| 6.5 against 5.3, where the
output-scaled student's were about 100) and a clean TC / ET Dice of 0.30 / 0.20. `output_scaling = False` reproduces
the comparison on this run; the cell after the training prints this run's logit sizes. We therefore train at T through the **output-scaled
parametrisation** $z = T\cdot f_\theta(x)$: the same family of networks (the factor could be folded into the last
layer), but the loss at T sees $f_\theta(x)$ itself, so training converges exactly like the baseline's. Two
consequences, both checked by the unit tests:

* the teacher at T trained with the baseline's recipe *is* the baseline with its logits multiplied by T (we reuse it);
* students at different temperatures differ only by that fixed factor, so the comparison temperatures reuse one
  trained student. This is Carlini & Wagner's observation made exact: what distillation changes at deployment is
  the scale of the logits.
"""
        ),
        code(
            """
base, spec = models.load_model(run.checkpoint("baseline"), device=dev)
evaluation.load_attack_specs(run)  # notebooks 03-05's records: missing ones fail here, not after the training
train_set, val_set, test_set = (evaluation.load_split(run, s) for s in ("train", "val", "test"))
train_x, train_y = evaluation.resident(train_set, dev)
train_spec = evaluation.load_train_config(run, "baseline")

def same_recipe(cfg_t):
    return TrainConfig(**{**asdict(cfg_t), "temperature": 1.0}) == TrainConfig(**train_spec)

def distil(T, inner=None):
    # teacher at T, then a student at T on the teacher's soft labels; otherwise trained as the baseline
    cfg_t = TrainConfig(**{**train_spec, "epochs": epochs, "steps_per_epoch": steps_per_epoch, "lr": lr, "temperature": T, "seed": seed})
    if inner is not None:  # output-scaled students do not depend on T (the loss sees net(x)): reuse, rescaled
        return models.LogitScale(inner, T).eval(), None, cfg_t
    wrap = (lambda m: models.LogitScale(m, T)) if output_scaling else (lambda m: m)
    if same_recipe(cfg_t) and (output_scaling or T == 1.0):
        # trained through logits = T * net(x), the loss at T sees net(x) itself: that training *is* the
        # baseline's (same seed, data, steps), so the teacher at T is the baseline with its logits times T
        teacher = wrap(base)
        print(f"teacher T = {T:g}: the baseline, logits x {T:g}")
    else:
        teacher = wrap(models.build_unet(spec["name"], seed=seed, **spec["kwargs"]))
        res_t = train(teacher, train_x, train_y, cfg_t, val_images=val_set.images, val_labels=val_set.labels,
                      ckpt_dir=run.models / f"teacher_T{T:g}_ckpt", device=dev, desc=f"teacher T={T:g}",
                      resume_tag=f"teacher output_scaling={output_scaling}")
        print(f"teacher T = {T:g}: validation score {res_t.best_score:.3f} ({res_t.seconds:.0f} s)")
    student = wrap(models.build_unet(spec["name"], seed=seed + 1, **spec["kwargs"]))
    objective = defenses.DistillationObjective(teacher, T, hard_weight=hard_weight, scale_by_t2=not output_scaling)
    res = train(student, train_x, train_y, cfg_t, val_images=val_set.images, val_labels=val_set.labels,
                objective=objective, ckpt_dir=run.models / f"student_T{T:g}_ckpt", device=dev, desc=f"student T={T:g}",
                resume_tag=f"student output_scaling={output_scaling} hard_weight={hard_weight} hard=logits/T teacher={models.weights_signature(teacher)}")
    return student.eval(), res, cfg_t

students, trained = {}, None  # trained: (inner network, result) of the first output-scaled student
for T in [temperature, *compare_temperatures]:
    students[T], res, cfg_t = distil(T, inner=trained[0] if trained else None)
    if res is None:
        res = trained[1]
        print(f"student T = {T:g}: the T = {temperature:g} student's network with logits x {T:g} (the same training)")
    else:
        print(f"student T = {T:g}: validation score {res.best_score:.3f} ({res.seconds:.0f} s)")
        if output_scaling:
            trained = (students[T].net, res)
    name = "distilled" if T == temperature else f"distilled_T{T:g}"
    models.save_model(students[T], run.checkpoint(name), {**spec, "temperature": T})
    evaluation.save_train_config(run, name, cfg_t, res)
net, MODEL = students[temperature], "distilled"
"""
        ),
        md("## Logits of the deployed student are large\nDeployed at T = 1, the output-scaled student's logits (`output_scaling = True`, the default) are roughly T times the baseline's (the teacher at T is the baseline's logits times T): the softmax saturates. A plain student (`output_scaling = False`, exercise 2) had logits near the baseline's size in the measured run quoted above."),
        code(
            """
with torch.no_grad():
    x0 = test_set.images[:1].to(dev)
    for name, m in [("baseline", base), *[(f"student T={T:g}", s) for T, s in students.items()]]:
        z = m(x0)
        print(f"{name:>16}: mean |logit| {z.abs().mean():7.2f}, max softmax prob {torch.softmax(z, 1).amax(1).mean():.5f}")
"""
        ),
        *[
            md(c.source) if c.cell_type == "markdown" else code(c.source.replace("@STAGE@", "06_distillation"))
            for c in DEFENSE_EVAL
        ],
        md("## Other temperatures\nThe same attacks, at each attack's largest eps, on the students distilled at the comparison temperatures."),
        code(
            """
extra = [evaluation.evaluate_under_attacks(students[T], test_set, specs, f"distilled_T{T:g}", spec, device=dev, batch_size=batch_size,
                                           seed=seed, largest_eps_only=True)
         for T in compare_temperatures]
if extra:
    results = pd.concat([results] + [r for r, _ in extra], ignore_index=True)
    atomic_to_csv(results, run.table("results_06_distillation"))
display(stats.mean_table(results, "WT"))
"""
        ),
        md(
            """
## Is it robust, or are the gradients just gone?
Three checks (Carlini & Wagner, 2016; Athalye et al., 2018):
(a) **transfer**: adversarial examples crafted on the undefended baseline, applied to the student;
(b) **logit rescaling**: attack the student's logits divided by T (same predictions, gradients restored);
(c) **saturation**: the fraction of brain voxels whose softmax probability of the true label is exactly 1 in float32
(`frac_saturated_voxels`: the cross-entropy there is 0, so the attacker gets no gradient from them), against the
baseline's. The fraction of near-zero *input* gradients is shown too, but in a UNet it stays near 0 even under
saturation: every input voxel collects gradient from many output voxels, and a few unsaturated boundary voxels are
enough. So the masked gradients are not zero; they follow only those few uncertain voxels, and the sign step loses
its strength. The verdict column calls it masking when (a) or (b) lowers WT Dice more than
`evaluation.MASKING_MARGIN` (0.05) below the direct attack, and says so when one is stronger by less.
"""
        ),
        code(
            """
diag, diag_summary = evaluation.masking_diagnostics(net, test_set, specs, "distilled", spec, source=base,
                                                     rescale=1.0 / temperature, direct=results, device=dev, batch_size=batch_size, seed=seed)
atomic_to_csv(diag, run.table("results_06_distillation_diagnostics"))
atomic_to_csv(diag_summary, run.table("diagnostics_06_distillation"))
with pd.option_context("display.max_colwidth", None):
    display(diag_summary)
"""
        ),
        md("## Gallery: the same case under attack, baseline vs distilled"),
        code(
            """
fig = plot_gallery(evaluation.gallery({"baseline": base, "distilled": net}, test_set, specs, spec, device=dev, seed=seed))
atomic_savefig(fig, run.figure("06_distillation_gallery"))
plt.show()
"""
        ),
        md(
            """
## Summary and exercises
Read the diagnostics before believing the robustness: if transfer or logit-rescaled attacks hurt the student almost as
much as the baseline, its apparent robustness came from masked gradients.
Exercises that retrain change `models/distilled.pt` and `tables/results_06_*.csv`, which notebook 08 reads: try them on
a copy of the run (`cp -r runs/teaching runs/mine`, then `run_dir = "../runs/mine"`).
1. Set `temperature = 100`: same network, larger logits. Does the direct attack weaken further, and does the logit-rescaled attack (diagnostic b) still succeed?
2. Set `output_scaling = False` (plain networks trained at T: a teacher per temperature that is not 1, and a student per temperature, about five trainings instead of one here): compare the teacher's validation score with the baseline's. Why does it lag?
3. Add `hard_weight = 0.5`: does the student's clean Dice improve?
"""
        ),
    ]


def nb07() -> list:
    return [
        *header(
            "07_adversarial_training",
            "Adversarial training by data augmentation (Goodfellow et al., 2015): in every training batch a fraction `mix` "
            "of the volumes is replaced by adversarial versions made **on the fly against the current network** (FGSM or i-FGSM, eps drawn from a range), "
            "through the same training function as the baseline. The static variant the paper's wording also allows "
            "(FGSM examples pre-generated once from the baseline and added to the training set) is available with `static = True`.\n\n"
            "**Reads** `models/baseline.pt` and `models/baseline.train.json`, `data/prepared.npz`, `attacks/*.json`, `models/distilled.pt` when notebook 06 wrote it (gallery). **Writes** `models/advtrain.pt` and `models/advtrain.train.json` (and `models/advtrain_static.pt`, `.train.json` with `static = True`), `tables/results_07_adversarial_training.csv`, `tables/results_07_adversarial_training_diagnostics.csv` (the transfer attacks' per-case rows), `tables/diagnostics_07_adversarial_training.csv`, `figures/07_*.png`.",
        ),
        setup_imports(
            "from robustseg_lib import defenses, evaluation, models, stats\nfrom robustseg_lib.training import TrainConfig, train\nfrom robustseg_lib.artefacts import atomic_to_csv, atomic_savefig\nfrom robustseg_lib.viz_models import plot_gallery\nfrom robustseg_lib.viz_stats import plot_robustness_curves"
        ),
        *params(
            "07_adversarial_training",
            COMMON_PARAMS
            + '''adv_attack: str = "fgsm"  # fgsm | ifgsm | mixed: how the training examples are made
eps_range: list = [0.05, 0.5]  # eps drawn uniformly per adversarial example (z-score units)
mix: float = 0.5  # fraction of each batch replaced by adversarial versions
adv_steps: int = 3  # i-FGSM steps when adv_attack is ifgsm or mixed
label_source: str = "truth"  # truth | predicted: labels the examples are made from (the training target stays the truth)
epochs: int = 15  # training epochs
steps_per_epoch: int = 20  # optimizer steps per epoch
lr: float = 0.005  # peak learning rate
static: bool = False  # also train the static variant (FGSM examples pre-generated from the baseline, whatever adv_attack)
batch_size: int = 4  # volumes per attack call
'''
        ),
        *RESOLVE,
        md(
            """
## Which variant, and why
We use **on-the-fly** examples as the main model: examples made against a fixed baseline stop being adversarial for the
network being trained after a few epochs, so the static variant mostly teaches the model the baseline's blind spots.
(Tramèr et al., 2018 use such transferred examples on purpose: their "ensemble adversarial training" adds examples
made on several *other*, fixed models to the model's own. The static variant here is the one-source-model case
without the model's own examples.) The static variant is trained when `static = True`, from FGSM examples (eps drawn
from `eps_range`, one adversarial copy of each training volume, added to the clean set: `mix` and `adv_attack` do not
apply), and reported under the model name `advtrain_static`.
As in the paper, the examples are made from the true labels (`label_source = "truth"`); Kurakin et al. (2017b, *Adversarial machine learning at scale*)
recommend the model's own predictions instead (`label_source = "predicted"`, the argmax of the network being attacked),
because with one-step attacks the true label can "leak" into the example and the model learns to read it from the
perturbation; either way the network is still trained towards the true labels.
"""
        ),
        code(
            """
base, spec = models.load_model(run.checkpoint("baseline"), device=dev)
evaluation.load_attack_specs(run)  # notebooks 03-05's records: missing ones fail here, not after the training
train_set, val_set, test_set = (evaluation.load_split(run, s) for s in ("train", "val", "test"))
train_x, train_y = evaluation.resident(train_set, dev)
train_spec = evaluation.load_train_config(run, "baseline")
cfg = TrainConfig(**{**train_spec, "epochs": epochs, "steps_per_epoch": steps_per_epoch, "lr": lr, "seed": seed})
hook = defenses.AdversarialAugmenter(adv_attack, eps_range=tuple(eps_range), mix=mix, steps=adv_steps, label_source=label_source)
net = models.build_unet(spec["name"], seed=seed, **spec["kwargs"])
res = train(net, train_x, train_y, cfg, val_images=val_set.images, val_labels=val_set.labels,
            batch_hook=hook, ckpt_dir=run.models / "advtrain_ckpt", device=dev, desc="adversarial training",
            resume_tag=f"{adv_attack} eps_range={eps_range} mix={mix} adv_steps={adv_steps} mask=crop-brain label_source={label_source}")
models.save_model(net, run.checkpoint("advtrain"), spec)
evaluation.save_train_config(run, "advtrain", cfg, res)
print(f"validation score {res.best_score:.3f} ({res.seconds:.0f} s); last batch: volumes {hook.last_index} attacked at eps {[round(e, 3) for e in hook.last_eps]}")
MODEL = "advtrain"
"""
        ),
        *[
            md(c.source) if c.cell_type == "markdown" else code(c.source.replace("@STAGE@", "07_adversarial_training"))
            for c in DEFENSE_EVAL
        ],
        md("## The static variant (optional)"),
        code(
            """
if static:
    adv_x, adv_y, _ = defenses.make_static_adversarial_set(base, train_set.images, train_set.labels, attack="fgsm",
                                                          eps_range=tuple(eps_range), seed=seed,
                                                          spec=spec, label_source=label_source)
    net_s = models.build_unet(spec["name"], seed=seed, **spec["kwargs"])
    static_x, static_y = evaluation.resident_tensors(torch.cat([train_set.images, adv_x]), torch.cat([train_set.labels, adv_y]), dev)
    res_s = train(net_s, static_x, static_y, cfg, val_images=val_set.images,
                  val_labels=val_set.labels, ckpt_dir=run.models / "advtrain_static_ckpt", device=dev, desc="static adversarial training")
    models.save_model(net_s, run.checkpoint("advtrain_static"), spec)
    evaluation.save_train_config(run, "advtrain_static", cfg, res_s)
    r, _ = evaluation.evaluate_under_attacks(net_s, test_set, specs, "advtrain_static", spec, device=dev, batch_size=batch_size, seed=seed)
    results = pd.concat([results, r], ignore_index=True)
    atomic_to_csv(results, run.table("results_07_adversarial_training"))
    display(stats.mean_table(results, "WT"))
"""
        ),
        md("## Gradient-masking diagnostics\nTransfer attacks from the baseline and the fraction of saturated output voxels (and of near-zero input gradients); no temperature here, so no rescaling."),
        code(
            """
diag, diag_summary = evaluation.masking_diagnostics(net, test_set, specs, "advtrain", spec, source=base, rescale=None,
                                                     direct=results, device=dev, batch_size=batch_size, seed=seed)
atomic_to_csv(diag, run.table("results_07_adversarial_training_diagnostics"))
atomic_to_csv(diag_summary, run.table("diagnostics_07_adversarial_training"))
with pd.option_context("display.max_colwidth", None):
    display(diag_summary)
"""
        ),
        md("## Gallery: the same case under attack, for each model"),
        code(
            """
models_show = {"baseline": base, "advtrain": net}
if run.checkpoint("distilled").is_file():
    models_show["distilled"] = models.load_model(run.checkpoint("distilled"), device=dev)[0]
fig = plot_gallery(evaluation.gallery(models_show, test_set, specs, spec, device=dev, seed=seed))
atomic_savefig(fig, run.figure("07_adversarial_training_gallery"))
plt.show()
"""
        ),
        md(
            """
## Summary and exercises
Compare the table above with the baseline's: how much robustness did training on eps in `eps_range` buy, also at eps
outside that range, and what did it cost in clean Dice?
Exercises that retrain change `models/advtrain.pt` and `tables/results_07_*.csv`, which notebook 08 reads: try them on
a copy of the run (`cp -r runs/teaching runs/mine`, then `run_dir = "../runs/mine"`).
1. Set `adv_attack = "ifgsm"`: more robust to i-FGSM? How much slower is training?
2. Widen `eps_range` to `[0.05, 1.0]`: what happens to clean Dice?
3. Set `label_source = "predicted"` (examples made from the network's predictions, against label leaking): does FGSM
   Dice move relative to clean Dice, and does robustness to i-FGSM change?
"""
        ),
    ]


def nb08() -> list:
    return [
        *header(
            "08_statistics",
            "Do the paper's conclusions hold here? This notebook reads **only** the run folder's per-case tables, compares "
            "conditions with paired Wilcoxon signed-rank tests (Holm-corrected), gives bootstrap confidence intervals, and "
            "states for each claim of Liu et al. (2021) whether it holds, computed from the numbers.\n\n"
            "**Reads** `tables/results_*.csv`, `tables/percept_*.csv` and `attacks/*.json` (and notebook 01's `tables/data_region_volumes.csv`). **Writes** `tables/summary.csv`, `tables/comparisons.csv`, `tables/claims_comparisons.csv`, `tables/claims.csv`, `tables/claims_by_region.csv`, `tables/drops.csv`, `report/report.md` with its figures.",
        ),
        setup_imports(
            "from robustseg_lib import evaluation, stats, report\nfrom robustseg_lib.artefacts import atomic_to_csv, atomic_savefig\nfrom robustseg_lib.viz_stats import plot_robustness_curves, plot_paired"
        ),
        *params(
            "08_statistics",
            COMMON_PARAMS
            + '''region: str = "WT"  # region the claims are judged on (WT | TC | ET)
alpha: float = 0.05  # family-wise error rate (Holm)
n_resamples: int = 2000  # bootstrap resamples
'''
        ),
        *RESOLVE,
        code(
            """
table = evaluation.read_results(run)
print(f"{len(table)} rows: models {sorted(table.model.unique())}, attacks {sorted(table.attack.unique())}")
"""
        ),
        md("## Mean Dice with 95 % bootstrap confidence intervals"),
        code(
            """
summary = stats.summary_table(table, n_resamples=n_resamples, seed=seed)
atomic_to_csv(summary, run.table("summary"))
display(summary[summary.region == region])
"""
        ),
        md("## Robustness curves"),
        code(
            """
main = table[~table.attack.str.startswith("transfer_") & ~table.attack.str.endswith("_logit_rescaled")]
fig = plot_robustness_curves(main, region=region)
atomic_savefig(fig, run.figure("08_robustness_curves"))
display(fig)  # built without pyplot: plt.show() would not show it
"""
        ),
        md(
            r"""
## What a paired test is, and why pairing matters here
Each test case is segmented under both conditions we compare, so the natural unit is the **per-case difference** in
Dice. Cases differ from each other (small vs large tumours); when the difference between two conditions is small
against that between-case spread, an unpaired test drowns it, while the paired test, which compares each case with
itself, still sees it. A large effect both find; the cell after the comparisons sets the two tests side by side on this
run's numbers. The Wilcoxon signed-rank test ranks the absolute differences and asks whether
positive and negative ones are balanced, without assuming normality (Dice is bounded and skewed). Zero differences are
dropped (Wilcoxon's method), and the matched-pairs rank-biserial correlation says how lopsided the signed ranks are
(+1: every case that differs is better under the first condition). How *large* is the difference? The Hodges–Lehmann estimate
(`hl_estimate`, the median of the Walsh averages $(d_i + d_j)/2$, $i \le j$, of the non-zero differences) with its
$1 - \alpha$ confidence interval (`hl_ci_lo`, `hl_ci_hi`: the shifts the same test would not reject at α) answers in
Dice units. The interval excludes 0 exactly when the raw p-value is below α as long as the p-value is exact too: no
two differences tie and at most 50 are non-zero (beyond 50 the p-value is a normal approximation and can disagree
at the margin). Neither the interval nor the raw p-value is Holm-adjusted.

**Families and Holm's correction.** `stats.compare` makes four *families* of paired comparisons in each region:
`attack_effect` (each model clean vs the same model under each attack and eps), `defense_vs_baseline` (a defended
model vs the baseline under the same condition), `distill_vs_advtrain` (the distilled vs the adversarially trained
model under the same condition) and `defense_vs_clean` (a defended model under attack vs the clean baseline). Many
tests at α = 0.05 each would find some effects by chance, so within each family and region Holm's step-down procedure
adjusts the p-values: sort the family's m raw p-values, multiply the k-th smallest by m − k + 1, keep the sequence
non-decreasing and cap it at 1. A comparison is `significant` when its `p_holm` is below α; the chance of even one false
positive in the family then stays below α, whatever the dependence between its tests. The larger the family, the
larger the adjustment.
"""
        ),
        code(
            """
cmp = stats.compare(table, alpha=alpha)
atomic_to_csv(cmp, run.table("comparisons"))
view = cmp[cmp.region == region]
display(view.groupby("family", sort=False)["significant"].agg(tests="size", significant="sum"))
cols = ["family", "model_a", "attack_a", "target_policy_a", "eps_a", "model_b", "attack_b", "target_policy_b", "eps_b",
        "n", "n_nonzero", "mean_a", "mean_b", "hl_estimate", "hl_ci_lo", "hl_ci_hi", "effect_size", "pvalue", "p_holm", "significant"]
display(view[[c for c in cols if c in view]].groupby("family", sort=False).head(4))  # the first rows of each family
"""
        ),
        md("### Paired vs unpaired, and what Holm's correction changes (this run's numbers)"),
        code(
            """
display(Markdown(report.teaching_example(table, cmp, region=region, alpha=alpha)))
"""
        ),
        md("## Paired plots for the key comparisons"),
        code(
            """
for i, (a, b) in enumerate(report.key_pairs(table)):
    fig = plot_paired(table, a, b, region=region)
    atomic_savefig(fig, run.figure(f"08_paired_{i}"))
    display(fig)
"""
        ),
        md("## The paper's claims, re-measured"),
        code(
            """
paper_table = evaluation.paper_attacks(run, table)  # FGSM, i-FGSM, ti-FGSM (main policy) + clean and diagnostics
cmp_claims = stats.compare(paper_table, alpha=alpha)  # Holm within the paper's attacks: p_holm differs from the table above
atomic_to_csv(cmp_claims, run.table("claims_comparisons"))
claims = stats.claims(paper_table, cmp_claims, region=region, alpha=alpha, n_resamples=n_resamples, seed=seed)
atomic_to_csv(claims, run.table("claims"))
with pd.option_context("display.max_colwidth", None):
    display(claims[["claim", "statement", "verdict", "evidence"]])
display(Markdown(stats.claim_rules_md(alpha)))  # the decision rules, at this notebook's alpha
"""
        ),
        md(
            """
### Do the verdicts depend on the region, or on empty regions?
The headline is judged on one region. The same rules on every region say whether a verdict depends on that choice.
A case whose ground truth has no enhancing tumour scores ET Dice 1 when nothing is predicted there and 0 after a
single false-positive voxel, so an attack can "succeed" on it without touching any tumour: each region is judged
again without such cases (tests and Holm recomputed on the rest). When no evaluated case lacks a region, as in the
teaching run's test split, the counts printed below are 0 and only the per-region rows appear; other draws of the
cases (`robustseg reproduce --seed N`) put cases without ET among the test cases.
"""
        ),
        code(
            """
volumes = evaluation.evaluated_region_volumes(run)  # notebook 01's region volumes of the evaluated cases
empty = stats.empty_truth_cases(volumes) if volumes is not None else {}
print("evaluated cases without a region in their ground truth:", {r: len(ids) for r, ids in empty.items()})
by_region = stats.claims_by_region(paper_table, cmp_claims, empty_truth=empty, alpha=alpha, n_resamples=n_resamples, seed=seed)
atomic_to_csv(by_region, run.table("claims_by_region"))
display(by_region.pivot(index="analysis", columns="claim", values="verdict").loc[pd.unique(by_region.analysis)])
"""
        ),
        md(
            """
### C2 in context: how large a drop, at how visible a perturbation
"Up to 65 %" says nothing about the budget. Our eps is in z-score units and the paper's budgets do not map onto it
exactly, so set each drop beside how visible its perturbation is: PSNR over the brain against the clean volume
(about 40 dB is invisible, 20 dB is plain to see).
"""
        ),
        code(
            """
percept_files = sorted(run.tables.glob("percept_*.csv"))
percept = pd.concat([pd.read_csv(f) for f in percept_files], ignore_index=True) if percept_files else None
drops = stats.drop_vs_perceptibility(table, percept, region=region)
atomic_to_csv(drops, run.table("drops"))
display(drops)
"""
        ),
        md("## Export the report\nMarkdown with the figures and tables, readable without Jupyter."),
        code(
            """
path = report.write_report(run, summary=summary, comparisons=cmp, claims=claims, region=region, claims_comparisons=cmp_claims,
                           drops=drops, claims_by_region=by_region, alpha=alpha)
print(path)
"""
        ),
        md(
            """
## Summary and exercises
1. The sensitivity table judges every region. Which verdicts change between WT, TC and ET? In the summary table,
   which region loses the most Dice under each attack, absolutely and relatively? What makes ET's Dice behave
   differently (small regions; cases without ET, where Dice is all or nothing)? Set `region = "ET"` to make ET the
   headline of the report.
2. How many comparisons survive Holm's correction compared with raw p < α? Which family loses the most, and why
   does the family's size matter?
3. One run is one draw of the data, the training and the attacks. From a terminal, replicate the experiment
   (`robustseg reproduce --seed 1`, then `--seed 2`: each 7–9 min on 2 cores) and compare the verdicts
   (`robustseg compare runs/teaching runs/teaching-seed1 runs/teaching-seed2`). Which verdicts survive every seed?
   `comparison.md` also judges the claims on all runs' cases pooled: what does the extra power change? And with
   the runs as the units: why can three runs decide nothing there, and how many would C1 need
   (`replicates.runs_for_run_level_test`)? The committed twelve-seed comparison is in
   `docs/results/teaching-seeds/comparison/`.
4. `--seed N` redraws the cases too. Keep them and redraw only the training: `robustseg reproduce --seed 1 --set
   data.seed=0 --out runs/teaching-training1` (a folder of its own: the default one, `runs/teaching-seed1`, holds
   exercise 3's run and refuses a run on other data). `compare` then finds training replicates on one test set: it
   does not pool, and judges the claims with the runs as units and on the cases with each case's Dice averaged over
   the trainings. Compare `run_level_spread.csv` of the committed twelve-training comparison
   (`docs/results/teaching-trainings/comparison/`) with that of the twelve seeds: how much of the run-to-run spread
   comes from training alone?
5. The seeds' extra spread comes with the data draw: other training cases *and* other test cases. Add
   `--set data.train_seed=1` to exercise 4's command, with `--out runs/teaching-redrawn1`, to redraw the training and
   validation cases but keep the test cases. With the committed twelve such runs
   (`docs/results/teaching-redrawn/comparison/`) between the trainings and the seeds, which part of the data draw
   carries the spread: the cases a model learns from, or the cases it is judged on?
"""
        ),
    ]


BUILDERS = {"01_data": nb01, "02_unet": nb02, "03_fgsm": nb03, "04_ifgsm": nb04, "05_tifgsm": nb05,
            "06_distillation": nb06, "07_adversarial_training": nb07, "08_statistics": nb08}


def build(stage: str) -> nbformat.NotebookNode:
    nb = new_notebook(cells=BUILDERS[stage]())
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for i, cell in enumerate(nb.cells):  # stable ids so rebuilding gives identical files
        cell["id"] = f"{stage[:2]}-{i:02d}"
    return nb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check that the committed notebooks are up to date")
    args = ap.parse_args(argv)
    stale = []
    for stage in BUILDERS:
        text = nbformat.writes(build(stage)) + "\n"
        path = NB_DIR / f"{stage}.ipynb"
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print("out of date (run python tools/build_notebooks.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
