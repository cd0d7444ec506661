"""Kafka plumbing: settings, the local broker, topics, producer/consumer helpers, dead letters.

Submodules are imported explicitly (``from idq_common.kafka.broker import LocalBroker``)
so that importing one does not drag in the others.
"""
