"""I/O for the analysis: exported logs (CSV/Parquet) and resource samples of local processes."""
