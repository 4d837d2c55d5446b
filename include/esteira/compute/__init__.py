"""Where a heavy step runs: in the Airflow worker (``local``) or as a Databricks run.

Both run the same entry point, ``esteira.jobs.<step>`` (``main(argv)``); the choice is
configuration (STYLE.md, rule 8). ``operator`` is the only Airflow-aware module here.
"""
