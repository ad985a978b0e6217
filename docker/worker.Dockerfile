# A worker on the CPU. Holds no database or Redis credentials: only the service URL and a token.
FROM python:3.11-slim
WORKDIR /app
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY service service
COPY workers workers
COPY cli cli
RUN pip install --no-cache-dir ".[worker]"
ENV REPLAYBANK_CACHE_DIR=/cache
VOLUME /cache
CMD ["replaybank", "worker", "--device", "cpu"]
