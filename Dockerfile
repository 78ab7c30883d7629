# The worker image: heterarch installed, ready for `heterarch worker --pool NAME`.
# Workers that host RLM agents start sandboxes: mount the Docker socket for that
# (-v /var/run/docker.sock:/var/run/docker.sock) or set `sandbox = "process"` for trusted code.
ARG BASE=python:3.11-slim
FROM ${BASE}
WORKDIR /app
COPY pyproject.toml README.md ./
COPY actors actors
COPY runtime runtime
COPY transports transports
COPY sandbox sandbox
RUN pip install --no-cache-dir . && useradd --uid 10001 --create-home heterarch
USER heterarch
ENV LITELLM_LOCAL_MODEL_COST_MAP=True
ENTRYPOINT []
CMD ["heterarch", "worker", "--help"]
