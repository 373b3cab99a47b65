# One image for every service; the command chooses it: `sarafan run members`.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
RUN python -m venv /opt/sarafan && /opt/sarafan/bin/pip install --no-cache-dir .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 sarafan
COPY --from=build /opt/sarafan /opt/sarafan
ENV PATH=/opt/sarafan/bin:$PATH PYTHONUNBUFFERED=1 SARAFAN_LOG_FORMAT=json SARAFAN_HOST=0.0.0.0
USER sarafan
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD python -c "import os,urllib.request as u; p=next(v for k,v in os.environ.items() if k.startswith('SARAFAN_') and k.endswith('_PORT')); u.urlopen(f'http://127.0.0.1:{p}/healthz', timeout=2)"
CMD ["sarafan", "run", "members"]
