"""The Databricks workspace beyond a step's run: shipping the code to a volume
(``deploy``), registering the Delta tables in Unity Catalog (``unity_catalog``).

One connection serves every call: the Airflow connection the Jobs runs use
(``workspace``). The provider's hook makes the calls it has (SQL statements);
databricks-sdk the others (Files API). Both are imported only when a call is made.
"""
