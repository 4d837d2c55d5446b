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
COPY --chown=airflow:0 requirements.txt constraints.txt /opt/airflow/
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /opt/airflow/requirements.txt

COPY --chown=airflow:0 pyproject.toml README.md /opt/airflow/
COPY --chown=airflow:0 include/ /opt/airflow/include/
RUN pip install --no-cache-dir --no-deps -e /opt/airflow

COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/

ENV ESTEIRA_HOME=/opt/esteira-home \
    ESTEIRA_USECASES_DIR=/opt/airflow/include/usecases
