"""Pytest plugins (real local broker, S3 server) and seeded fixtures shared by the tests."""
