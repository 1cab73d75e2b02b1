# syncd daemon image: non-root, the MLflow client only (mlflow-skinny), a health check on /healthz.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 MLFLOW_DISABLE_TELEMETRY=true
WORKDIR /opt/syncd
COPY pyproject.toml README.md ./
COPY syncd ./syncd
RUN pip install --no-cache-dir . && useradd --uid 10001 --create-home syncd
COPY config/syncd.yaml /etc/syncd/syncd.yaml

USER 10001
EXPOSE 8888
ENV SYNCD_HTTP__HOST=0.0.0.0 SYNCD_HTTP__PORT=8888
# The port the daemon listens on: SYNCD_HTTP__PORT wins over the config file, so `docker run
# -e SYNCD_HTTP__PORT=9000` moves the check with it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SYNCD_HTTP__PORT', '8888'), timeout=4)"]
ENTRYPOINT ["syncd"]
CMD ["run", "--config", "/etc/syncd/syncd.yaml"]
