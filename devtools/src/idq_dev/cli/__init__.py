"""Development subcommands of ``idq`` (kafka, demo), found through the ``idq.commands`` entry point."""
