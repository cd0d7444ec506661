"""The timeseries stage service."""
