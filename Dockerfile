# The weaviate-cir inference service for GPU hosts (NVIDIA container toolkit).
# CUDA 12 + cuDNN 9 runtime for onnxruntime-gpu (CUDA provider) and PyPI's CUDA build of
# torch. Extras: gpu (onnxruntime-gpu, for an export), torch (a checkpoint folder) and minilm
# (the text tower of the shipped checkpoint). The TensorRT provider needs TensorRT libraries matching onnxruntime-gpu's build:
# pass them as a pip requirement (--build-arg TENSORRT_PIP=tensorrt-cu12==<version>); without
# them the service logs a warning and runs on CUDA. Models are read from a volume (/models);
# TensorRT engines are cached in another (/cache/trt).
# Build: docker build -t weaviate-cir:gpu .      CPU hosts: Dockerfile.cpu
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv curl \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app
COPY pyproject.toml README.md ./
COPY cir_module ./cir_module
COPY integration ./integration
COPY onnx_export ./onnx_export
ARG TENSORRT_PIP=""
RUN pip install --upgrade pip && pip install ".[gpu,torch,minilm]" $TENSORRT_PIP \
    && useradd --create-home --uid 10001 cir && mkdir -p /cache/trt /models \
    && chown -R cir /cache

USER cir
ENV CIR_HOST=0.0.0.0 CIR_PORT=8080 CIR_DEVICE=cuda CIR_TRT_CACHE_DIR=/cache/trt
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=6 \
    CMD curl -fsS http://127.0.0.1:8080/.well-known/ready || exit 1
CMD ["cir", "serve"]
