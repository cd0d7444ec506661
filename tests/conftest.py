"""Shared pytest configuration: the plugins providing real local infrastructure.

Each engineer appends their plugin module to ``pytest_plugins``.
"""

pytest_plugins = [
    "idq_dev.testing.synthetic",
    "idq_dev.testing.kafka_broker",
    "idq_dev.testing.prometheus",
    "idq_dev.testing.s3_server",
]
