# The REST service: FastAPI + Delta Lake + DuckDB. No PyTorch.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY service service
COPY workers workers
COPY cli cli
RUN pip install --no-cache-dir ".[service]"
ENV REPLAYBANK_DATA_DIR=/data
VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["replaybank", "serve", "--host", "0.0.0.0", "--port", "8000"]
