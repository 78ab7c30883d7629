# The worker image: heterarch in a venv, ready for `heterarch worker --pool NAME`.
#
#   docker build -t heterarch/worker:local .                      # with a registry (python:3.11-slim)
#   python compose/build_images.py worker                         # without one (see docs/compose.md)
#
# The offline build passes BASE (a Debian root fs made with mmdebstrap and `docker import`) and
# PIP_OPTIONS="--no-index --find-links /src/wheels" with a wheelhouse built on the host.
# Workers that host RLM agents start sandboxes: mount the Docker socket for that
# (-v /var/run/docker.sock:/var/run/docker.sock) or set `sandbox = "process"` for trusted code.
ARG BASE=python:3.11-slim
FROM ${BASE}
ARG PIP_OPTIONS=""
COPY . /src
RUN python3 -m venv /opt/heterarch \
    && /opt/heterarch/bin/pip install --no-cache-dir --disable-pip-version-check ${PIP_OPTIONS} /src \
    && rm -rf /src /root/.cache \
    && useradd --uid 10001 --create-home heterarch
ENV PATH=/opt/heterarch/bin:$PATH \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    PYTHONUNBUFFERED=1
USER heterarch
WORKDIR /home/heterarch
LABEL org.opencontainers.image.title="heterarch worker"
ENTRYPOINT []
CMD ["heterarch", "worker", "--help"]
