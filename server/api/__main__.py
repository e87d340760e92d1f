"""``python -m layerscope.server.api``: the same as ``layerscope serve``."""

import sys

from .serve import main

sys.exit(main())
