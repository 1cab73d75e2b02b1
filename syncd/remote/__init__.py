"""The outside systems of record: the MLflow registry and the object stores behind artifacts."""
