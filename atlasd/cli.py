"""The ``atlasd`` console script: the one place that wires the stages together.

Every subcommand takes ``--config FILE.yaml`` (or the name of a bundled config: ``--config heat``)
and ``--print_config`` (jsonargparse), so a run is reproducible from its config. Failures exit
non-zero with a one-line reason on stderr.

    atlasd discover --config heat [--seed N] [--seeds [0,1,2]] [--run_dir DIR] [--trainer.X V]
    atlasd show  DIR/group.json [--plot PATH]     print a group's summary and write its plot
    atlasd configs                                list the bundled configs
    atlasd check [--seed N]                       measure the geometry conventions here

Start-up is kept light (``atlasd --help`` well under a second and a half): this module imports
only jsonargparse; torch, Lightning and the stages load when a command needs them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jsonargparse import ActionConfigFile, ActionYesNo, ArgumentParser, Namespace

__all__ = ["build_parser", "bundled_configs", "main", "trainer_options"]


def _subparser(description: str) -> ArgumentParser:
    parser = ArgumentParser(description=description, exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with the options")
    return parser


def build_parser() -> ArgumentParser:
    """The full argument parser (subcommands show, check)."""
    parser = ArgumentParser(
        prog="atlasd",
        description="Automatic local symmetry discovery: atlases, Lie algebras, equivariant "
        "layers and the degeneracy of trained weights.",
        exit_on_error=False,
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subcommands(dest="command", required=True)

    disc = _subparser("Discover the symmetry group of a task's data and write DIR/group.json.")
    disc.add_argument("--task", type=str, default="heat", help="dataset name (atlasd.datasets)")
    disc.add_argument("--data", type=dict, default={}, help="keyword arguments of the DataModule")
    disc.add_argument(
        "--discovery.kind",
        type=str | None,
        default=None,
        help="local, global or distribution (default: the task's own); distribution on a "
        "field task compares transformed chart patches with the data (LieGAN's criterion)",
    )
    disc.add_argument("--discovery.n_generators", type=int, default=1)
    disc.add_argument(
        "--discovery.cosets",
        type=bool | None,
        default=None,
        help="search the discrete components (default: yes for local and global discovery, "
        "no for distributions, as the library's entry points do)",
    )
    disc.add_argument("--discovery.learn_in_rep", type=bool, default=False)
    disc.add_argument("--discovery.learn_out_rep", type=bool, default=False)
    disc.add_argument("--discovery.out_radius", type=int | None, default=None)
    disc.add_argument("--discovery.training", type=dict, default={}, help="DiscoveryConfig fields")
    disc.add_argument("--seed", type=int, default=0)
    disc.add_argument(
        "--seeds",
        type=list[int] | None,
        default=None,
        help="several seeds: one run each in DIR/seed_N and a summary",
    )
    disc.add_argument(
        "--run_dir", type=str | None, default=None, help="output folder (default runs/<task>)"
    )
    disc.add_argument(
        "--logger",
        type=str,
        default="wandb",
        help="'wandb' (offline unless an API key is set; WANDB_MODE=disabled turns it off) "
        "or 'none'",
    )
    disc.add_argument("--wandb_project", type=str, default="atlasd")
    disc.add_argument(
        "--progress",
        type=str,
        default="auto",
        help="'bar' (Rich progress bars), 'lines' (one line per epoch, for logs), 'none', or "
        "'auto': bars when stderr is a terminal, lines otherwise",
    )
    disc.add_argument(
        "--fresh",
        action=ActionYesNo,
        default=False,
        help="start over: discard the stage state an earlier run left in the run folder "
        "(default: resume it, skipping finished stages)",
    )
    disc.add_argument(
        "--ckpt_path",
        type=str | None,
        default=None,
        help="resume the stage this Lightning checkpoint belongs to (predictors or basis)",
    )
    _add_trainer_section(disc)
    sub.add_subcommand("discover", disc, help="run discovery on a task and save the group")

    down = _subparser(
        "Train a baseline and a model built from a discovered group on a task's data, with the "
        "same budget and seeds, and write DIR/report.json and DIR/report.md."
    )
    down.add_argument("--task", type=str, default="sphere_digits", help="dataset name")
    down.add_argument("--data", type=dict, default={}, help="keyword arguments of the DataModule")
    down.add_argument("--training", type=dict, default={}, help="epochs, lr, batch_size, ...")
    _add_model_arguments(down)
    down.add_argument("--group", type=str, help="a group.json written by `atlasd discover`")
    down.add_argument("--seeds", type=list[int], default=[0, 1, 2])
    down.add_argument(
        "--run_dir", type=str | None, default=None, help="default runs/<task>-downstream"
    )
    down.add_argument("--logger", type=str, default="wandb", help="'wandb' or 'none'")
    down.add_argument("--wandb_project", type=str, default="atlasd")
    _add_trainer_section(down)
    sub.add_subcommand("downstream", down, help="compare a baseline with a group-built model")

    deg = _subparser(
        "Train an unconstrained and a group-built model on a task's data and on a "
        "symmetry-broken version of it; measure LLC, ranks, effective dimension and emulability; "
        "write DIR/report.json, DIR/report.md and DIR/report.png."
    )
    deg.add_argument("--task", type=str, default="heat", help="heat or sphere_digits")
    deg.add_argument("--group", type=str, help="a group.json written by `atlasd discover`")
    deg.add_argument("--data", type=dict, default={}, help="keyword arguments of the DataModule")
    deg.add_argument(
        "--broken", type=dict, default={}, help="DataModule options that break the symmetry"
    )
    deg.add_argument("--samples", type=dict, default={}, help="n, n_heldout, n_rank, n_emulate")
    _add_model_arguments(deg)
    deg.add_argument("--training", type=dict, default={}, help="epochs, lr, batch_size, ...")
    deg.add_argument("--llc", type=dict, default={}, help="chains, draws, burn_in, step, ...")
    deg.add_argument("--seeds", type=list[int], default=[0])
    deg.add_argument(
        "--run_dir", type=str | None, default=None, help="default runs/<task>-degeneracy"
    )
    deg.add_argument("--logger", type=str, default="wandb", help="'wandb' or 'none'")
    deg.add_argument("--wandb_project", type=str, default="atlasd")
    _add_trainer_section(deg)
    sub.add_subcommand("degeneracy", deg, help="measure the degeneracy a discovered group predicts")

    merge = _subparser(
        "Merge degeneracy reports of the same experiment on different seeds (run in separate "
        "processes or on separate machines, with one fixed llc.localization) into one report "
        "over all seeds: DIR/report.json, report.md and report.png."
    )
    merge.add_argument("reports", type=str, nargs="+", help="report folders or report.json files")
    merge.add_argument("--run_dir", type=str, help="folder for the merged report")
    sub.add_subcommand(
        "degeneracy-merge", merge, help="one degeneracy report from reports on different seeds"
    )

    show = _subparser("Print a DiscoveredGroup's summary and write its plot.")
    show.add_argument("group", type=str, help="path to a group.json file")
    show.add_argument(
        "--plot",
        type=str | None,
        default=None,
        help="where to write the plot (default: next to the file, .png)",
    )
    show.add_argument("--no_plot", type=bool, default=False, help="only print the summary")
    show.add_argument("--json", type=bool, default=False, help="print the file's JSON instead")
    sub.add_subcommand("show", show, help="print and plot a discovered group")

    listing = _subparser("List the configs that ship with atlasd (usable as --config NAME).")
    sub.add_subcommand("configs", listing, help="list the bundled configs")

    check = _subparser("Measure the geometry conventions (rot90, composition, centre) here.")
    check.add_argument("--seed", type=int, default=0)
    check.add_argument("--radius", type=int, default=10)
    sub.add_subcommand("check", check, help="self-check of the chart and action conventions")
    return parser


_TRAINER_SKIP = {
    "logger",
    "callbacks",
    "plugins",
    "enable_checkpointing",
    "default_root_dir",
    "model_registry",
}


def _add_model_arguments(parser: ArgumentParser) -> None:
    # one argument per model, so that --models.baseline.kernel_size 3 merges into the config's
    # baseline options instead of replacing them (a single --models dict is merged one level)
    parser.add_argument(
        "--models.baseline", type=dict, default={}, help="options of the unconstrained model"
    )
    parser.add_argument(
        "--models.equivariant", type=dict, default={}, help="options of the group-built model"
    )


def _add_trainer_section(parser: ArgumentParser) -> None:
    # A mapping here, typed against lightning.Trainer's signature only when a command runs
    # (trainer_options): building the typed section imports Lightning, which alone costs several
    # seconds, and --help / --print_config must not.
    parser.add_argument(
        "--trainer",
        type=dict,
        default={},
        help="lightning.Trainer options for every stage's Trainer, e.g. --trainer.accelerator gpu "
        "--trainer.devices 2 --trainer.strategy ddp (checked against lightning.Trainer's "
        "signature when the command runs; logger, callbacks and checkpointing are atlasd's)",
    )


def trainer_options(given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``--trainer.*`` options of a command, typed by ``lightning.Trainer``'s signature.

    Values given on the command line arrive as strings and are parsed by jsonargparse against
    the Trainer's annotations; only the options given are returned (Lightning's defaults stay
    Lightning's). Raises UsageError naming an unknown or mistyped option.
    """
    given = dict(given or {})
    if not given:
        return {}
    import lightning

    typed = ArgumentParser(exit_on_error=False)
    typed.add_class_arguments(lightning.Trainer, "trainer", skip=_TRAINER_SKIP)
    argv = [
        f"--trainer.{key}={value if isinstance(value, str) else json.dumps(value)}"
        for key, value in given.items()
    ]
    try:
        parsed = typed.parse_args(argv)
    except (argparse.ArgumentError, ValueError, TypeError, KeyError) as exc:
        raise UsageError(f"invalid arguments: {_one_line(exc)}") from exc
    return {key: parsed.trainer[key] for key in given}


def _version() -> str:
    from atlasd import __version__

    return f"atlasd {__version__}"


def bundled_configs() -> dict[str, Path]:
    """The configs that ship with atlasd: ``{name: path}``, name = file name without .yaml."""
    from importlib.resources import files

    folder = Path(str(files("atlasd.configs")))
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def _config_description(path: Path) -> str:
    """The first comment line of a config: what it runs."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""


def _cmd_configs(cfg) -> int:
    configs = bundled_configs()
    width = max(map(len, configs), default=0)
    for name, path in configs.items():
        print(f"{name:<{width}}  {_config_description(path)}")
    print(f"\n(in {next(iter(configs.values())).parent}; use as --config NAME)", file=sys.stderr)
    return 0


def _resolve_config_names(argv: list[str]) -> list[str]:
    """``--config NAME`` (no such file, no folder in it) becomes the bundled config of that name,
    so that ``atlasd discover --config heat`` works from any folder."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            j, value = i + 1, out[i + 1]
        elif arg.startswith("--config="):
            j, value = i, arg.split("=", 1)[1]
        else:
            continue
        if Path(value).exists() or "/" in value or "\\" in value or value.startswith("{"):
            continue  # a path (jsonargparse reports a missing one) or an inline config
        configs = bundled_configs()
        name = value.removesuffix(".yaml").removesuffix(".yml")
        if name not in configs:
            raise UsageError(
                f"invalid arguments: no config file {value!r} here and no bundled config of "
                f"that name; bundled configs: {', '.join(configs)}"
            )
        out[j] = str(configs[name]) if j == i + 1 else f"--config={configs[name]}"
    return out


def _cmd_show(cfg) -> int:
    # torch-free (atlasd.group_file): a saved group prints and plots in well under 1.5 s
    from atlasd import group_file

    path = Path(cfg.group)
    if not path.is_file():
        raise FileNotFoundError(f"no group file at {path}")
    doc = group_file.read_document(path)
    try:
        parts = group_file.parts_from_document(doc)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    # the readable form and closure residual are stored by the writer (computed with torch);
    # a file that lacks them shows the standard form, and no residual
    stored = doc.get("algebra_sparse")
    readable = (  # empty when k = 0, like the algebra
        group_file.check_matrices(stored, "algebra_sparse") if stored else parts.algebra
    )
    if cfg.json:
        print(json.dumps(doc, indent=1))
    else:
        text = group_file.summary_text(
            group_file.header(parts),
            readable,
            parts.cosets,
            parts.metadata,
            doc.get("closure_residual"),
        )
        print(text)
    if not cfg.no_plot:
        plot = Path(cfg.plot) if cfg.plot else path.with_suffix(".png")
        group_file.plot_generators(readable, plot, cosets=parts.cosets)
        print(f"plot written to {plot}", file=sys.stderr)
    return 0


_CHECK_TOLERANCES = {"rot90_error": 1e-5, "composition_error": 1e-2, "centre_error": 1e-5}


def _cmd_check(cfg) -> int:
    from atlasd.conventions import check_conventions

    errors = check_conventions(seed=cfg.seed, radius=cfg.radius)
    ok = True
    for name, value in errors.items():
        tol = _CHECK_TOLERANCES[name]
        status = "ok" if value < tol else "FAIL"
        ok &= value < tol
        print(f"{name:<20} {value:.2e}  (tolerance {tol:.0e})  {status}")
    return 0 if ok else 1


def _cmd_discover(cfg) -> int:
    import statistics
    import time

    from atlasd.datasets import TASKS
    from atlasd.io import check_writable, is_global_zero, write_json_atomic

    if cfg.task not in TASKS and "class_path" not in (cfg.data or {}):
        raise ValueError(f"unknown task {cfg.task!r}; known tasks: {', '.join(sorted(TASKS))}")
    if cfg.progress not in ("auto", "bar", "lines", "none"):
        raise ValueError(f"--progress must be auto, bar, lines or none, got {cfg.progress!r}")
    trainer = dict(cfg.trainer)  # typed by parse()
    run_dir = Path(cfg.run_dir or f"runs/{cfg.task}")
    _check_creatable(run_dir)
    # the data first: a bad file or option fails here and leaves no run folder behind
    start = time.perf_counter()
    dm = _load_datamodule(cfg)
    data_time = time.perf_counter() - start
    check_writable(run_dir)
    seeds = cfg.seeds if cfg.seeds else [cfg.seed]
    progress = cfg.progress
    if progress == "auto":
        progress = "bar" if sys.stderr.isatty() else "lines"
    results = []
    for seed in seeds:
        out = run_dir / f"seed_{seed}" if len(seeds) > 1 else run_dir
        results.append(_discover_one(cfg, dm, data_time, seed, out, trainer, progress))
    if len(seeds) > 1:
        sims = [r["similarity_to_truth"] for r in results if "similarity_to_truth" in r]
        summary = {"task": cfg.task, "seeds": seeds, "runs": results}
        if sims:
            summary["similarity_mean"] = statistics.fmean(sims)
            summary["similarity_sd"] = statistics.stdev(sims) if len(sims) > 1 else 0.0
            print(
                f"similarity to the ground truth over {len(sims)} seeds: "
                f"{summary['similarity_mean']:.4f} +- {summary['similarity_sd']:.4f}"
            )
        if is_global_zero():
            write_json_atomic(run_dir / "summary.json", summary)
    return 0


def _check_creatable(folder: Path) -> None:
    """Fail before any work when the output folder could not be made (its nearest existing
    ancestor is not a writable folder), without creating anything yet."""
    import os

    parent = folder
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OSError(f"cannot write to the output folder {folder}: {parent} is not writable")


def _load_datamodule(cfg):
    """The task's DataModule, set up (its tensors loaded and checked)."""
    from atlasd.datasets import check_datamodule, make_datamodule

    dm = make_datamodule(cfg.task, **_coerce(cfg.data))
    dm.setup()
    check_datamodule(dm)  # a user's DataModule that lacks x fails here in one line
    return dm


def _load_report_group(cfg):
    """The --group of a downstream or degeneracy command, loaded (clear errors first)."""
    from atlasd.datasets import TASKS
    from atlasd.group import DiscoveredGroup

    if cfg.task not in TASKS:
        raise ValueError(f"unknown task {cfg.task!r}; known tasks: {', '.join(sorted(TASKS))}")
    if not cfg.group:
        raise ValueError("--group GROUP.json is required (a group written by `atlasd discover`)")
    path = Path(cfg.group)
    if not path.is_file():
        raise FileNotFoundError(f"no group file at {path}")
    return DiscoveredGroup.load(path)


def _report_config(cfg, sections: tuple[str, ...]) -> dict:
    """``{"task": ..., section: options}`` of a downstream or degeneracy command (an empty YAML
    section reads as null: no options)."""
    out = {"task": cfg.task}
    for name in sections:
        value = cfg[name] or {}
        out[name] = _coerce(value.as_dict() if isinstance(value, Namespace) else value)
    return out


def _cmd_degeneracy(cfg) -> int:
    from atlasd.io import check_writable

    group = _load_report_group(cfg)
    run_dir = check_writable(Path(cfg.run_dir or f"runs/{cfg.task}-degeneracy"))
    from atlasd.downstream.degeneracy import run_degeneracy
    from atlasd.downstream.degeneracy_report import write_degeneracy_report

    config = _report_config(cfg, ("data", "broken", "samples", "models", "training", "llc"))
    config["seeds"] = list(cfg.seeds)
    report = run_degeneracy(
        config,
        group,
        run_dir,
        log=lambda m: print(f"[atlasd] {m}", file=sys.stderr, flush=True),
        trainer_kwargs=dict(cfg.trainer),
    )
    write_degeneracy_report(report, run_dir)
    if cfg.logger == "wandb":
        _log_report(cfg, report, run_dir)
    print(report["table"])
    print()
    print(report["reading"])
    print(f"report written to {run_dir / 'report.md'}")
    return 0


def _cmd_degeneracy_merge(cfg) -> int:
    import json

    from atlasd.io import check_writable

    if not cfg.run_dir:
        raise ValueError("--run_dir DIR is required (where the merged report goes)")
    paths = [Path(p) / "report.json" if Path(p).is_dir() else Path(p) for p in cfg.reports]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"no degeneracy report at {', '.join(missing)}")
    run_dir = check_writable(Path(cfg.run_dir))
    from atlasd.downstream.degeneracy_report import (
        merge_degeneracy_reports,
        write_degeneracy_report,
    )

    report = merge_degeneracy_reports([json.loads(p.read_text()) for p in paths])
    write_degeneracy_report(report, run_dir)
    print(report["table"])
    print()
    print(report["reading"])
    print(f"merged report over seeds {report['seeds']} written to {run_dir / 'report.md'}")
    return 0


def _cmd_downstream(cfg) -> int:
    from atlasd.io import check_writable

    group = _load_report_group(cfg)
    run_dir = check_writable(Path(cfg.run_dir or f"runs/{cfg.task}-downstream"))
    from atlasd.downstream.experiments import run_downstream, write_report

    config = _report_config(cfg, ("data", "training", "models"))
    report = run_downstream(
        config, group, run_dir, list(cfg.seeds), trainer_kwargs=dict(cfg.trainer)
    )
    write_report(report, run_dir)
    if cfg.logger == "wandb":
        _log_report(cfg, report, run_dir)
    print(report["table"])
    print(f"report written to {run_dir / 'report.md'}")
    return 0


def _log_report(cfg, report: dict, run_dir: Path) -> None:
    """A downstream or degeneracy report on a wandb dashboard: its table and headline numbers
    (the mode follows atlasd.tracking.wandb_mode; nothing when it is disabled)."""
    from atlasd.tracking import wandb_mode

    mode = wandb_mode()
    if mode == "disabled":
        return
    import wandb

    run = wandb.init(
        project=cfg.wandb_project,
        name=f"{cfg.task}-report",
        dir=str(run_dir),
        mode=mode,
        config={k: v for k, v in report.get("config", {}).items()},
    )
    rows = [
        {"model": name, **{m: f"{v['mean']:.4g} +- {v['sd']:.2g}" for m, v in r["metrics"].items()},
         "raw_parameters": r.get("raw_parameters"), "free_parameters": r.get("free_parameters")}
        for name, r in report.get("models", {}).items()
    ]  # fmt: skip
    rows += [
        {"data/model": key, "llc": f"{e['llc']['mean']:.4g} +- {e['llc']['sd']:.2g}",
         "llc_chain_sd": e["llc_chain_sd"]["mean"], "healthy": e["healthy"],
         "gauss_newton_rank": e["gauss_newton_rank"]["mean"],
         "functional_dimension": e["functional_dimension"]["mean"],
         "effective_dimension": e["effective_dimension"]["mean"],
         "raw_parameters": e["raw_parameters"], "free_parameters": e["free_parameters"]}
        for key, e in report.get("summary", {}).items()
    ]  # fmt: skip
    for name, s in report.get("susceptibility", {}).items():
        run.summary[f"susceptibility/{name}/delta_llc"] = s["delta"]
        run.summary[f"susceptibility/{name}/stderr"] = s["stderr"]
        if s.get("delta_step0") is not None:
            run.summary[f"susceptibility/{name}/delta_llc_step0"] = s["delta_step0"]
            run.summary[f"susceptibility/{name}/stderr_step0"] = s["stderr_step0"]
    plot = run_dir / "report.png"
    if "summary" in report and plot.is_file():
        run.log({"report/plot": wandb.Image(str(plot))})
    if rows:
        columns = list(dict.fromkeys(k for r in rows for k in r))
        data = [[str(r.get(c, "")) for c in columns] for r in rows]
        run.log({"report/table": wandb.Table(columns=columns, data=data)})
    run.summary.update(
        {k: v for k, v in report.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    )
    run.finish()


def _wandb_logger(cfg, run_dir: Path, seed: int):
    """A Lightning WandbLogger writing under run_dir, in the mode of atlasd.tracking.wandb_mode
    (online when logged in, offline otherwise: runs sync later with `wandb sync`); None when
    disabled or --logger none."""
    from atlasd.tracking import wandb_mode

    mode = wandb_mode()
    if cfg.logger == "none" or mode == "disabled":
        return None
    from lightning.pytorch.loggers import WandbLogger

    return WandbLogger(
        project=cfg.wandb_project,
        name=f"{cfg.task}-seed{seed}",
        save_dir=str(run_dir),
        offline=mode == "offline",
        config={
            "task": cfg.task,
            "seed": seed,
            "data": _coerce(cfg.data),
            "discovery": {k: v for k, v in vars(cfg.discovery).items() if k != "training"},
            "training": _coerce(cfg.discovery.training),
        },
    )


def _log_summary(logger, group, metrics: dict, run_dir: Path) -> None:
    """Final figures of a run on its wandb dashboard: metrics, the group plot, the coset table."""
    import torch
    import wandb

    run = logger.experiment
    summary = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    summary.update({f"wall_time_s/{k}": v for k, v in metrics["wall_time_s"].items()})
    run.summary.update(summary)
    rows = [
        [i, float(torch.linalg.det(h)), str([[round(v, 3) for v in r] for r in h.tolist()])]
        for i, h in enumerate(group.cosets)
    ]
    table = wandb.Table(columns=["component", "det", "representative"], data=rows)
    run.log(
        {
            "group/plot": wandb.Image(str(run_dir / "group.png")),
            "group/cosets": table,
            **{f"final/{k}": v for k, v in summary.items()},
        }
    )
    run.finish()


def _coerce(options: dict) -> dict:
    """Values given on the command line (--data.n 500, --models.baseline.kernel_size 3) arrive
    as strings, at any depth of a section; read them as YAML."""
    import yaml

    return {
        k: yaml.safe_load(v) if isinstance(v, str) else _coerce(v) if isinstance(v, dict) else v
        for k, v in options.items()
    }


def _discover_one(
    cfg, dm, data_time: float, seed: int, run_dir: Path, trainer: dict, progress: str
) -> dict:
    """One discovery run of a set-up DataModule into run_dir: group.json, group.png,
    metrics.json."""
    import time

    import atlasd
    from atlasd.group import DiscoveredGroup
    from atlasd.io import is_global_zero, json_safe, write_json_atomic

    start = time.perf_counter() - data_time  # the total counts the (shared) data stage
    run_dir.mkdir(parents=True, exist_ok=True)
    training = _coerce(cfg.discovery.training)
    training.setdefault("run_dir", str(run_dir))
    training["progress"] = progress
    training["resume"] = not cfg.fresh
    if cfg.ckpt_path is not None:
        training["ckpt_path"] = cfg.ckpt_path
    truth = getattr(dm, "ground_truth", None)
    if truth is not None:
        training.setdefault("reference_algebra", truth["algebra"])
    class_weights = getattr(dm, "class_weights", None)
    if class_weights is not None:
        training.setdefault("class_weights", [float(w) for w in class_weights])
    wandb_logger = _wandb_logger(cfg, run_dir, seed)
    extra = dict(trainer)
    if wandb_logger is not None:
        extra["logger"] = wandb_logger
    if extra:
        training["trainer_kwargs"] = {**training.get("trainer_kwargs", {}), **extra}
    disc = cfg.discovery
    kind = disc.kind or getattr(dm, "kind", "local")
    if kind not in ("local", "global", "distribution"):
        raise ValueError(f"discovery.kind must be local, global or distribution, got {kind!r}")
    common = dict(n_generators=disc.n_generators, seed=seed, **training)
    if disc.cosets is not None:
        common["cosets"] = disc.cosets
    if kind == "local":
        group = atlasd.discover_local(
            dm.x,
            dm.y,
            atlas=dm.atlas,
            out_radius=disc.out_radius,
            learn_in_rep=disc.learn_in_rep,
            learn_out_rep=disc.learn_out_rep,
            **common,
        )
    elif kind == "global":
        group = atlasd.discover_global(dm.x, dm.y, **common)
    else:
        fields = dm.x.ndim == 4 and getattr(dm, "atlas", None) is not None
        group = atlasd.discover_distribution(dm.x, atlas=dm.atlas if fields else None, **common)

    metrics: dict = {
        "task": cfg.task,
        "seed": seed,
        "dim": group.dim,
        "n_components": group.n_components,
        "resumed_stages": group.metadata.get("resumed_stages", []),
    }
    if truth is not None:
        metrics["similarity_to_truth"] = group.similarity(truth["algebra"])
        expected = truth.get("cosets")
        if expected is not None:
            tol = group.metadata.get("membership_tol")
            found = [bool(group.contains(h, tol=tol)) for h in expected]
            metrics["truth_cosets_found"] = found
            metrics["cosets_match_truth"] = all(found) and group.n_components == len(expected)
        truth_rep = truth.get("in_rep")
        if truth_rep is not None and group.in_rep is not None:
            from atlasd.lie import representation_error

            metrics["in_rep_vs_truth"] = representation_error(
                group.algebra, group.in_rep, truth["algebra"], truth_rep
            )
        group = DiscoveredGroup(
            group.algebra,
            cosets=group.cosets,
            in_rep=group.in_rep,
            out_rep=group.out_rep,
            metadata={
                **group.metadata,
                "dataset": cfg.task,
                "similarity_to_truth": metrics["similarity_to_truth"],
            },
            standardize=False,
        )
    meta = group.metadata
    metrics["wall_time_s"] = {
        "data": data_time,
        **meta.get("wall_time_s", {}),
        "total": time.perf_counter() - start,
    }
    metrics["losses"] = {
        "basis_per_epoch": meta.get("basis", {}).get("equivariance_loss_per_epoch"),
        "predictor_val": meta.get("predictor", {}).get("val_loss"),
        "coset_identity": meta.get("cosets", {}).get("identity_loss"),
    }
    if not is_global_zero():
        return metrics  # DDP: the other processes computed the same group; rank zero writes
    group.save(run_dir / "group.json")
    group.plot(run_dir / "group.png")
    write_json_atomic(run_dir / "metrics.json", json_safe(metrics))
    if wandb_logger is not None:
        _log_summary(wandb_logger, group, metrics, run_dir)
    print(group.summary())
    sim = metrics.get("similarity_to_truth")
    print(
        f"run folder: {run_dir}  |  seed {seed}  |  "
        + (f"similarity to truth {sim:.4f}  |  " if sim is not None else "")
        + f"{group.n_components} component(s)  |  {metrics['wall_time_s']['total']:.1f} s"
    )
    return metrics


_COMMANDS = {
    "show": _cmd_show,
    "check": _cmd_check,
    "discover": _cmd_discover,
    "downstream": _cmd_downstream,
    "degeneracy": _cmd_degeneracy,
    "degeneracy-merge": _cmd_degeneracy_merge,
    "configs": _cmd_configs,
}


class UsageError(ValueError):
    """The command line or a config file is malformed (exit status 2)."""


def parse(argv: Sequence[str]):
    """Parse a command line (config files included) into a namespace; UsageError (a
    ValueError) names the problem for anything malformed, and nothing else escapes."""
    argv = _resolve_config_names(list(argv))
    try:
        cfg = build_parser().parse_args(argv)
    except (argparse.ArgumentError, ValueError, TypeError, KeyError) as exc:
        raise UsageError(f"invalid arguments: {_one_line(exc)}") from exc
    if cfg.command == "discover":
        sub = cfg.discover
        if not isinstance(sub.get("discovery"), Namespace):
            raise UsageError("invalid arguments: discovery must be a mapping of options")
        # an empty YAML section (`data:`) reads as null: it means "no options"
        sub.data = sub.data or {}
        sub.discovery.training = sub.discovery.training or {}
        for key, kind in _REQUIRED_TYPES.items():
            value = sub[key]
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise UsageError(f"invalid arguments: {key} must be {kind.__name__}, got {value!r}")
    if cfg.command in ("discover", "downstream", "degeneracy"):
        sub = cfg[cfg.command]
        if sub.logger not in ("wandb", "none"):
            raise UsageError(
                f"invalid arguments: logger must be 'wandb' or 'none', got {sub.logger!r}"
            )
        if not isinstance(sub.trainer or {}, dict):
            raise UsageError("invalid arguments: trainer must be a mapping of options")
        sub.trainer = trainer_options(sub.trainer)
    return cfg


# jsonargparse lets a config file's `key: null` through for plain-typed options
_REQUIRED_TYPES: dict[str, type] = {
    "task": str,
    "seed": int,
    "logger": str,
    "progress": str,
    "wandb_project": str,
    "fresh": bool,
    "discovery.n_generators": int,
    "discovery.learn_in_rep": bool,
    "discovery.learn_out_rep": bool,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        build_parser().print_help()
        return 2
    try:
        cfg = parse(args)
    except UsageError as exc:
        _fail(str(exc))
        return 2
    try:
        return _COMMANDS[cfg.command](cfg[cfg.command])
    except (ValueError, OSError, KeyError, RuntimeError, FloatingPointError) as exc:
        _fail(_one_line(exc))
        return 1


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _fail(message: str) -> None:
    print(f"atlasd: error: {message}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
