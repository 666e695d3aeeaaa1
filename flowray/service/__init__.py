"""``flowray serve``: flows kept on a server, started by triggers, with history and metrics."""
