"""The analytics ETL: anonymised export, PostgreSQL staging, a warehouse and three reports.

Batch, not streaming: `faceval etl run` extracts the finished transactions that are new
since the last run (a watermark by day), writes the analysts' columns as CSV and Parquet,
stages them in PostgreSQL, derives the analytical columns, loads the warehouse (DuckDB by
default, PostgreSQL alike) and writes the bottleneck, acceptance and retry reports.
"""
