# The Esteira image: Airflow 3.3 with the platform's pinned requirements, the `esteira`
# package (installed editable from /opt/airflow, so the use cases in include/usecases
# are found next to it), the DAGs and the plugin in the official image's layout.
# The same image runs every Airflow component, the MLflow server and the model server
# (see docker-compose.yaml).
FROM apache/airflow:3.3.2-python3.11

USER root
# ESTEIRA_HOME: Delta tables, landing files and the inference log, on a volume shared by
# the Celery workers and the model server. Docker copies this ownership into a new volume.
RUN mkdir -p /opt/esteira-home /mlflow/artifacts \
    && chown -R airflow:0 /opt/esteira-home /mlflow \
    && chmod -R g+rwX /opt/esteira-home /mlflow
USER airflow

# requirements.txt reads constraints.txt from its own folder (`-c constraints.txt`).
# Bytecode: pip compiles what it installs (--compile, its default), but the base image
# deletes every .pyc of Airflow and its dependencies, so each container's first task
# processes would compile them again: compileall fills in what is missing.
COPY --chown=airflow:0 requirements.txt constraints.txt /opt/airflow/
RUN pip install --no-cache-dir --compile "apache-airflow==${AIRFLOW_VERSION}" -r /opt/airflow/requirements.txt \
    && python -m compileall -q -j 0 "$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"

COPY --chown=airflow:0 pyproject.toml README.md /opt/airflow/
COPY --chown=airflow:0 include/ /opt/airflow/include/
RUN pip install --no-cache-dir --no-deps -e /opt/airflow

COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/

ENV ESTEIRA_HOME=/opt/esteira-home \
    ESTEIRA_USECASES_DIR=/opt/airflow/include/usecases
