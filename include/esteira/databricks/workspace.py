"""The Databricks clients, built from one Airflow connection (``databricks_default``, or
the one ESTEIRA_DATABRICKS_CONN_ID names): the provider's hook, and a databricks-sdk
``WorkspaceClient`` for the calls the hook does not have."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow.providers.databricks.hooks.databricks import DatabricksHook
    from databricks.sdk import WorkspaceClient


def conn_id(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return env.get("ESTEIRA_DATABRICKS_CONN_ID") or "databricks_default"


def hook(connection: str | None = None) -> DatabricksHook:
    from airflow.providers.databricks.hooks.databricks import DatabricksHook

    return DatabricksHook(connection or conn_id(), caller="esteira")


def client(connection: str | None = None) -> WorkspaceClient:
    """A WorkspaceClient on the connection's host and token, as the hook resolves them.

    The token comes from the hook, so a service principal (Azure AD or OAuth) configured
    in the connection's extras works here exactly as for the Jobs runs. Uploads go in one
    ``PUT /api/2.0/fs/files`` (up to 5 GiB, far above a wheel): the SDK's experimental
    client would first look for multipart and presigned endpoints.
    """
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.config import Config

    databricks = hook(connection)
    conn = databricks.databricks_conn
    port = f":{conn.port}" if conn.port else ""
    host = f"{conn.schema or 'https'}://{databricks.host}{port}"
    token = databricks._get_token(raise_error=True)  # the provider's one resolution of every auth kind
    config = Config(host=host, token=token, auth_type="pat", disable_experimental_files_api_client=True)
    return WorkspaceClient(config=config)
