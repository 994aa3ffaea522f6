# One image for every process of docker-compose.yml: API, migrate, relay, workers, Flower.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY identity ./identity
COPY api ./api
COPY worker ./worker
RUN pip install .
COPY alembic ./alembic
COPY alembic.ini gunicorn.conf.py flowerconfig.py ./

RUN useradd --system --home /app app
USER app
EXPOSE 8000 5555
# granian (api/serve.py), chosen by measurement (docs/DECISIONS.md); gunicorn also works:
# CMD ["gunicorn", "-c", "gunicorn.conf.py", "api:create_app()"]
CMD ["python", "-m", "api.serve"]
