# One image for every service; the compose file picks the service with `rj serve <name>`.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
# weasyprint (the notify service's printed letters) draws text with Pango; Liberation Sans has Arial's metrics.
RUN apt-get update && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 \
        libharfbuzz-subset0 fonts-liberation && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY services ./services
COPY demo ./demo
COPY bench ./bench
RUN pip install .
RUN useradd --system --uid 10001 rj
USER rj
ENTRYPOINT ["rj"]
