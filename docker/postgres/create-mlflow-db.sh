#!/bin/bash
# Runs once, when the Postgres volume is first initialised: MLflow's backend store is a
# second database, with its own owner, next to Airflow's metadata database.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v db="$MLFLOW_DB_NAME" -v user="$MLFLOW_DB_USER" -v password="$MLFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE :"user" LOGIN PASSWORD :'password';
CREATE DATABASE :"db" OWNER :"user";
SQL
