"""The Prefect integration storage blocks as db-backup storage adapters.

Each factory takes a loaded block and returns a plain adapter from
:mod:`db_backup.storage`, with credentials (and endpoint) from the block:

* prefect-aws ``S3Bucket`` (``AwsCredentials`` or ``MinIOCredentials``; a
  custom ``endpoint_url`` in ``aws_client_parameters`` for MinIO, R2, moto):
  the client comes from the credentials' own boto3 session and client
  parameters, with db-backup's timeouts and SDK retries merged in;
* prefect-gcp ``GcsBucket`` (``GcpCredentials``): the credentials'
  ``get_cloud_storage_client()``;
* prefect-azure ``AzureBlobStorageContainer`` (``AzureBlobStorageCredentials``):
  a synchronous ContainerClient from the block's connection string or account
  URL (the block's own factory returns an asyncio client).

The block's folder (``bucket_folder`` / ``base_folder``) becomes the prefix.
"""

from __future__ import annotations

from typing import Any

from db_backup.errors import ConfigError
from db_backup.storage.cloud import TransferSettings, mapped_errors


def s3_bucket_block() -> type:
    from prefect_aws import S3Bucket

    return S3Bucket  # type: ignore[no-any-return]


def gcs_bucket_block() -> type:
    from prefect_gcp import GcsBucket

    return GcsBucket  # type: ignore[no-any-return]


def azure_container_block() -> type:
    from prefect_azure import AzureBlobStorageContainer

    return AzureBlobStorageContainer  # type: ignore[no-any-return]


def s3_adapter(block: Any) -> Any:
    """S3Storage over the block's credentials, client parameters and bucket."""
    from db_backup.storage.s3 import S3Storage, map_s3_error, sdk_config

    settings = TransferSettings.from_env()
    creds = block.credentials
    params = creds.aws_client_parameters.get_params_override()
    ours = sdk_config(settings, path_style=bool(params.get("endpoint_url")))
    params["config"] = ours.merge(params["config"]) if params.get("config") else ours
    where = f"s3://{block.bucket_name}"
    with mapped_errors(lambda exc: map_s3_error(exc, block.bucket_name, where)):
        client = creds.get_boto3_session().client("s3", **params)
    return S3Storage(client, block.bucket_name, block.bucket_folder or "", settings)


def gcs_adapter(block: Any) -> Any:
    """GcsStorage over the block's GcpCredentials client and bucket."""
    from db_backup.storage.gcs import GcsStorage, map_gcs_error

    with mapped_errors(lambda exc: map_gcs_error(exc, block.bucket, f"gs://{block.bucket}")):
        client = block.gcp_credentials.get_cloud_storage_client()
    return GcsStorage(client, block.bucket, block.bucket_folder or "")


def azure_adapter(block: Any) -> Any:
    """AzureBlobStorage over the block's credentials and container."""
    from db_backup.storage.azure import AzureBlobStorage, container_client

    settings = TransferSettings.from_env()
    creds = block.credentials
    secret = creds.connection_string
    if secret is None and not creds.account_url:
        raise ConfigError(
            "AzureBlobStorageCredentials has neither connection_string nor account_url"
        )
    client = container_client(
        block.container_name,
        settings,
        connection_string=secret.get_secret_value() if secret is not None else None,
        account_url=creds.account_url,
    )
    return AzureBlobStorage(client, block.base_folder or "", settings)
