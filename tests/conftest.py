"""Shared pytest configuration: the plugins providing real local infrastructure.

Each engineer appends their plugin module to ``pytest_plugins``.
"""

pytest_plugins = [
    "idq_common.testing.synthetic",
    "idq_common.testing.kafka_broker",
    "idq_common.testing.prometheus",
    "idq_common.testing.s3_server",
]
