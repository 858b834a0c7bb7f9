"""``python -m telescope.bench ...``: the same as ``telescope bench ...``."""

import sys

from ..cli import main

sys.exit(main(["bench", *sys.argv[1:]]))
