"""Esteira: an MLOps conveyor belt on Apache Airflow.

Plain Python, importable without Airflow; the DAGs in ``dags/`` only wire it together.
"""

__version__ = "0.1.0"
