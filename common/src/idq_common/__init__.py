"""Shared library of the streaming iDQ glitch-inference services.

The folder tree is the architecture:

- ``exceptions``  one module, one root class (:class:`IDQError`)
- ``config``      the TOML settings, frozen and validated at start
- ``gpstime``     GPS <-> Unix conversions and the injectable clocks
- ``cadence``     the cadence manager that hands out strides
- ``segments``    segment sources (static, DQSegDB, the segments topic)
- ``data``        triggers, data sources (synthetic, Kafka) and the umbrella
- ``features``    feature vectors and quivers
- ``stream``      the stream processor
- ``classifiers`` OVL and scikit-learn classifiers
- ``calibration`` the rank -> probability calibration map
- ``avro``        single-object Avro encoding of every message kind
- ``kafka``       settings, local broker, topics, producer/consumer helpers
- ``store``       the write-once artifact store (file://, s3://)
- ``metrics``     the Prometheus registry and health endpoints
- ``cli``         the umbrella ``idq`` command
- ``testing``     seeded fixtures shared by the test suite
"""

__version__ = "0.1.0"
