"""The ``shoal`` command line (click); the entry point is :func:`shoal.cli.main.main`."""
