"""What the variables MLflow, the AWS SDKs, KServe and Domino define mean for syncd's settings
(used where the config is silent; `settings.load_settings` passes the environment in)."""

from __future__ import annotations

from typing import Any

__all__ = ["standard_environment"]

_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")


def standard_environment(environ: dict[str, str]) -> dict[str, Any]:
    """Values from the variables MLflow and the AWS SDKs define, used where config is silent."""
    mlflow: dict[str, Any] = {}
    for key, variable in (
        ("tracking_uri", "MLFLOW_TRACKING_URI"),
        ("token", "MLFLOW_TRACKING_TOKEN"),
        ("username", "MLFLOW_TRACKING_USERNAME"),
        ("password", "MLFLOW_TRACKING_PASSWORD"),
        ("timeout", "MLFLOW_HTTP_REQUEST_TIMEOUT"),
        ("max_retries", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"),
    ):
        if environ.get(variable):
            mlflow[key] = environ[variable]
    s3: dict[str, Any] = {}
    endpoint = (
        environ.get("MLFLOW_S3_ENDPOINT_URL")
        or environ.get("AWS_ENDPOINT_URL_S3")
        or environ.get("AWS_ENDPOINT_URL")
        or _kserve_endpoint(environ)
    )
    if endpoint:
        s3["endpoint_url"] = endpoint
    if environ.get("S3_VERIFY_SSL", "").strip().lower() in ("0", "false", "no"):
        s3["verify_ssl"] = False
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if region:
        s3["region"] = region
    if environ.get("AWS_CA_BUNDLE"):
        s3["ca_bundle"] = environ["AWS_CA_BUNDLE"]
    if any(environ.get(name) for name in _PROXY_VARIABLES):
        s3["threaded_reads"] = False
    domino: dict[str, Any] = {}
    for key, variable in (
        ("api_host", "DOMINO_API_HOST"),
        ("api_proxy", "DOMINO_API_PROXY"),
        ("api_token", "DOMINO_API_TOKEN"),
        ("user_api_key", "DOMINO_USER_API_KEY"),
        ("project_id", "DOMINO_PROJECT_ID"),
    ):
        if environ.get(variable):
            domino[key] = environ[variable]
    return {"mlflow": mlflow, "s3": s3, "domino": domino}


def _kserve_endpoint(environ: dict[str, str]) -> str | None:
    """KServe's S3 secret annotations become `S3_ENDPOINT` (host[:port], no scheme) and
    `S3_USE_HTTPS` ("0" for plain HTTP) in a storage initializer's environment."""
    host = environ.get("S3_ENDPOINT", "").strip()
    if not host:
        return None
    if "://" in host:
        return host
    plain = environ.get("S3_USE_HTTPS", "1").strip().lower() in ("0", "false", "no")
    return f"{'http' if plain else 'https'}://{host}"
