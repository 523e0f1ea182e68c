"""The one version source (pyproject.toml reads it). Bumped whenever results change: a release
that gives a different group or report for the same seed gets a new version (CHANGELOG.md)."""

__version__ = "0.3.0"
