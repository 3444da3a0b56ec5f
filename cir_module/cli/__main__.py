"""``python -m cir_module.cli``: the ``cir`` command (the service's tests start it this way)."""

from __future__ import annotations

import sys

from cir_module.cli import main

sys.exit(main())
