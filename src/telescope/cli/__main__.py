"""``python -m telescope.cli``: the ``telescope`` command."""

import sys

from . import main

sys.exit(main())
