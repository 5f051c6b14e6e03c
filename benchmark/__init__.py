"""pirs.benchmark: one scoring harness for restored images (``bench``).

Nothing heavy at import time: torch, pyiqa and transformers load only when a metric
is built. ``benchmark`` reads shards through ``pirs.degrade`` and never imports
``pirs.models``.
"""
