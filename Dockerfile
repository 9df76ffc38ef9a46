# resnet-serve container image.
#
#   docker build -t resnet-serve:cpu .                                # slim CPU image (ONNX Runtime, no torch)
#   docker build -t resnet-serve:gpu --build-arg VARIANT=gpu .       # CUDA image: onnxruntime-gpu + CUDA torch
#
# The model is either exported while building (EXPORT_MODEL=1, the default, in a throw-away
# stage: torch never reaches the runtime image) or mounted at run time over /models
# (build with EXPORT_MODEL=0 and `-v ./models:/models:ro`). docs/deployment.md has both.
#
# The variant is a build argument, not a second target: the classic (non-BuildKit) builder
# builds every stage before the target, so a GPU stage placed before the CPU one would cost
# CPU users a multi-GB CUDA download.  No `RUN --mount`, so it builds with or without BuildKit.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- builder: the serving venv
FROM ${PYTHON_IMAGE} AS builder
SHELL ["/bin/sh", "-eu", "-c"]
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# cpu: onnxruntime only (no torch).  gpu: onnxruntime-gpu plus the CUDA build of torch, whose
# nvidia-* wheels also carry the CUDA and cuDNN libraries that onnxruntime-gpu loads.
ARG VARIANT=cpu
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
# OPENVINO=1 (default) adds the OpenVINO backend to the cpu image: the wheel installs 180 MB, of
# which the GPU/NPU plugins and the TensorFlow/PaddlePaddle/PyTorch/JAX/GGUF frontends (64 MB)
# are never loaded by a CPU server reading ONNX files, so they are removed: +117 MB in all.
# otel (both images): OpenTelemetry traces when OTEL_EXPORTER_OTLP_ENDPOINT is set (a few MB).
ARG OPENVINO=1
RUN case "$VARIANT" in \
      cpu) extras=cpu ;; \
      gpu) extras=gpu,torch ;; \
      *) echo "VARIANT must be cpu or gpu, got '$VARIANT'" >&2; exit 2 ;; \
    esac; \
    if [ "$VARIANT" = cpu ] && [ "$OPENVINO" = 1 ]; then extras="$extras,openvino"; fi; \
    extras="$extras,otel"; \
    /opt/venv/bin/pip install --no-cache-dir ".[$extras]"; \
    /opt/venv/bin/pip check; \
    for lib in /opt/venv/lib/python3*/site-packages/openvino/libs; do \
      [ -d "$lib" ] || continue; \
      rm -f "$lib"/libopenvino_intel_gpu_plugin.so "$lib"/libopenvino_intel_npu_plugin.so \
        "$lib"/libopenvino_*tensorflow* "$lib"/libopenvino_paddle* \
        "$lib"/libopenvino_pytorch* "$lib"/libopenvino_jax* "$lib"/libopenvino_gguf*; \
    done

# ---------------------------------------------------------------- models: optional export
# A separate venv with torch + onnx; only /models leaves this stage.
FROM builder AS models
ARG EXPORT_MODEL=1
ARG MODEL_ARCH=resnet50
ARG MODEL_NAME=resnet50
# imagenet needs the internet at build time; add --allow-random-fallback to EXPORT_ARGS to
# build without it (random weights: for smoke tests only).
ARG MODEL_WEIGHTS=imagenet
ARG MODEL_FORMATS=onnx
ARG EXPORT_ARGS=
# Written into the model's config.json when set, e.g. cuda:0 for the GPU image (compose.gpu.yaml).
ARG MODEL_DEVICE=
# CPU wheels of torch are enough to export and ~10x smaller than PyPI's CUDA build.
# Set to an empty string to take torch from the default index.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN mkdir -p /models; \
    if [ "$EXPORT_MODEL" = "1" ]; then \
      python3 -m venv /opt/export; \
      if [ -n "$TORCH_INDEX_URL" ]; then \
        /opt/export/bin/pip install --no-cache-dir --extra-index-url "$TORCH_INDEX_URL" ".[cpu,export]"; \
      else \
        /opt/export/bin/pip install --no-cache-dir ".[cpu,export]"; \
      fi; \
      /opt/export/bin/resnet-serve export --arch "$MODEL_ARCH" --weights "$MODEL_WEIGHTS" \
        --formats "$MODEL_FORMATS" --name "$MODEL_NAME" --out "/models/$MODEL_NAME" $EXPORT_ARGS; \
      if [ -n "$MODEL_DEVICE" ]; then \
        /opt/export/bin/python -c 'import json,sys; p=sys.argv[1]; c=json.load(open(p)); c["device"]=sys.argv[2]; json.dump(c, open(p, "w"), indent=2)' \
          "/models/$MODEL_NAME/config.json" "$MODEL_DEVICE"; \
      fi; \
    fi

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime
SHELL ["/bin/sh", "-eu", "-c"]
ARG VARIANT=cpu
RUN groupadd --gid 10001 resnet \
 && useradd --uid 10001 --gid resnet --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin resnet
COPY --from=builder /opt/venv /opt/venv
COPY --from=models /models /models
# GPU variant: let the dynamic loader find the CUDA/cuDNN libraries shipped in nvidia-* wheels,
# and give Triton (torch.compile's code generator) the C compiler and libc headers it builds its
# small launcher module with at run time: without them any torch.compile'd model fails at warm-up.
# Not version-pinned: bookworm's security updates replace libc6-dev's exact version, and the
# base image tag already fixes the Debian release.
# hadolint ignore=DL3008
RUN if [ "$VARIANT" = "gpu" ]; then \
      find /opt/venv -type d -path '*/site-packages/nvidia/*/lib' > /etc/ld.so.conf.d/nvidia-wheels.conf; \
      ldconfig; \
      apt-get update; \
      apt-get install -y --no-install-recommends gcc libc6-dev; \
      rm -rf /var/lib/apt/lists/*; \
    fi
# Defaults only; override with `-e`/compose `environment`.  No secrets here: the optional
# RESNET_SERVE_AUTH_TOKEN is supplied at run time.  `video` exposes the GPU's hardware JPEG
# decoders (nvJPEG's A100/H100/H200 engine) besides CUDA (compute) and nvidia-smi (utility).
# TRITON_HOME: Triton's cache, dump and override folders default to ~/.triton, and the user's
# home is /nonexistent on a read-only root: /tmp is the writable place (an emptyDir in k8s).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RESNET_SERVE_MODELS_DIR=/models \
    RESNET_SERVE_HOST=0.0.0.0 \
    RESNET_SERVE_PORT=8000 \
    RESNET_SERVE_GRPC_PORT=8001 \
    RESNET_SERVE_LOG_LEVEL=info \
    RESNET_SERVE_SHUTDOWN_GRACE_S=5 \
    RESNET_SERVE_WORKERS=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility,video \
    TRITON_HOME=/tmp
WORKDIR /tmp
USER 10001:10001
# 8000 HTTP (REST, V2, /metrics), 8001 KServe V2 gRPC
EXPOSE 8000 8001
# Healthy = ready: every model loaded and warmed.  Warm-up of a big model can take a while.
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
  CMD ["python3", "-c", "import os,sys,urllib.request as u; sys.exit(0 if u.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('RESNET_SERVE_PORT', '8000'), timeout=2).status == 200 else 1)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["resnet-serve"]
CMD ["serve"]
