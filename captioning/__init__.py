"""pirs.captioning: not built yet (see the open issues)."""
