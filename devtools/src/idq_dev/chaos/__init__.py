"""The chaos suite: the whole pipeline under faults against a clean run (issue 12)."""
