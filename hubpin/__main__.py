"""``python -m hubpin``."""

import sys

from hubpin.cli import main

sys.exit(main())
