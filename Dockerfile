# daskramp worker/scheduler image: the package and its runtime dependencies.
FROM python:3.11-slim
WORKDIR /opt/daskramp
COPY pyproject.toml README.md ./
COPY daskramp ./daskramp
COPY workflows ./workflows
RUN pip install --no-cache-dir .
# the shared volume: inputs, reference files and outputs at the same path in every container
VOLUME ["/data"]
WORKDIR /data
