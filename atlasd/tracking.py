"""Where a run's wandb records go: one rule for every subcommand.

The rule (:func:`wandb_mode`):

1. ``WANDB_MODE`` decides when it is set (``online``, ``offline`` or ``disabled``; wandb's older
   spellings ``dryrun`` and ``run`` mean offline and online).
2. Otherwise the run is ``online`` when the user is logged in by wandb's own settings: an API key
   in ``WANDB_API_KEY``, or the entry that ``wandb login`` writes to the netrc file (``$NETRC``
   or ``~/.netrc``) for the wandb host (``WANDB_BASE_URL``, default ``https://api.wandb.ai``).
3. Otherwise ``offline``: the run is written under the run folder and can be uploaded later with
   ``wandb sync``. Nothing ever waits on a network that is not configured.

Pure and cheap: it reads the environment and one file, and imports neither wandb nor torch.
"""

from __future__ import annotations

import netrc
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

__all__ = ["WandbMode", "wandb_logged_in", "wandb_mode"]

WandbMode = Literal["online", "offline", "disabled"]

_SPELLINGS: dict[str, WandbMode] = {
    "online": "online",
    "run": "online",
    "offline": "offline",
    "dryrun": "offline",
    "disabled": "disabled",
}


def wandb_logged_in(env: Mapping[str, str] | None = None, home: Path | None = None) -> bool:
    """True when wandb has credentials: ``WANDB_API_KEY``, or a netrc entry for the wandb host.

    Args:
        env: the environment to read (default ``os.environ``).
        home: the home folder whose ``.netrc`` is read when ``NETRC`` is unset (default ``~``).
    """
    env = os.environ if env is None else env
    if env.get("WANDB_API_KEY"):
        return True
    host = urlparse(env.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    path = Path(env["NETRC"]) if env.get("NETRC") else (home or Path.home()) / ".netrc"
    if not host or not path.is_file():
        return False
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except (netrc.NetrcParseError, OSError):
        return False  # an unreadable netrc is no login; wandb itself would not use it either
    return bool(entry and entry[2])


def wandb_mode(env: Mapping[str, str] | None = None, home: Path | None = None) -> WandbMode:
    """The mode of every wandb run atlasd starts (the rule in the module docstring).

    Raises:
        ValueError: ``WANDB_MODE`` holds something other than online, offline or disabled.
    """
    env = os.environ if env is None else env
    given = env.get("WANDB_MODE")
    if given:
        if given not in _SPELLINGS:
            raise ValueError(
                f"WANDB_MODE must be online, offline or disabled, got {given!r} (environment)"
            )
        return _SPELLINGS[given]
    return "online" if wandb_logged_in(env, home) else "offline"
