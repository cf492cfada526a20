FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY silvertine_streams ./silvertine_streams
RUN pip install --no-cache-dir '.[rocksdb]'
RUN useradd --create-home silvertine && mkdir -p /var/lib/silvertine && chown silvertine /var/lib/silvertine
USER silvertine
CMD ["silvertine", "worker"]
