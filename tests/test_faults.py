"""Faults and bad input across the CLI: each exits non-zero with a one-line reason on stderr
and leaves earlier results intact (README, "Bad input and faults")."""

from __future__ import annotations

import errno
import json
import os

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from known_groups import so2

from atlasd.cli import UsageError, main, parse
from atlasd.group import DiscoveredGroup

TINY = {
    "batch_size": 8, "predictor": {"epochs": 1}, "basis": {"epochs": 1, "init_candidates": 2},
    "cosets": {"candidates": 2, "steps": 2},
}  # fmt: skip


def _error_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("atlasd: error")]
    assert len(err) == 1, err
    return err[0]


@pytest.fixture
def finished_run(tmp_path):
    """A run folder holding earlier results (group and metrics)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    DiscoveredGroup(so2()).save(run_dir / "group.json")
    (run_dir / "metrics.json").write_text('{"earlier": true}\n')
    return run_dir, {p.name: p.read_bytes() for p in run_dir.iterdir()}


def _intact(run_dir, before) -> None:
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before
    assert not list(run_dir.rglob("*.tmp"))


def _tiny_argv(run_dir) -> list[str]:
    return [
        "discover", "--task", "heat", "--data", json.dumps({"n": 40}), "--run_dir", str(run_dir),
        "--logger", "none", "--progress", "none", "--discovery", json.dumps(TINY),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("config", "status", "message"),
    [
        (None, 2, "File does not exist"),
        ("task: heat\ndata: [1, 2\n", 2, "Problems parsing config"),
        ("task: heat\nbogus: 1\n", 2, "does not accept option 'bogus'"),
        ("task: heat\ntrainer:\n  max_epochs: many\n", 2, 'Parser key "trainer.max_epochs"'),
        ("task: weather\n", 1, "unknown task 'weather'; known tasks: climate, files, heat"),
        ("task: heat\nprogress: loud\n", 2, "progress must be auto, bar, lines or none"),
        ("task: heat\ndata:\n  n: 0\n", 1, "n must be"),
        (
            "task: heat\ndata:\n  colour: red\n",
            1,
            "data option(s) for task 'heat': colour; options",
        ),
    ],
)
def test_bad_configs(tmp_path, capsys, finished_run, config, status, message):
    run_dir, before = finished_run
    path = tmp_path / "missing.yaml"
    if config is not None:
        path = tmp_path / "config.yaml"
        path.write_text(config)
    argv = ["discover", "--config", str(path), "--run_dir", str(run_dir), "--logger", "none"]
    assert main(argv) == status
    assert message in _error_line(capsys)
    _intact(run_dir, before)


def test_output_folder_that_cannot_be_written(tmp_path, capsys):
    # a real unwritable folder (sysfs refuses new entries even for root), then a file in the way
    assert main([*_tiny_argv("/sys/atlasd-run")]) == 1
    assert "cannot write to the output folder /sys/atlasd-run" in _error_line(capsys)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(_tiny_argv(blocker / "run")) == 1
    assert "cannot write to the output folder" in _error_line(capsys)


def test_full_disk_before_and_during_a_run(monkeypatch, capsys, finished_run):
    run_dir, before = finished_run
    calls = {"n": 0}
    real_fsync = os.fsync

    def fsync(fd, fail_after):
        calls["n"] += 1
        if calls["n"] > fail_after:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    # full from the start: caught by the probe, before any training
    monkeypatch.setattr("atlasd.io.os.fsync", lambda fd: fsync(fd, 0))
    assert main(_tiny_argv(run_dir)) == 1
    line = _error_line(capsys)
    assert "cannot write to the output folder" in line and "No space left on device" in line
    _intact(run_dir, before)

    # full after the probe and the run record: the first stage's results cannot be saved
    calls["n"] = 0
    monkeypatch.setattr("atlasd.io.os.fsync", lambda fd: fsync(fd, 2))
    assert main(_tiny_argv(run_dir)) == 1
    assert "No space left on device" in _error_line(capsys)
    _intact(run_dir, before)


def test_bad_group_files_for_show(tmp_path, capsys):
    cases = {
        "truncated.json": '{"format": "atlasd.group/1"',
        "wrong_format.json": json.dumps({"format": "other/1"}),
        "nan.json": json.dumps(DiscoveredGroup(so2()).to_dict()).replace("-1.0", "NaN", 1),
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        assert main(["show", str(tmp_path / name), "--no_plot", "true"]) == 1
        assert name in _error_line(capsys)
    assert main(["show", str(tmp_path / "absent.json")]) == 1
    assert "no group file" in _error_line(capsys)


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=6,
)  # fmt: skip
_keys = st.sampled_from(
    ["task", "data", "seed", "seeds", "run_dir", "logger", "progress", "fresh", "ckpt_path",
     "discovery", "trainer", "wandb_project", "bogus", "discovery.predictor"]
)  # fmt: skip


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.dictionaries(_keys, _values, max_size=4) | st.binary(max_size=64))
def test_config_parser_fuzz(tmp_path, content):
    """Whatever a config file holds, parsing either succeeds or raises UsageError."""
    path = tmp_path / "fuzz.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(yaml.safe_dump(content))
    try:
        cfg = parse(["discover", "--config", str(path)])
    except UsageError as exc:
        assert str(exc).startswith("invalid arguments:") and "\n" not in str(exc).strip()
        return
    assert isinstance(cfg.discover.seed, int)
    assert isinstance(cfg.discover.data, dict)


def test_downstream_group_of_the_wrong_dimension(tmp_path, capsys):
    group = tmp_path / "group.json"
    DiscoveredGroup(so2()).save(group)
    run_dir = tmp_path / "down"
    argv = ["downstream", "--task", "jets", "--data", json.dumps({"n": 64}), "--group",
            str(group), "--run_dir", str(run_dir), "--logger", "none"]  # fmt: skip
    assert main(argv) == 1
    assert "group acts on R^2 but task jets needs R^4" in _error_line(capsys)
    assert not (run_dir / "report.json").exists()
    assert main([*argv[:5], "--group", str(tmp_path / "absent.json")]) == 1
    assert "no group file" in _error_line(capsys)
