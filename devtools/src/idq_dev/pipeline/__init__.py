"""Run the whole pipeline on one machine: broker, topics, synthetic source, four services."""
