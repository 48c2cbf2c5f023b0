"""Meta-solvers behind one registry (placeholder; the registry lands shortly)."""
