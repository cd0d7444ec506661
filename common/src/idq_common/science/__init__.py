"""The science, free of I/O: features and quivers, classifiers, calibration, products.

Everything here is a pure function of its arguments (arrays, triggers, fitted models),
so it is tested without Kafka and shared by the stages, the benchmarks and the report.
"""
