"""The atlasd console script: subcommands, exit codes and one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from known_groups import so2
from wandb_records import record_wandb_runs

from atlasd.cli import main
from atlasd.group import DiscoveredGroup

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture
def group_file(tmp_path):
    cosets = torch.stack([torch.eye(2), torch.diag(torch.tensor([1.0, -1.0]))])
    return DiscoveredGroup(so2(), cosets=cosets, metadata={"dataset": "o2"}).save(
        tmp_path / "group.json"
    )


def test_show_prints_summary_and_writes_plot(group_file, capsys):
    assert main(["show", str(group_file)]) == 0
    out = capsys.readouterr().out
    assert "DiscoveredGroup(dim=1, d=2, n_components=2)" in out
    assert "[+0.000, -1.000]" in out
    png = group_file.with_suffix(".png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_show_json_and_custom_plot_path(group_file, tmp_path, capsys):
    assert main(["show", str(group_file), "--json", "true", "--plot", str(tmp_path / "p.png")]) == 0
    assert '"format": "atlasd.group/1"' in capsys.readouterr().out
    assert (tmp_path / "p.png").exists()


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["show", "/nonexistent/group.json"], 1, "no group file at /nonexistent/group.json"),
        (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
        (["check", "--seed", "x"], 2, "Expected a <class 'int'>"),
        (["show", "g.json", "--config", "/nonexistent.yaml"], 2, "invalid arguments"),
    ],
)
def test_errors_exit_nonzero_with_one_line(argv, code, message, capsys):
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1 and err.startswith("atlasd: error:")


def test_malformed_group_file(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "atlasd.group/1", "algebra": [[[0, 1]')
    assert main(["show", str(bad)]) == 1
    assert "malformed JSON" in capsys.readouterr().err


def test_config_file_and_print_config(tmp_path, group_file, capsys):
    cfg = tmp_path / "show.yaml"
    cfg.write_text(f"group: {group_file}\nno_plot: true\n")
    with pytest.raises(SystemExit) as exc:
        main(["show", "--config", str(cfg), "--print_config"])
    assert exc.value.code == 0
    assert f"group: {group_file}" in capsys.readouterr().out
    assert main(["show", "--config", str(cfg)]) == 0


def test_check_reports_measured_errors(capsys):
    assert main(["check", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    values = {line.split()[0]: float(line.split()[1]) for line in out.strip().splitlines()}
    assert values["rot90_error"] < 1e-5
    assert values["composition_error"] < 1e-2
    assert values["centre_error"] < 1e-5


def test_console_script_is_installed(group_file):
    exe = shutil.which("atlasd") or str(
        __import__("pathlib").Path(sys.executable).with_name("atlasd")
    )
    res = subprocess.run(
        [exe, "show", str(group_file), "--no_plot", "true"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "n_components=2" in res.stdout


def test_discover_writes_run_folder_and_offline_wandb(tmp_path, capsys):
    """A shrunk heat run (96 fields, 6 batches of 8, 4 basis epochs: a few seconds) writes the
    run folder and an offline wandb run, and finds so(2). At this budget the similarity to so(2)
    was 0.933-0.9985 over seeds 0-9 (0.9985 for the config's seed 0), hence the bound 0.85; a
    random generator scores 0.25 on average."""
    run_dir = tmp_path / "run"
    argv = [
        "discover", "--config", str(CONFIGS / "heat.yaml"), "--run_dir", str(run_dir),
        "--data.n", "96", "--discovery.batch_size", "8",
        "--discovery.predictor.epochs", "1",
        "--discovery.basis.epochs", "4",
        "--discovery.cosets.candidates", "2",
        "--discovery.cosets.steps", "2",
        "--trainer.limit_train_batches", "6",
    ]  # fmt: skip
    with record_wandb_runs() as runs:
        assert main(argv) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    group = DiscoveredGroup.load(run_dir / "group.json")
    # the similarity written is the one of the group written, and the run found so(2)
    assert metrics["similarity_to_truth"] == pytest.approx(group.similarity(so2()), abs=1e-9)
    assert metrics["similarity_to_truth"] > 0.85
    assert group.dim == metrics["dim"] == 1
    assert {"predictors", "basis", "cosets", "total"} <= set(metrics["wall_time_s"])
    assert all(v >= 0 for v in metrics["wall_time_s"].values())
    assert len(metrics["losses"]["basis_per_epoch"]) == 4
    assert group.metadata["dataset"] == "heat" and group.metadata["atlas"]["radius"] == 14
    assert "run folder:" in capsys.readouterr().out
    # the offline wandb run holds the per-epoch generator heatmaps and the final summary
    (run,) = (run_dir / "wandb").glob("offline-run-*")
    assert len(list(run.glob("run-*.wandb"))) == 1
    images = list(run.glob("files/media/images/basis/generators_*.png"))
    assert len(images) == 4
    assert len(list(run.glob("files/media/images/group/plot_*.png"))) == 1
    (table,) = run.glob("files/media/table/group/cosets_*.table.json")
    table = json.loads(table.read_text())
    assert table["columns"] == ["component", "det", "representative"]
    assert len(table["data"]) == group.n_components
    (logged,) = runs
    assert logged["dir"].resolve() == (run / "files").resolve()
    # losses per stage, predictor validation, similarity to the truth per epoch, final figures
    assert {
        "train_loss", "val_loss", "val_loss/chart_18", "basis/equivariance_loss",
        "basis/similarity_to_truth", "final/similarity_to_truth", "final/n_components",
        "final/wall_time_s/total",
    } <= logged["history"]  # fmt: skip
    summary = logged["summary"]
    assert summary["similarity_to_truth"] == pytest.approx(metrics["similarity_to_truth"])
    assert summary["cosets_match_truth"] == metrics["cosets_match_truth"]
    assert summary["final/n_components"] == group.n_components
    config = logged["config"]
    assert config["task"] == "heat" and config["data"]["n"] == 96
    assert config["discovery"]["basis"]["epochs"] == 4


def test_discover_bad_task_and_seeds(tmp_path, capsys):
    assert main(["discover", "--task", "nope", "--run_dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "unknown task 'nope'; known tasks: climate, files, heat, jets, sphere_digits" in err


@pytest.mark.parametrize("command", ["degeneracy", "downstream"])
def test_nested_model_override_merges_into_the_config_and_is_typed(tmp_path, command):
    """--models.baseline.kernel_size 3 changes that one option: the config's other baseline
    options and the equivariant model stay, and the value is read as YAML (an int)."""
    from atlasd.cli import parse

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        "task: heat\nmodels:\n  baseline: {hidden: [8, 8], kernel_size: 5}\n"
        "  equivariant: {hidden: ['4*S + 2*V'], kernel_size: 5}\n"
    )
    argv = [command, "--config", str(cfg_file), "--models.baseline.kernel_size", "3"]
    cfg = parse(argv)[command]
    assert cfg.models.to_dict() == {
        "baseline": {"hidden": [8, 8], "kernel_size": 3},
        "equivariant": {"hidden": ["4*S + 2*V"], "kernel_size": 5},
    }
    # a whole model given as a mapping still replaces that model's options
    cfg = parse([*argv[:3], "--models.equivariant", "{hidden: ['2*S'], kernel_size: 3}"])[command]
    assert cfg.models.equivariant.to_dict() == {
        "hidden": ["2*S"],
        "kernel_size": 3,
    }


def test_empty_sections_mean_defaults_and_plain_values_are_refused(tmp_path):
    """`llc:` in a YAML reads as null: the section's defaults, as before typed sections; a
    plain value where a section belongs (0.2.0's `cosets: false`) names the section."""
    from atlasd.cli import UsageError, parse
    from atlasd.discovery.config import PredictorConfig
    from atlasd.downstream.degeneracy.config import LLCConfig, SamplesConfig

    empty = tmp_path / "empty.yaml"
    empty.write_text("task: heat\nsamples:\nllc:\n")
    cfg = parse(["degeneracy", "--config", str(empty)]).degeneracy
    assert cfg.samples == SamplesConfig() and cfg.llc == LLCConfig()
    nested = tmp_path / "nested.yaml"
    nested.write_text("task: heat\ndiscovery:\n  predictor:\n  basis: {epochs: 7}\n")
    disc = parse(["discover", "--config", str(nested)]).discover.discovery
    assert disc.predictor == PredictorConfig() and disc.basis.epochs == 7
    old = tmp_path / "old.yaml"
    old.write_text("task: heat\ndiscovery:\n  cosets: false\n")
    with pytest.raises(UsageError, match=r"discovery.cosets is a section of options \(search,"):
        parse(["discover", "--config", str(old)])
    with pytest.raises(UsageError, match=r"predictor.val_fraction must be in \(0, 1\), got 1.0"):
        parse(["discover", "--discovery.predictor.val_fraction", "1.0"])


@pytest.mark.parametrize("command", ["downstream", "degeneracy"])
def test_report_commands_refuse_an_unknown_task_before_making_the_folder(tmp_path, capsys, command):
    from atlasd.group import DiscoveredGroup

    group = DiscoveredGroup(so2()).save(tmp_path / "group.json")
    run_dir = tmp_path / "out"
    argv = [command, "--task", "wether", "--group", str(group), "--run_dir", str(run_dir)]
    assert main([*argv, "--logger", "none"]) == 1
    assert "unknown task 'wether'; known tasks: climate, files, heat" in capsys.readouterr().err
    assert not run_dir.exists()
