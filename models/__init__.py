"""pirs.models: reference training and inference of the prompt-driven restorers (``restore``).

One module per method (``spire``, ``xpsr``, ``diffrestorer``, ``dpir``) on a shared path:
shard loader (``data``), trainer (``train``), checkpoints, native-size tiled inference
(``predict``, ``sampling``, ``tiling``, ``colorfix``). Nothing heavy loads at import time.
"""

import logging as _logging

# diffusers imports bitsandbytes when it is installed (pyiqa depends on it); its CPU backend then logs a
# warning about an optional kernel package on every command. It is not pirs' concern.
_logging.getLogger("bitsandbytes").setLevel(_logging.ERROR)
