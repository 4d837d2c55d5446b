"""Batch scoring and the online model server (MLflow scoring protocol, hot swap, inference log)."""
