"""The calibrate stage service."""
