"""idq-ingest: SNAX/sgnax JSON feature messages -> the features topic."""
