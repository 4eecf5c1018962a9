# daskramp image for the scheduler, the workers and the client of docker-compose.yml: the
# package with the plot extra (matplotlib for `daskramp report`, bokeh for the scheduler's
# dashboard on port 8787).
FROM python:3.11-slim
WORKDIR /opt/daskramp
COPY pyproject.toml README.md ./
COPY daskramp ./daskramp
COPY workflows ./workflows
RUN pip install --no-cache-dir ".[plot]"
# numba caches the compiled kernels here (writable whatever the user the container runs as)
ENV NUMBA_CACHE_DIR=/tmp/numba-cache
# inputs, reference files and outputs: the host folder docker-compose.yml mounts at /data in
# every container, so a path is the same for the client and the workers
VOLUME ["/data"]
WORKDIR /data
