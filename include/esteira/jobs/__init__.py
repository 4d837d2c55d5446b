"""Entry points of the heavy steps, ``main(argv) -> int``, the same locally and on Databricks.

Each file also runs as a script (a Databricks ``spark_python_task``), so it imports only
``esteira`` by absolute name.
"""
