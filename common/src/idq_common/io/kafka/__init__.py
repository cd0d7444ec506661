"""Kafka plumbing: settings, topics, producer/consumer helpers, dead letters.

Submodules are imported explicitly (``from idq_common.io.kafka.clients import ...``)
so that importing one does not drag in the others. The local development broker lives
in the ``idq_dev`` package, not here: a service image never runs a broker.
"""
