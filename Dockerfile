# Image for both servers: the extension server (default command) and the endpoint picker
# (its Deployment sets `command: [python, -m, picker]`). Build from the repository root.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY api/ api/
COPY extserver/ extserver/
COPY picker/ picker/
COPY rollout/ rollout/
RUN pip install . && rm -rf /src

RUN useradd --system --uid 65532 --no-create-home app
USER 65532
WORKDIR /

# extserver gRPC; picker ext_proc/EDS gRPC, health, metrics.
EXPOSE 5005 9002 9003 9090
CMD ["python", "-m", "extserver", "serve"]
