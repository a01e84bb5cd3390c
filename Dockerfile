# Lynkr in a container: `python lynkr.py` as a non-root user, its state in the /data volume, the
# workspace mounted at /workspace.
#
#   docker build -t lynkr .
#   docker run --rm -p 127.0.0.1:8080:8080 -e LYNKR_API_KEY=choose-one \
#       -e DATABRICKS_API_BASE=https://... -e DATABRICKS_API_KEY=dapi... \
#       -v lynkr-data:/data -v "$PWD":/workspace lynkr
#
# Inside the container lynkr listens on 0.0.0.0, which requires LYNKR_API_KEY (Claude Code sends it as
# ANTHROPIC_API_KEY) unless LYNKR_TRUSTED_NETWORK=true, for a port published on the host's loopback only.
# docker-compose.yml adds a SearxNG for web search. BASE: any image with python3 >= 3.11 and useradd.

ARG BASE=docker.io/library/python:3.12-slim
FROM ${BASE}

# h11, lynkr's one dependency, from a wheel in container/wheels/ when the build context brings one (no
# network, or no pip in the base), else from the package index.
COPY container/install-h11.py /tmp/install-h11.py
COPY container/wheels/ /tmp/wheels/
RUN python3 /tmp/install-h11.py /opt/lynkr/lib && rm -rf /tmp/install-h11.py /tmp/wheels

COPY lynkr.py LICENSE container/healthcheck.py /opt/lynkr/
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home lynkr \
    && mkdir -p /data /workspace \
    && chown lynkr:lynkr /data /workspace

USER lynkr
ENV PYTHONPATH=/opt/lynkr/lib \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/data \
    LYNKR_HOST=0.0.0.0 \
    LYNKR_PORT=8080 \
    LYNKR_DATA_DIR=/data \
    WORKSPACE_ROOT=/workspace
WORKDIR /workspace
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD ["python3", "/opt/lynkr/healthcheck.py"]
ENTRYPOINT ["python3", "/opt/lynkr/lynkr.py"]
