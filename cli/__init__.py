"""The `faceval` command line: the top floor, importing everything below and imported by nothing."""
