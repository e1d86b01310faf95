"""``python -m kokorozoo.cli``: the ``kokorozoo`` command without its console script."""

import sys

from kokorozoo.cli import main

sys.exit(main())
