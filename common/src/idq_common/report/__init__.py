"""What users look at: scores of produced frames against a truth, and reports."""
