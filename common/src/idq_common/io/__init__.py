"""What crosses the process boundary: Avro wire format, Kafka clients, artifact store, frames.

Submodules are imported explicitly so that importing one does not drag in the others.
"""
