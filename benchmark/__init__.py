"""pirs.benchmark: not built yet (see the open issues)."""
