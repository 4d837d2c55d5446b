"""A local emulator of the Databricks Jobs API 2.2, for tests only (see server.py)."""
