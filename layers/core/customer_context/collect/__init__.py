"""Collect: the tracking API (validation, stamping, packing into queue messages), ingest into the lakehouse,
tracking plans and the PII policy."""
