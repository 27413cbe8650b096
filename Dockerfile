# histoxai in a container: CPU torch and every pinned dependency of pyproject.toml.
#
#   docker build -t histoxai .
#   docker run --rm histoxai histoxai --help
#   docker compose up            # MLflow server (PostgreSQL + MinIO), the pipeline, the dashboard
#
# Nothing is downloaded at run time: the phantom is generated, models start from random
# weights (model.pretrained: false).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLBACKEND=Agg \
    DVC_NO_ANALYTICS=1

# git: DVC tracks the pipeline in a git repository
RUN apt-get update \
 && apt-get install -y --no-install-recommends git \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# CPU builds of the torch and torchvision versions pinned in pyproject.toml (one source
# of the versions), installed first so the dependency layer is cached across code changes.
COPY pyproject.toml README.md ./
RUN torch=$(sed -n 's/^ *"torch==\([^"]*\)",/\1/p' pyproject.toml) \
 && vision=$(sed -n 's/^ *"torchvision==\([^"]*\)",/\1/p' pyproject.toml) \
 && test -n "$torch" && test -n "$vision" \
 && pip install --index-url https://download.pytorch.org/whl/cpu "torch==$torch" "torchvision==$vision"

COPY src src
COPY tuning tuning
COPY dashboard dashboard
RUN pip install ".[server]"

COPY . .
RUN useradd --create-home --uid 1000 histoxai \
 && mkdir -p data models reports optuna .dvc/cache \
 && chown -R histoxai /app
USER histoxai
RUN git init -q .   # DVC runs in a git repository; the image's files are its work tree

CMD ["histoxai", "--help"]
