"""The umbrella ``idq`` command; one module per subcommand (see :mod:`idq_common.cli.main`)."""
