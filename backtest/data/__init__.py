"""Market data: sources (bundled, files, ccxt with a Parquet cache), validation and summaries."""
