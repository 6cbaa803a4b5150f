"""distill stage (see README)."""
