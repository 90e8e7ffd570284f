"""``python -m polycap`` is the ``polycap`` command."""

import sys

from polycap.cli import main

sys.exit(main())
