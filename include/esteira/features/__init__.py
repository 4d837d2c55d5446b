"""The feature store: synthetic landing data, validation, feature definitions, Delta
tables, the daily refresh, point-in-time training sets and the catalog."""
