"""End-to-end tests: real ``shoal`` subprocesses talking over 127.0.0.1."""
