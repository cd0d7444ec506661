"""The train stage service."""
