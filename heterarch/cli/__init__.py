"""The ``heterarch`` command line and the demos."""
