# One image for web, CPU workers, GPU workers and beat. CUDA torch comes from the PyTorch index here;
# CPU-only hosts can build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu.
FROM python:3.11-slim AS base
ARG TORCH_VERSION=2.5.1
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu124
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 COMPLIANCE_ENV=production
RUN apt-get update && apt-get install -y --no-install-recommends poppler-utils curl && rm -rf /var/lib/apt/lists/*
WORKDIR /app
RUN pip install --index-url ${TORCH_INDEX} torch==${TORCH_VERSION}
COPY pyproject.toml README.md ./
COPY compliance compliance
COPY pii pii
COPY proofs proofs
COPY unlearning_worker unlearning_worker
COPY templates templates
COPY manage.py ./
RUN pip install . && useradd --system --uid 10001 --home /app app && mkdir -p /srv/compliance /srv/artifacts \
    && chown -R app /srv
USER app
EXPOSE 8000
CMD ["gunicorn", "compliance.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--timeout", "60"]
