# A worker on an NVIDIA GPU: PyPI's default Linux torch wheel is the CUDA build and brings its own CUDA libraries.
# Run with `--gpus all` (or the compose `gpu` profile).
FROM python:3.11-slim
WORKDIR /app
RUN pip install --no-cache-dir torch==2.13.0
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY service service
COPY workers workers
COPY cli cli
RUN pip install --no-cache-dir ".[worker]"
ENV REPLAYBANK_CACHE_DIR=/cache
VOLUME /cache
CMD ["replaybank", "worker", "--device", "cuda"]
