FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY silvertine_streams ./silvertine_streams
# The shipped config file: `silvertine worker --config /app/config/event_engine.yaml`.
COPY config ./config
RUN pip install --no-cache-dir '.[rocksdb]'
RUN useradd --create-home silvertine && mkdir -p /var/lib/silvertine && chown silvertine /var/lib/silvertine
USER silvertine
CMD ["silvertine", "worker"]
