"""Documentation suite: the original's docstring examples and README.md's code, run as they are written."""
