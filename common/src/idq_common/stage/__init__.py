"""What every stage service shares: lifecycle, checkpoints, announcements, CLI, the loop.

The stage loops themselves live in ``services/<stage>/`` (packages ``idq_<stage>``);
this package holds the plumbing they would otherwise each write again.
"""
