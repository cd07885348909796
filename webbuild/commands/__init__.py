"""One module per CLI command; each takes typed arguments and returns data, ``cli.py`` parses and prints."""
