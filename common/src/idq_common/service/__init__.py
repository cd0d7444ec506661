"""What every stage service shares: lifecycle, checkpoints, announcements, CLI.

The stage loops themselves live in ``services/<stage>/``; this package holds the
plumbing they would otherwise each write again.
"""
