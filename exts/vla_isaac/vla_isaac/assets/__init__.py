"""Robot assets that work offline (no Nucleus)."""
