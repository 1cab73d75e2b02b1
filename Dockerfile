# syncd daemon image: non-root, the MLflow client only (mlflow-skinny), a health check on /healthz.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/syncd
COPY pyproject.toml README.md ./
COPY syncd ./syncd
RUN pip install --no-cache-dir . && useradd --uid 10001 --create-home syncd
COPY config/syncd.yaml /etc/syncd/syncd.yaml

USER 10001
EXPOSE 8888
ENV SYNCD_HTTP__HOST=0.0.0.0 SYNCD_HTTP__PORT=8888
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8888/healthz', timeout=4)"]
ENTRYPOINT ["syncd"]
CMD ["run", "--config", "/etc/syncd/syncd.yaml"]
