"""The console script's doorways: a light start, bundled configs by name, ``python -m atlasd``,
typed ``--trainer.*`` on every training command, one wandb rule, one version source."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

from atlasd.cli import UsageError, bundled_configs, main, parse, trainer_options
from atlasd.tracking import wandb_logged_in, wandb_mode

ROOT = Path(__file__).resolve().parents[1]


def _heavy_modules_after(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter; which of torch / lightning / wandb did it import?"""
    probe = (
        "import sys\n"
        + code
        + "\nprint('HEAVY:' + ','.join(m for m in ('torch', 'lightning', 'wandb') "
        "if m in sys.modules), file=sys.stderr)"
    )
    res = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert res.returncode == 0, res.stderr
    (line,) = [ln for ln in res.stderr.splitlines() if ln.startswith("HEAVY:")]
    return [m for m in line.removeprefix("HEAVY:").split(",") if m]


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["discover", "--help"],
        ["discover", "--config", "heat", "--print_config"],
        ["downstream", "--config", "downstream_jets", "--print_config"],
        ["degeneracy", "--config", "degeneracy_heat", "--print_config"],
        ["configs"],
    ],
)
def test_start_up_imports_no_torch_lightning_or_wandb(argv):
    # the start-up cost is the imports: torch alone takes about 1.5 s here, Lightning 5 s
    code = f"from atlasd.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
    assert _heavy_modules_after(code) == []


def test_import_atlasd_is_light_and_names_load_on_use():
    assert _heavy_modules_after("import atlasd; atlasd.__version__") == []
    assert _heavy_modules_after("import atlasd; atlasd.load_group") == ["torch"]
    import atlasd

    assert set(atlasd.__all__) <= set(dir(atlasd))
    with pytest.raises(AttributeError, match="no attribute 'bogus'"):
        atlasd.bogus  # noqa: B018


def test_python_dash_m_is_the_console_script():
    res = subprocess.run(
        [sys.executable, "-m", "atlasd", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    import atlasd

    assert res.stdout.strip() == f"atlasd {atlasd.__version__}"


def test_one_version_source():
    import atlasd

    assert importlib.metadata.version("atlasd") == atlasd.__version__
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {atlasd.__version__}" in changelog


def test_bundled_configs_by_name_from_any_folder(tmp_path, monkeypatch, capsys):
    configs = bundled_configs()
    repo = {p.stem for p in (ROOT / "configs").glob("*.yaml")}
    assert set(configs) == repo and {"heat", "jets", "sphere_digits"} <= repo
    monkeypatch.chdir(tmp_path)
    cfg = parse(["discover", "--config", "heat", "--seed", "3"])
    assert (cfg.discover.task, cfg.discover.seed, cfg.discover.data["n"]) == ("heat", 3, 1000)
    cfg = parse(["downstream", "--config=downstream_jets.yaml"])
    assert cfg.downstream.task == "jets"
    with pytest.raises(UsageError, match="no bundled config of that name; bundled configs: cl"):
        parse(["discover", "--config", "heta"])
    # a path is a path: no bundled look-up, jsonargparse names the missing file
    with pytest.raises(UsageError, match="does not exist"):
        parse(["discover", "--config", "sub/heat.yaml"])
    assert main(["configs"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(configs)
    assert any(line.startswith("heat ") and "heat task" in line for line in out)


@pytest.mark.parametrize("command", ["discover", "downstream", "degeneracy"])
def test_trainer_options_on_every_training_command(command):
    argv = [command, "--trainer.max_epochs", "3", "--trainer.accelerator", "cpu"]
    cfg = parse([*argv, "--trainer.precision", "64-true"])
    assert cfg[command].trainer == {"max_epochs": 3, "accelerator": "cpu", "precision": "64-true"}
    with pytest.raises(UsageError, match='Parser key "trainer.max_epochs"'):
        parse([command, "--trainer.max_epochs", "many"])
    with pytest.raises(UsageError, match="trainer.bogus"):
        parse([command, "--trainer.bogus", "1"])
    with pytest.raises(UsageError, match="logger must be 'wandb' or 'none', got 'tensorboard'"):
        parse([command, "--logger", "tensorboard"])


def test_trainer_options_keep_only_what_was_given():
    assert trainer_options(None) == {} and trainer_options({}) == {}
    assert trainer_options({"gradient_clip_val": "0.5", "deterministic": True}) == {
        "gradient_clip_val": 0.5,
        "deterministic": True,
    }
    with pytest.raises(UsageError, match="trainer.logger"):
        trainer_options({"logger": False})  # atlasd owns the logger (--logger)


def _netrc(tmp_path: Path, host: str, password: str = "k" * 40) -> Path:
    path = tmp_path / "netrc"
    path.write_text(f"machine {host}\n  login user\n  password {password}\n")
    path.chmod(0o600)
    return path


def test_wandb_mode_one_rule(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    login = str(_netrc(tmp_path, "api.wandb.ai"))
    cases = [
        ({}, "offline"),  # nobody logged in
        ({"WANDB_API_KEY": "x" * 40}, "online"),
        ({"NETRC": login}, "online"),  # what `wandb login` leaves
        ({"NETRC": login, "WANDB_MODE": "offline"}, "offline"),  # WANDB_MODE decides
        ({"WANDB_API_KEY": "x", "WANDB_MODE": "disabled"}, "disabled"),
        ({"WANDB_MODE": "online"}, "online"),
        ({"WANDB_MODE": "dryrun"}, "offline"),
        ({"NETRC": login, "WANDB_BASE_URL": "https://wandb.example.org"}, "offline"),
        ({"NETRC": str(_netrc(tmp_path / "..", "wandb.example.org"))}, "offline"),
        ({"NETRC": str(tmp_path / "missing")}, "offline"),
    ]
    for env, expected in cases:
        assert wandb_mode(env, home) == expected, env
    other = _netrc(home, "wandb.example.org")
    other.rename(home / ".netrc")
    assert wandb_logged_in({"WANDB_BASE_URL": "https://wandb.example.org:443"}, home)
    assert not wandb_logged_in({}, home)
    (home / ".netrc").write_text("machine api.wandb.ai login\n")  # malformed: no login
    assert wandb_mode({}, home) == "offline"
    with pytest.raises(ValueError, match="WANDB_MODE must be online, offline or disabled"):
        wandb_mode({"WANDB_MODE": "sometimes"}, home)


def test_discover_and_reports_follow_the_rule(tmp_path, monkeypatch):
    """The discover command's WandbLogger and the report commands' wandb.init get the mode of
    wandb_mode: online when logged in (a netrc entry), offline otherwise."""
    import wandb

    from atlasd.cli import dashboards

    seen = []

    class Stop(Exception):
        pass

    def fake_init(**kwargs):
        seen.append(kwargs["mode"])
        raise Stop

    monkeypatch.setattr(wandb, "init", fake_init)
    for env, offline in (({}, True), ({"NETRC": str(_netrc(tmp_path, "api.wandb.ai"))}, False)):
        monkeypatch.delenv("WANDB_MODE", raising=False)
        monkeypatch.delenv("WANDB_API_KEY", raising=False)
        monkeypatch.delenv("NETRC", raising=False)
        monkeypatch.setenv("HOME", str(tmp_path / "nohome"))
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        logger = dashboards.discovery_logger("atlasd", "heat-seed0", tmp_path / "run", {})
        assert logger._offline is offline
        with pytest.raises(Stop):
            dashboards.log_report("atlasd", "jets-report", {}, tmp_path)
        assert seen[-1] == ("offline" if offline else "online")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert dashboards.discovery_logger("atlasd", "heat-seed0", tmp_path / "run", {}) is None
    dashboards.log_report("atlasd", "jets-report", {}, tmp_path)  # returns without a run
    assert len(seen) == 2


def test_show_is_torch_free_and_matches_the_library(tmp_path):
    import torch

    from atlasd.group import DiscoveredGroup

    group = DiscoveredGroup(
        torch.tensor([[[0.03, -1.0], [0.86, -0.03]]]),
        cosets=torch.stack([torch.eye(2), torch.diag(torch.tensor([1.0, -1.0]))]),
        metadata={"dataset": "heat", "seed": 0},
    )
    path = group.save(tmp_path / "group.json")
    plot = tmp_path / "shown.png"
    argv = ["show", str(path), "--plot", str(plot)]
    code = f"from atlasd.cli import main\nassert main({argv!r}) == 0"
    assert _heavy_modules_after(code) == []
    assert plot.stat().st_size > 10_000
    res = subprocess.run(
        [sys.executable, "-m", "atlasd", "show", str(path), "--no_plot", "true"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == group.summary()
    assert "closure residual" in res.stdout and "det -1.000" in res.stdout


def test_orbit_exponential_matches_torch():
    import numpy as np
    import torch

    from atlasd.group_file import expm

    gen = np.random.default_rng(0)
    for scale in (1e-3, 1.0, 40.0):
        A = scale * gen.standard_normal((5, 3, 3))
        expected = torch.linalg.matrix_exp(torch.from_numpy(A)).numpy()
        assert np.allclose(expm(A), expected, rtol=1e-9, atol=1e-12 * np.abs(expected).max())
    shear = np.array([[0.0, 1.0], [0.0, 0.0]])  # nilpotent: exp = I + A exactly
    assert np.array_equal(expm(2.5 * shear), np.array([[1.0, 2.5], [0.0, 1.0]]))
