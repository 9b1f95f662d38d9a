"""Profiles, parameters, the notebooks as committed, and the CLI's validation."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest
import yaml

from robustseg_lib import pipeline
from robustseg_lib.pipeline import NOTEBOOK_DIR, PROFILE_DIR, STAGES, PipelineError


@pytest.mark.parametrize("profile", ["smoke", "teaching", "paper"])
def test_every_profile_key_is_a_notebook_parameter(profile: str) -> None:
    prof = pipeline.load_profile(profile)
    merged = pipeline.stage_parameters(prof)  # raises on an unknown key
    for stage, params in prof["notebooks"].items():
        declared = pipeline.notebook_parameters(stage)
        assert set(params) <= set(declared), (profile, stage, set(params) - set(declared))
        assert set(params) <= set(merged[stage])
    for key in prof["common"]:
        assert any(key in pipeline.notebook_parameters(s) for s in STAGES)


def test_unknown_profile_key_is_refused(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"notebooks": {"02_unet": {"epochs": 1, "epocs": 2}}}))
    with pytest.raises(PipelineError, match="epocs"):
        pipeline.stage_parameters(pipeline.load_profile(str(bad)))


def test_unknown_set_key_is_refused_with_valid_list() -> None:
    with pytest.raises(PipelineError) as err:
        pipeline.parse_overrides(["unet.epocs=3"])
    msg = str(err.value)
    assert "02_unet has no parameter 'epocs'" in msg and "epochs" in msg and "lr" in msg
    with pytest.raises(PipelineError, match="unknown stage"):
        pipeline.parse_overrides(["nosuch.epochs=3"])
    with pytest.raises(PipelineError, match="NOTEBOOK.PARAM=VALUE"):
        pipeline.parse_overrides(["epochs=3"])
    assert pipeline.parse_overrides(["02.epochs=3", "fgsm.eps_grid=[0, 0.5]"]) == {"02_unet": {"epochs": 3}, "03_fgsm": {"eps_grid": [0, 0.5]}}


def test_cli_refuses_unknown_set_key(tmp_path, capsys) -> None:
    """The command's entry point in-process (``python -m robustseg_lib`` is ``raise SystemExit(pipeline.main())``; a
    subprocess would spend ~10 s importing): exit status 2 and the valid keys on stderr."""
    returncode = pipeline.main(["reproduce", "--profile", "smoke", "--out", str(tmp_path), "--set", "unet.nope=1"])
    out = capsys.readouterr()
    assert returncode == 2 and "valid:" in out.err and "epochs" in out.err


def test_notebook_defaults_equal_teaching_profile() -> None:
    prof = pipeline.load_profile("teaching")
    merged = pipeline.stage_parameters(prof)
    for stage in STAGES:
        declared = {k: ast.literal_eval(v) for k, v in pipeline.notebook_parameters(stage).items()}
        assert declared["run_dir"] == "../runs/teaching" and declared["device"] == "auto"
        for key, value in merged[stage].items():
            assert declared[key] == value, (stage, key, declared[key], value)


def test_notebooks_are_committed_clean_and_up_to_date() -> None:
    for stage, fname in STAGES.items():
        nb = json.loads((NOTEBOOK_DIR / fname).read_text())
        cells = nb["cells"]
        assert not any(c.get("outputs") or c.get("execution_count") for c in cells if c["cell_type"] == "code"), fname
        assert sum("parameters" in c.get("metadata", {}).get("tags", []) for c in cells) == 1, fname
        src = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        assert '"cuda"' not in src and "'cuda'" not in src, fname
    out = subprocess.run([sys.executable, str(NOTEBOOK_DIR.parent / "tools" / "build_notebooks.py"), "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_notebook_builder_refuses_a_default_that_differs_from_the_teaching_profile(monkeypatch) -> None:
    """The builder's parameter lines are read as the defaults too: one that differs from profiles/teaching.yaml
    (22 did, e.g. 30 epochs for the profile's 15) is refused, naming both; one that equals it, and one the profile
    does not set, pass (oracle: the committed teaching profile)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_notebooks", NOTEBOOK_DIR.parent / "tools" / "build_notebooks.py")
    bn = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bn)
    prof = yaml.safe_load((NOTEBOOK_DIR / "profiles" / "teaching.yaml").read_text())
    epochs = prof["notebooks"]["02_unet"]["epochs"]
    with pytest.raises(ValueError, match=rf"02_unet: epochs = {epochs + 1} here but {epochs} in profiles/teaching.yaml"):
        bn.params("02_unet", f"epochs: int = {epochs + 1}  # training epochs\n")
    cell = bn.params("02_unet", f"epochs: int = {epochs}  # training epochs\nnot_in_profile: int = 7  # x\n")[1]
    assert cell.source == f"epochs: int = {epochs}  # training epochs\nnot_in_profile: int = 7  # x"


def test_notebook_08_shows_and_reports_the_claim_rules_at_its_alpha() -> None:
    """Notebook 08 states the decision rules at the alpha it judged the claims at, in the notebook and in the report
    (``stats.claim_rules_md`` itself is tested in test_stats.py)."""
    nb = json.loads((NOTEBOOK_DIR / STAGES["08_statistics"]).read_text())
    src = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "display(Markdown(stats.claim_rules_md(alpha)))" in src
    assert "CLAIM_RULES_MD" not in src  # the text at the default alpha
    assert "claims_by_region=by_region, alpha=alpha)" in src  # the report.write_report call


def test_every_saved_model_records_its_training_config() -> None:
    """Each checkpoint a notebook saves has its training record beside it (``models/<name>.train.json``: config, best
    epoch and score), written in the same cell."""
    import re

    saved = 0
    for stage, nb_name in STAGES.items():
        nb = json.loads((NOTEBOOK_DIR / nb_name).read_text())
        for cell in (c for c in nb["cells"] if c["cell_type"] == "code"):
            src = "".join(cell["source"])
            for name in re.findall(r"models\.save_model\([^,]+, run\.checkpoint\(([^)]+)\)", src):
                saved += 1
                assert f"save_train_config(run, {name}," in src, f"{nb_name}: {name} is saved without its training record"
    assert saved >= 4  # baseline, the distilled students, advtrain, advtrain_static


def test_profiles_exist() -> None:
    assert {p.stem for p in PROFILE_DIR.glob("*.yaml")} >= {"smoke", "teaching", "paper"}
    with pytest.raises(PipelineError, match="known: "):
        pipeline.load_profile("nonexistent")


def test_stage_aliases() -> None:
    assert pipeline.stage_name("unet") == "02_unet" == pipeline.stage_name("02")
    assert pipeline.stage_name("adversarial_training") == "07_adversarial_training"


def _run_tiny_notebook(tmp_path, **kw) -> str:
    import nbformat
    import papermill

    src, dst = tmp_path / "tiny.ipynb", tmp_path / "tiny_out.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print(6 * 7)")]
    nbformat.write(nb, src)
    out = papermill.execute_notebook(str(src), str(dst), kernel_name="python3", progress_bar=False, **kw)
    return out.cells[0].outputs[0]["text"].strip()


def test_kernel_config_silences_the_unencrypted_transport_warning(tmp_path, capfd) -> None:
    """The chain's kernels start without ipykernel's TCP warning (the kernel writes it to the inherited stderr)."""
    warning = "running over TCP without encryption"
    assert _run_tiny_notebook(tmp_path) == "42"
    if warning not in capfd.readouterr().err:
        pytest.skip("this ipykernel does not warn about unencrypted TCP")
    cfg = pipeline.kernel_config()
    assert cfg["KernelManager"]["transport_encryption"] == "auto"
    assert _run_tiny_notebook(tmp_path, config=cfg) == "42"
    assert warning not in capfd.readouterr().err


def test_kernel_config_leaves_defaults_without_curve(monkeypatch) -> None:
    """Without CURVE in pyzmq, 'auto' would be refused when the kernel manager is made: keep the defaults."""
    import zmq
    from jupyter_client.manager import KernelManager

    monkeypatch.setattr(zmq, "has", lambda capability: False)
    cfg = pipeline.kernel_config()
    assert "KernelManager" not in cfg
    KernelManager(config=cfg)  # constructs: nothing invalid was configured


def test_stages_lists_only_what_set_accepts(capsys) -> None:
    assert pipeline.main(["stages"]) == 0
    lines = capsys.readouterr().out.splitlines()
    per_stage = {ln.split(":")[0]: ln.split(": ", 1)[1].split(", ") for ln in lines if ln.split(":")[0] in STAGES}
    assert set(per_stage) == set(STAGES)
    for stage, keys in per_stage.items():
        assert "run_dir" not in keys and "device" not in keys
        assert set(keys) == set(pipeline.notebook_parameters(stage)) - {"run_dir", "device"}
    with pytest.raises(PipelineError):
        pipeline.parse_overrides(["unet.run_dir=elsewhere"])  # what the listing leaves out is indeed refused
    assert "--out and --device" in lines[-1]


def test_claims_are_printed_with_the_profile_caveat(tmp_path) -> None:
    run = pipeline.RunPaths(tmp_path)
    run.tables.mkdir(parents=True, exist_ok=True)
    (run.tables / "claims.csv").write_text("claim,verdict,evidence\nC1,holds,3/3 attacks\n")
    out: list[str] = []
    pipeline._print_claims(run, log=out.append, profile=pipeline.load_profile("smoke"))
    text = "\n".join(out)
    assert "profile smoke:" in text and "numbers mean nothing" in text and "C1" in text


@pytest.mark.parametrize("stage", list(STAGES))
def test_colab_setup_cell_runs_the_earlier_stages_into_the_notebooks_run_dir(stage, monkeypatch) -> None:
    import os
    import posixpath
    import shlex
    import types

    import nbformat

    nb = nbformat.read(NOTEBOOK_DIR / STAGES[stage], as_version=4)
    setup = next(c.source for c in nb.cells if c.cell_type == "code" and "google.colab" in c.source)
    params = next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    run_dir = ast.literal_eval(next(ln for ln in params.splitlines() if ln.startswith("run_dir")).split("=", 1)[1].split("#")[0].strip())
    calls: list[tuple[str, dict]] = []
    chdirs: list[str] = []
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setitem(sys.modules, "subprocess", types.SimpleNamespace(run=lambda cmd, **kw: calls.append((cmd, kw))))
    monkeypatch.setattr(os, "chdir", chdirs.append)
    exec(compile(setup, f"{stage}-setup", "exec"), {})
    assert chdirs == ["/content/robustseg/notebooks"]  # also when the package is installed already (runtime restart)
    earlier = list(STAGES)[: list(STAGES).index(stage)]
    if not earlier:
        assert calls == []
        return
    (cmd, kw), = calls
    argv = shlex.split(cmd)
    assert argv[0] == "robustseg" and kw["check"] is True
    args = pipeline.build_parser().parse_args(argv[1:])
    assert args.profile == "teaching" and [pipeline.stage_name(s) for s in args.only] == earlier
    # the headless run writes exactly where this notebook's run_dir (relative to the notebooks folder) points
    assert posixpath.normpath(posixpath.join(kw["cwd"], args.out)) == posixpath.normpath(posixpath.join(chdirs[0], run_dir))


def test_enumerated_parameters_are_checked_up_front() -> None:
    """A misspelt choice fails at the command line, naming the parameter and the valid values, not stages later."""
    for bad, valid in (("adversarial_training.label_source=predicted_labels", "truth, predicted"),
                       ("data.layout=nifti", "brats2021, brats2023, msd"), ("statistics.region=wt", "WT, TC, ET"),
                       ("unet.inference=tiled", "sliding, whole"),
                       ("adversarial_training.adv_attack=pgd", "fgsm, ifgsm, mixed")):
        with pytest.raises(PipelineError, match=rf"{bad.split('=')[0].split('.')[1]} = .*expected one of {valid}$"):
            pipeline.parse_overrides([bad])
    with pytest.raises(PipelineError, match=r"extra_policies = \['erase', 'nope'\]: expected each item one of erase"):
        pipeline.parse_overrides(["tifgsm.extra_policies=[erase, nope]"])
    with pytest.raises(PipelineError, match=r"extra_policies = \['et_to_ncr', 'et_to_ncr'\]: expected each item once"):
        pipeline.parse_overrides(["tifgsm.extra_policies=[et_to_ncr, et_to_ncr]"])
    teaching = pipeline.load_profile("teaching")  # policy erase
    with pytest.raises(PipelineError, match=r"extra_policies = \['erase'\] repeats the main policy 'erase'"):
        pipeline.stage_parameters(teaching, pipeline.parse_overrides(["tifgsm.extra_policies=[erase]"]))
    with pytest.raises(PipelineError, match=r"repeats the main policy 'et_to_ncr'"):  # the default extra_policies
        pipeline.stage_parameters(teaching, pipeline.parse_overrides(["tifgsm.policy=et_to_ncr"]))
    with pytest.raises(PipelineError, match=r"01_data.train_seed = -2: expected -1 \(the data seed\) or a seed >= 0"):
        pipeline.stage_parameters(teaching, pipeline.parse_overrides(["data.train_seed=-2"]))
    real = pipeline.stage_parameters(teaching, pipeline.parse_overrides(["data.train_seed=3", "data.data_dir=/x/brats"]))
    assert real["01_data"]["train_seed"] == 3  # real data: a bootstrap of its training cases (notebook 01)
    for ts in ("-1", "0", "3"):
        assert pipeline.stage_parameters(teaching, pipeline.parse_overrides([f"data.train_seed={ts}"]))["01_data"]["train_seed"] == int(ts)
    assert pipeline.stage_parameters(teaching, pipeline.parse_overrides(["data.train_seed=-1", "data.data_dir=/x/brats"]))
    ok = pipeline.stage_parameters(teaching, pipeline.parse_overrides(["tifgsm.policy=et_to_ncr", "tifgsm.extra_policies=[erase]"]))
    assert ok["05_tifgsm"]["policy"] == "et_to_ncr" and ok["05_tifgsm"]["extra_policies"] == ["erase"]
    got = pipeline.parse_overrides(["adversarial_training.label_source=predicted", "tifgsm.extra_policies=[]",
                                    "tifgsm.extra_policies=[erase, ed_to_et]", "data.layout=msd"])
    assert got["07_adversarial_training"] == {"label_source": "predicted"} and got["01_data"] == {"layout": "msd"}
    assert got["05_tifgsm"] == {"extra_policies": ["erase", "ed_to_et"]}


def test_common_profile_keys_are_checked_too(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("common:\n  layout: nifti\nnotebooks: {}\n")
    with pytest.raises(PipelineError, match="01_data.layout = 'nifti': expected one of brats2021"):
        pipeline.stage_parameters(pipeline.load_profile(str(bad)))
    bad.write_text("common:\n  seed: 1.5\nnotebooks: {}\n")
    with pytest.raises(PipelineError, match="seed = 1.5: expected an integer"):
        pipeline.stage_parameters(pipeline.load_profile(str(bad)))


def test_parameter_choices_match_the_library_and_the_notebooks() -> None:
    """The CLI's literal choices equal the library's constants (the oracle), name real notebook parameters, and
    allow every notebook default."""
    from robustseg_lib import attacks, data, defenses, models

    library = {
        ("01_data", "layout"): data.LAYOUTS, ("02_unet", "arch"): models.MODEL_NAMES,
        ("02_unet", "inference"): models.INFERENCE_MODES, ("05_tifgsm", "policy"): tuple(attacks.TARGET_POLICIES),
        ("05_tifgsm", "extra_policies"): tuple(attacks.TARGET_POLICIES),
        ("07_adversarial_training", "adv_attack"): defenses.ADV_ATTACKS,
        ("07_adversarial_training", "label_source"): defenses.LABEL_SOURCES, ("08_statistics", "region"): data.REGIONS,
    }
    choices = pipeline.PARAMETER_CHOICES
    for key, values in library.items():
        assert tuple(choices[key]) == tuple(values), key
    assert set(choices) == set(library)
    for (stage, name), values in choices.items():
        default = ast.literal_eval(pipeline.notebook_parameters(stage)[name])
        assert all(v in values for v in (default if isinstance(default, list) else [default])), (stage, name, default)


def test_an_unavailable_device_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys) -> None:
    """``--device cuda`` on a machine without a CUDA GPU failed only in notebook 01's setup cell, after the run folder
    was made; now the call is refused first, naming the option and what to pass instead, and nothing is written."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    for dev in ("cuda", "cuda:0"):
        with pytest.raises(PipelineError, match=rf"--device {dev}: CUDA is not available.*use --device auto .* or --device cpu"):
            pipeline.reproduce("smoke", out, device=dev, log=lambda _: None)
    assert pipeline.main(["reproduce", "--profile", "smoke", "--out", str(out), "--device", "cuda"]) == 2
    assert "robustseg: error: --device cuda: CUDA is not available" in capsys.readouterr().err
    for bad in ("mps", "gpu", "", None):  # only what the notebooks' resolve_device takes
        with pytest.raises(PipelineError, match="--device .*expected auto, cpu, cuda or cuda:N"):
            pipeline.reproduce("smoke", out, device=bad, log=lambda _: None)
    assert not out.exists()  # refused before the run folder was made
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert pipeline.check_device("cuda") == "cuda" and pipeline.check_device("cuda:0") == "cuda:0"
    with pytest.raises(PipelineError, match=r"--device cuda:1: this machine has 1 CUDA GPU\(s\) \(cuda:0 to cuda:0\)"):
        pipeline.check_device("cuda:1")
    for ok in ("auto", "cpu"):
        assert pipeline.check_device(ok) == ok


def test_a_profile_cannot_set_the_device_or_run_folder(tmp_path) -> None:
    """A profile's ``device: cuda`` was silently replaced by the call's ``--device`` (auto by default) in every
    notebook; it is refused, pointing to the options that set it."""
    bad = tmp_path / "bad.yaml"
    for text in ("common:\n  device: cuda\nnotebooks: {}\n", "notebooks:\n  02_unet:\n    run_dir: /x\n"):
        bad.write_text(text)
        with pytest.raises(PipelineError, match=r"profile bad: (device|run_dir) cannot be set by a profile .*--device"):
            pipeline.stage_parameters(pipeline.load_profile(str(bad)))


# ----------------------------------------------------------------------------- CLI audit (cli23)
@pytest.mark.parametrize("text, message", [
    ("notebooks:\n  unet: {epochs: 1\n", r"not valid YAML \(.* at line 3, column 1\)$"),
    (b"notebooks:\n  unet:\n    epochs: 1 \xe9\xff\n", r"not a profile \(not UTF-8 text: invalid continuation byte at byte 33\)"),
    ("notebooks: [1, 2]\n", r"notebooks must be a mapping \{stage: \{parameter: value\}\}, got a list \[1, 2\]"),
    ("common: [seed]\n", r"common must be a mapping \{parameter: value\}, got a list \['seed'\]"),
    ("notebooks: {unet: [1, 2]}\n", r"notebooks: unet must be a mapping \{parameter: value\}, got a list \[1, 2\]$"),
    ("", r"a profile must be a mapping with notebooks: and/or common: \(empty\)"),
    ("- seed\n", r"a profile must be a mapping with notebooks: and/or common: \(a list\)"),
    ("description: sets nothing\n", r"sets no parameter \(no common: or notebooks: entries\); .* --profile teaching"),
    ("notebooks: {unet: }\ncommon: {}\n", r"sets no parameter"),
    ("notebooks: {unet: {epochs: 1}, 02_unet: {lr: 0.1}}\n", r"notebooks: unet and 02_unet are the same stage \(02_unet\)"),
    ("notebooks: {02: {epochs: 1}}\n", r"notebooks: stage key 2 is not a name; quote it \('02'\)"),
    ("notebooks: {nosuch: {epochs: 1}}\n", r"notebooks: nosuch: unknown stage 'nosuch'; known: 01_data, .* 02 or unet"),
])
def test_a_bad_profile_file_is_named_with_its_key(tmp_path, text, message, capsys) -> None:
    """A profile file that is not YAML, not UTF-8, or whose ``notebooks``/``common`` or a stage's section is not a
    mapping gave raw tracebacks (ParserError, UnicodeDecodeError, AttributeError) or a misleading "has no
    parameter(s) [1, 2]"; one that sets nothing ran every notebook's defaults without a word. Each is refused, naming
    the file and the key, through the CLI as well (exit status 2, no traceback)."""
    import re

    path = tmp_path / "bad.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(PipelineError, match=rf"^{re.escape(str(path))}: {message}"):
        pipeline.load_profile(str(path))
    assert pipeline.main(["reproduce", "--profile", str(path), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.startswith(f"robustseg: error: {path}: ")
    assert not (tmp_path / "run").exists()


def test_a_profile_given_as_a_file_name_suggests_the_profile_name(tmp_path, monkeypatch) -> None:
    """``--profile smoke.yaml`` from a folder without that file is a path, not found: the message says to pass the
    shipped profile's name; a name that is no shipped profile gets no such hint."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError, match=r"profile 'smoke.yaml' not found .*; for the shipped profile pass "
                                            r"--profile smoke$"):
        pipeline.load_profile("smoke.yaml")
    with pytest.raises(PipelineError, match=r"profile 'mine.yaml' not found \(mine.yaml\); known: [a-z, ]+$"):
        pipeline.load_profile("mine.yaml")
    (tmp_path / "mine.yaml").write_text("notebooks:\n  unet: {epochs: 1}\n")
    assert pipeline.load_profile("mine.yaml")["notebooks"] == {"02_unet": {"epochs": 1}}


def test_an_unknown_stage_names_the_option_and_the_short_forms(tmp_path) -> None:
    """``--set nosuch.epochs=1`` and ``--only nosuch`` both said "unknown stage 'nosuch'; known: ..." without the
    option, nor that 02 or unet name 02_unet: both now say which option and mention the short forms."""
    short = r"; known: 01_data, 02_unet, .*, 08_statistics \(or their number or name alone: 02 or unet for 02_unet\)$"
    with pytest.raises(PipelineError, match=rf"^--set 'nosuch.epochs=1': unknown stage 'nosuch'{short}"):
        pipeline.parse_overrides(["nosuch.epochs=1"])
    with pytest.raises(PipelineError, match=rf"^--only nosuch: unknown stage 'nosuch'{short}"):
        pipeline.reproduce("smoke", tmp_path / "run", device="cpu", only=["unet", "nosuch"], log=lambda _: None)
    assert not (tmp_path / "run").exists()


def test_an_empty_set_value_is_named_not_read_as_none() -> None:
    """``--set unet.epochs=`` said ``epochs = None: expected an integer``; it is an empty value. A text parameter may
    be empty (``data.data_dir=`` is synthetic data), and an explicit YAML null is still read as null."""
    for item in ("unet.epochs=", "unet.lr= ", "fgsm.eps_grid="):
        stage_param = item.split("=")[0].replace("unet", "02_unet").replace("fgsm", "03_fgsm")
        with pytest.raises(PipelineError, match=rf"^--set '{item}': empty value for {stage_param} \("):
            pipeline.parse_overrides([item])
    assert pipeline.parse_overrides(["data.data_dir="]) == {"01_data": {"data_dir": ""}}
    with pytest.raises(PipelineError, match=r"epochs = None: expected an integer"):
        pipeline.parse_overrides(["unet.epochs=null"])


def test_help_describes_every_command_without_markup(capsys) -> None:
    """``robustseg --help`` described reproduce alone, with RST backticks; the commands had no description; the --set
    help did not say VALUE is YAML nor where the parameters are listed."""
    texts = {}
    for argv in (["--help"], ["reproduce", "--help"], ["stages", "--help"], ["compare", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            pipeline.main(argv)
        assert exit_.value.code == 0
        texts[argv[0]] = " ".join(capsys.readouterr().out.split())
    assert all("`" not in t for t in texts.values())
    assert all(f"'{c}'" in texts["--help"] for c in ("reproduce", "stages", "compare"))
    for command, words in (("reproduce", "Run the eight notebooks"), ("stages", "List the stages"),
                           ("compare", "Set the claims' verdicts")):
        assert words in texts[command], command
    assert "VALUE is read as YAML" in texts["reproduce"] and "'robustseg stages' lists the parameters" in texts["reproduce"]
    assert "--device auto|cpu|cuda|cuda:N" in texts["reproduce"]


def test_device_cuda_n_passes_the_parser_and_check_device_judges_it(monkeypatch, capsys) -> None:
    """argparse's choices refused ``--device cuda:1`` that check_device (and the notebooks) accept: the parser takes
    any text and check_device, the first thing reproduce does, refuses what is not auto, cpu, cuda or cuda:N."""
    seen: dict = {}
    monkeypatch.setattr(pipeline, "reproduce", lambda profile, out, **kw: seen.update(kw) or {"profile": "smoke",
                                                                                              "stages": {}})
    monkeypatch.setattr(pipeline, "_print_claims", lambda *a, **k: None)
    assert pipeline.main(["reproduce", "--device", "cuda:1"]) == 0 and seen["device"] == "cuda:1"
    monkeypatch.undo()
    assert pipeline.main(["reproduce", "--device", "mps"]) == 2
    assert "robustseg: error: --device 'mps': expected auto, cpu, cuda or cuda:N" in capsys.readouterr().err


def _range_cases(tmp_path):
    """``(stage, param, values just outside, boundary values inside, the library's own check, word)``: ``check(value)``
    runs what the notebook runs with that value (the oracle); it refuses a value when it raises ValueError or TypeError
    naming ``word`` (any such error where ``word`` is None)."""
    import numpy as np
    import torch

    from robustseg_lib import attacks, data, defenses, evaluation, models, stats, training

    net = torch.nn.Conv3d(4, 4, 1)
    x, y = torch.zeros(1, 4, 4, 4, 4), torch.zeros(1, 4, 4, 4, dtype=torch.long)
    rng = np.random.default_rng(0)
    images, classes = rng.normal(size=(2, 4, 6, 6, 6)).astype("float32"), rng.integers(0, 4, size=(2, 6, 6, 6))
    seed_check = (lambda v: data.split_cases(["a", "b", "c"], (0.6, 0.2, 0.2), v), "seed")
    cases = [(s, "seed", [-1], [0], *seed_check) for s in STAGES]
    cases += [
        ("01_data", "train_seed", [-2], [-1, 0], lambda v: data.synthetic_case_seeds(["a"], 0, train_seed=None if v == -1 else v), "train_seed"),
        ("01_data", "n_cases", [0], [1], lambda v: data._check_case_args(v, (16, 16, 16), 0, "brats2021"), "n_cases"),
        ("01_data", "shape", [[15, 16, 16], [16, 16]], [[16, 16, 16]], lambda v: data._check_case_args(1, v, 0, "msd"), "shape"),
        ("01_data", "work_shape", [[0, 48, 48], [48, 48]], [[1, 1, 1]], lambda v: data._check_shape(v, 1, "work_shape"), "work_shape"),
        ("01_data", "fractions", [[0.9, 0.9, 0.9], [0.0, 0.5, 0.5], [0.5, 0.5]], [[1.0, 0.0, 0.0], [0.5, 0.2, 0.3]],
         data._check_fractions, "fractions"),
        ("01_data", "workers", [0], [1], lambda v: _unlabelled_prepare(data, tmp_path, v), "workers"),
        ("01_data", "threshold_cases", [-1], [0], lambda v: data.threshold_baseline(images, classes, classes >= 0,
                                                                                     max_cases=v or None), "max_cases"),
        ("02_unet", "width", [0], [1], lambda v: models.model_spec("unet", width=v), "width"),
        ("02_unet", "levels", [1], [2], lambda v: models.model_spec("unet", levels=v), "levels"),
        ("02_unet", "crop", [[32, 32], [0, 32, 32]], [[1, 1, 1]], lambda v: training.TrainConfig(crop=tuple(v)), "crop"),
        ("02_unet", "sw_overlap", [1.0, -0.1], [0.0, 0.99], lambda v: training.TrainConfig(sw_overlap=v), "sw_overlap"),
        ("04_ifgsm", "curve_eps", [-0.1, float("inf")], [0.0], lambda v: attacks.ifgsm(net, x, y, v, 0.4 * v, 1), "eps"),
        ("06_distillation", "temperature", [0.0], [1e-9], lambda v: training.TrainConfig(temperature=v), "temperature"),
        ("06_distillation", "compare_temperatures", [[0.0], [1.0, -1.0]], [[], [1e-9]],
         lambda v: [training.TrainConfig(temperature=t) for t in v], "temperature"),
        ("06_distillation", "hard_weight", [-0.1], [0.0], lambda v: defenses.DistillationObjective(net, 1.0, hard_weight=v),
         "hard_weight"),
        ("07_adversarial_training", "eps_range", [[0.5, 0.1], [-0.1, 0.2], [0.1]], [[0.0, 0.0], [0.2, 0.2]],
         defenses._check_eps_range, "eps_range"),
        ("07_adversarial_training", "mix", [0.0, 1.01], [1e-9, 1.0], lambda v: defenses.AdversarialAugmenter("fgsm", (0.1, 0.2), mix=v),
         "mix"),
        ("07_adversarial_training", "adv_steps", [0], [1], lambda v: defenses.AdversarialAugmenter("fgsm", (0.1, 0.2), steps=v),
         "steps"),
        ("08_statistics", "alpha", [0.0, 1.0, 5.0], [0.001, 0.999], stats.claim_rules_md, "alpha"),
        ("08_statistics", "n_resamples", [0], [1], lambda v: stats.bootstrap_mean_ci([1.0, 2.0, 3.0], n_resamples=v), "n_resamples"),
    ]
    for s in ("02_unet", "06_distillation", "07_adversarial_training"):
        cases += [(s, k, [out], [inside], lambda v, k=k: training.TrainConfig(**{k: v}), k)
                  for k, out, inside in (("epochs", 0, 1), ("steps_per_epoch", 0, 1), ("lr", 0.0, 1e-9))]
    cases.append(("02_unet", "batch_size", [0], [1], lambda v: training.TrainConfig(batch_size=v), "batch_size"))
    for s in list(STAGES)[2:7]:
        cases.append((s, "batch_size", [0], [1], lambda v: attacks.attack_sweep(
            net, x, y, attack="fgsm", eps_grid=[0.0], batch_size=v, progress=False, hd95=False, with_percept=False), "batch_size"))
    for s in ("03_fgsm", "04_ifgsm", "05_tifgsm"):
        cases.append((s, "eps_grid", [[], [-0.1], ["a", "b"], [0.1, float("inf")]], [[0.0], [0]],
                      lambda v: evaluation.AttackSpec("fgsm", tuple(v)), None))
    for s in ("04_ifgsm", "05_tifgsm"):
        cases += [(s, "steps", [0], [1], lambda v: evaluation.AttackSpec("ifgsm", (0.1,), steps=v), "steps"),
                  (s, "alpha_frac", [0.0], [1e-9], lambda v: evaluation.AttackSpec("ifgsm", (0.1,), alpha_frac=v), "alpha_frac")]
    return cases


def _unlabelled_prepare(data, tmp_path, workers: int) -> None:
    """prepare_dataset on one case without labels: it checks ``workers``, then says there is no labelled case."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "skipping 1 case(s) without labels"
        data.prepare_dataset([data.Case("c", "brats2021", {})], tmp_path / "p.npz", (8, 8, 8), workers=workers,
                             progress=False)


def _refused_by(check, value, word) -> bool:
    try:
        check(value)
    except (ValueError, TypeError) as exc:
        return word is None or word in str(exc)
    return False


def test_value_ranges_are_checked_up_front_and_never_stricter_than_the_library(tmp_path) -> None:
    """``--set unet.epochs=-1`` (or a profile's) failed only when notebook 02 ran, after the stages before it; every
    parameter with a clear rule is now checked up front, from --set and a profile alike, naming ``stage.param``. For each
    rule a value just outside is refused by the library (the oracle: what the notebook calls) and up front, and a
    boundary value inside is accepted by both (so no value a notebook runs with is refused)."""
    teaching = pipeline.load_profile("teaching")
    cases = _range_cases(tmp_path)
    assert {(s, p) for s, p, *_ in cases} == set(pipeline.PARAMETER_RULES) | set(pipeline.SYNTHETIC_DATA_RULES)
    prof = tmp_path / "p.yaml"
    for stage, param, outside, inside, check, word in cases:
        for value in outside:
            assert _refused_by(check, value, word), ("the library accepts", stage, param, value)
            text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
            with pytest.raises(PipelineError, match=rf"^{stage}\.{param} = .*: expected "):
                pipeline.stage_parameters(teaching, pipeline.parse_overrides([f"{stage}.{param}={text}"]))
            prof.write_text(yaml.safe_dump({"notebooks": {stage: {param: value}}}))
            with pytest.raises(PipelineError, match=rf"^{stage}\.{param} = .*: expected "):
                pipeline.stage_parameters(pipeline.load_profile(str(prof)))
        for value in inside:
            assert not _refused_by(check, value, word), ("the library refuses", stage, param, value)
            text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
            got = pipeline.stage_parameters(teaching, pipeline.parse_overrides([f"{stage}.{param}={text}"]))
            assert got[stage][param] == value
            prof.write_text(yaml.safe_dump({"notebooks": {stage: {param: value}}}))
            assert pipeline.stage_parameters(pipeline.load_profile(str(prof)))[stage][param] == value


def test_synthetic_data_rules_are_not_applied_with_a_data_folder(tmp_path, capsys) -> None:
    """Notebook 01 reads n_cases and shape only to generate synthetic cases: with a data folder it runs whatever they
    are, so they are not refused then; without one they are, before the run folder is made."""
    teaching = pipeline.load_profile("teaching")
    got = pipeline.stage_parameters(teaching, pipeline.parse_overrides(["data.n_cases=0", "data.shape=[8, 8, 8]",
                                                                        "data.data_dir=/x/brats"]))
    assert got["01_data"]["n_cases"] == 0 and got["01_data"]["shape"] == [8, 8, 8]
    with pytest.raises(PipelineError, match=r"^01_data.shape = \[8, 8, 8\]: expected 3 integers >= 16, .*\(with "
                                            r"synthetic data: no data_dir\)$"):
        pipeline.stage_parameters(teaching, pipeline.parse_overrides(["data.shape=[8, 8, 8]"]))
    out = tmp_path / "run"
    assert pipeline.main(["reproduce", "--profile", "smoke", "--out", str(out), "--set", "unet.epochs=-1"]) == 2
    assert "robustseg: error: 02_unet.epochs = -1: expected an integer >= 1" in capsys.readouterr().err
    assert not out.exists()


def test_parameter_rules_name_real_parameters_and_allow_the_defaults() -> None:
    """Every rule names a parameter its notebook declares, and every notebook default and shipped profile passes."""
    for (stage, name), rule in {**pipeline.PARAMETER_RULES, **pipeline.SYNTHETIC_DATA_RULES}.items():
        declared = pipeline.notebook_parameters(stage)
        assert name in declared, (stage, name)
        pipeline._check_rule(stage, name, ast.literal_eval(declared[name]), rule)
    for profile in ("smoke", "teaching", "paper"):
        pipeline.stage_parameters(pipeline.load_profile(profile))


def test_the_repository_itself_is_no_run_folder(tmp_path, monkeypatch) -> None:
    """``cd <repo> && robustseg reproduce --out .``: its notebooks/ is NOTEBOOK_DIR, the committed notebooks. Checked on
    the folder check alone (a regression must not run a stage into the checkout); test_pipeline_rerun.py runs the
    whole refusal on stub notebooks."""
    import re
    from pathlib import Path

    monkeypatch.chdir(pipeline.REPO_ROOT)
    with pytest.raises(PipelineError, match=rf"--out \.: its notebooks/ folder is the source notebooks' folder "
                                            rf"{re.escape(str(NOTEBOOK_DIR))}, which the run would overwrite"):
        pipeline._check_run_folder(Path("."), ".", NOTEBOOK_DIR)
    with pytest.raises(PipelineError, match=r"--out notebooks: the source notebooks' folder"):
        pipeline._check_run_folder(Path("notebooks"), "notebooks", NOTEBOOK_DIR)
    pipeline._check_run_folder(Path("runs/teaching"), None, NOTEBOOK_DIR)  # the default folder is fine
    pipeline._check_run_folder(tmp_path / "run", str(tmp_path / "run"), NOTEBOOK_DIR)
