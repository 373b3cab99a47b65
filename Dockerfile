# One image for every service; the command chooses it: `sarafan run members`.
# The build context is what .dockerignore lets through: the files COPYed below and nothing else.
# Build stage: install into a virtualenv the exact runtime dependencies of requirements.lock
# (every file's hash checked; wheels only, no compiler), then the project itself without
# resolving anything. The embedded servers (the `embedded` extra) are not installed: the
# services talk to real NATS and MongoDB.
FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/sarafan
COPY requirements.lock ./
RUN /opt/sarafan/bin/pip install --require-hashes --only-binary :all: -r requirements.lock
# Everything pyproject.toml names: its readme and its license file.
COPY pyproject.toml README.md LICENSE ./
COPY shared ./shared
COPY services ./services
COPY sarafan ./sarafan
RUN /opt/sarafan/bin/pip install --no-deps . \
 && /opt/sarafan/bin/pip uninstall -y pip

# Final stage: the interpreter, the virtualenv and nothing else; runs as an unprivileged user.
FROM python:3.11.11-slim-bookworm
LABEL org.opencontainers.image.title="sarafan" \
      org.opencontainers.image.description="Sarafan community services (members, engagement, campaigns, notifier, activities)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN useradd --system --create-home --uid 10001 --user-group sarafan
COPY --from=build /opt/sarafan /opt/sarafan
COPY deploy/docker/healthcheck.py /opt/sarafan/healthcheck.py
ENV PATH=/opt/sarafan/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SARAFAN_LOG_FORMAT=json \
    SARAFAN_HOST=0.0.0.0
USER 10001:10001
WORKDIR /home/sarafan
EXPOSE 8001 8002 8003 8004 8005
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "/opt/sarafan/healthcheck.py"]
ENTRYPOINT []
CMD ["sarafan", "run", "members"]
