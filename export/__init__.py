"""export stage (see README)."""
