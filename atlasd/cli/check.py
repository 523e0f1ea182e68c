"""``atlasd check``: measure the geometry conventions (rot90, composition, centre) here."""

from __future__ import annotations

from jsonargparse import ArgumentParser, Namespace

from atlasd.cli.common import subparser

__all__ = ["HELP", "TOLERANCES", "build", "run"]

HELP = "self-check of the chart and action conventions"

# float32 interpolation bounds the composition error; the others are exact up to rounding
TOLERANCES = {"rot90_error": 1e-5, "composition_error": 1e-2, "centre_error": 1e-5}


def build() -> ArgumentParser:
    parser = subparser("Measure the geometry conventions (rot90, composition, centre) here.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--radius", type=int, default=10)
    return parser


def run(cfg: Namespace) -> int:
    from atlasd.conventions import check_conventions

    errors = check_conventions(seed=cfg.seed, radius=cfg.radius)
    ok = True
    for name, value in errors.items():
        tol = TOLERANCES[name]
        status = "ok" if value < tol else "FAIL"
        ok &= value < tol
        print(f"{name:<20} {value:.2e}  (tolerance {tol:.0e})  {status}")
    return 0 if ok else 1
