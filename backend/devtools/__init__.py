"""Development helpers used by tasks.py, the tests and the benchmark; not shipped in the image."""
