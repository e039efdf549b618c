# movie-embeddings gRPC server.
#   docker build -t movie-embeddings .
#   docker run -p 50051:50051 -v movie-data:/data movie-embeddings
# Both stages use the same pinned base, so the venv copied below finds the same interpreter.

FROM python:3.11.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Only what the build needs: pyproject (packages found under client/ and server/)
# and README.md (the project's readme).
COPY pyproject.toml README.md ./
COPY client/ client/
COPY server/ server/
# `./[server]` is `.[server]`: this project with the server extra (TensorFlow, health,
# reflection, metrics). The `./` lets hadolint see a local path, not an unpinned package.
# A GPU node's image adds TensorFlow's CUDA build:
#   docker build --build-arg EXTRAS=server,gpu -t movie-embeddings:0.1.0-gpu .
ARG EXTRAS=server
RUN pip install --no-cache-dir "./[${EXTRAS}]"


FROM python:3.11.11-slim-bookworm

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MOVIE_EMBEDDINGS_DATA_DIR=/data

# A fixed, non-root UID/GID, so that volume ownership is predictable.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-log-init \
        --create-home --home-dir /home/app --shell /usr/sbin/nologin app \
    && mkdir /data \
    && chown app:app /data

COPY --from=builder /opt/venv /opt/venv

USER 10001:10001
WORKDIR /home/app
VOLUME ["/data"]
EXPOSE 50051

# An empty store trains the `default` model at first start: health is NOT_SERVING until then.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["movie-embeddings", "health", "--target", "127.0.0.1:50051", "--timeout", "5"]

ENTRYPOINT ["movie-embeddings"]
CMD ["serve", "--host", "0.0.0.0", "--port", "50051", "--data-dir", "/data"]
