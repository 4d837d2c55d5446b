"""Celery's configuration for Esteira's workers: Airflow's defaults, plus the task modules
(``esteira.orchestration.warm``) as Celery ``imports``, which a worker imports once, before
it forks its pool, so that every task process inherits them.

Set ``AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=esteira.orchestration.celery_config.CELERY_CONFIG``
for every Airflow component (the scheduler publishes with the same configuration). A task
module that cannot be imported stops the worker at start, naming the module.
"""

from __future__ import annotations

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

from esteira.orchestration.warm import task_modules

CELERY_CONFIG = {**DEFAULT_CELERY_CONFIG, "imports": tuple(task_modules())}
