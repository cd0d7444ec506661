"""Development infrastructure of streaming iDQ, never part of a service image.

The local Kafka broker (jars from Maven Central), test servers (S3, Prometheus,
DQSegDB), pytest plugins and seeded fixtures, the local pipeline and the demo. The
``idq`` command picks up the subcommands in ``idq_dev.cli`` when this is installed.
"""
