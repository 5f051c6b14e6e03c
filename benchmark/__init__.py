"""pirs.benchmark: one scoring harness for restored images (``bench``).

Nothing heavy at import time: torch, pyiqa and transformers load only when a metric
is built. ``benchmark`` reads shards through ``pirs.degrade`` and never imports
``pirs.models``.
"""

import logging as _logging

_logging.getLogger("bitsandbytes").setLevel(_logging.ERROR)  # its CPU backend warns at import (via diffusers/pyiqa)

