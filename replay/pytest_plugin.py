"""pytest plugin entry point (filled in by the replay work)."""
