"""Celery's configuration for Esteira's workers: Airflow's defaults, plus the task modules
the worker imports once, before it forks its pool (see ``esteira.orchestration.warm``).

Set ``AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=esteira.orchestration.celery_config.CELERY_CONFIG``
on the Celery workers (and, harmlessly, the other Airflow components).
"""

from __future__ import annotations

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

from esteira.orchestration.warm import TASK_MODULES

CELERY_CONFIG = {**DEFAULT_CELERY_CONFIG, "imports": TASK_MODULES}
