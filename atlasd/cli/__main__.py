"""``python -m atlasd.cli``: the console script (as ``python -m atlasd``)."""

import sys

from atlasd.cli.app import main

sys.exit(main())
