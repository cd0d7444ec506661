"""The evaluate stage service."""
