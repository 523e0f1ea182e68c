"""The ``atlasd`` console script: a thin layer over the stages.

Every subcommand takes ``--config FILE.yaml`` (or the name of a bundled config: ``--config heat``)
and ``--print_config`` (jsonargparse), so a run is reproducible from its config. Failures exit
non-zero with a one-line reason on stderr.

    atlasd discover   --config heat [--seed N] [--seeds [0,1,2]] [--run_dir DIR] [--trainer.X V]
    atlasd downstream --config downstream_jets --group DIR/group.json
    atlasd degeneracy --config degeneracy_heat --group DIR/group.json
    atlasd degeneracy-merge DIR_A DIR_B --run_dir DIR
    atlasd show  DIR/group.json [--plot PATH]     print a group's summary and write its plot
    atlasd configs                                list the bundled configs
    atlasd check [--seed N]                       measure the geometry conventions here

One module per subcommand (``discover``, ``downstream``, ``degeneracy``, ``merge``, ``show``,
``listing``, ``check``), each with ``build()`` and ``run(cfg)``; :mod:`atlasd.cli.app` assembles
them. Sections are typed by the stages' config dataclasses (``DiscoverySettings``,
``TrainingConfig``, ``LLCConfig``, ...), which import without torch: start-up stays light
(``atlasd --help`` well under a second and a half); torch, Lightning and the stages load when a
command runs.
"""

from atlasd.cli.app import build_parser, main, parse
from atlasd.cli.common import UsageError, bundled_configs, trainer_options

__all__ = ["UsageError", "build_parser", "bundled_configs", "main", "parse", "trainer_options"]
