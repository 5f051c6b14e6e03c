"""pirs.models: not built yet (see the open issues)."""
