"""pirs.leaderboard: not built yet (see the open issues)."""
