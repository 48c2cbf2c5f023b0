"""Experiment entry points (run, sweep, bench, plot) and configs. Not a library."""
