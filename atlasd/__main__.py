"""``python -m atlasd``: the same as the ``atlasd`` console script."""

import sys

from atlasd.cli import main

sys.exit(main())
