"""Sub-commands of `faceval`, one module per group."""
