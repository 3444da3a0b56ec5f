# The weaviate-cir inference service (first version; the GPU/CPU image pair is issue 7).
# PyPI's torch wheel is a CUDA build: on a GPU host with the NVIDIA container toolkit it
# uses the GPU (CIR_DEVICE=cuda); elsewhere it runs on the CPU.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY cir_module ./cir_module
COPY integration ./integration
COPY onnx_export ./onnx_export
RUN pip install --no-cache-dir ".[cpu,train]" && useradd --create-home cir
USER cir
ENV CIR_HOST=0.0.0.0 CIR_PORT=8080
EXPOSE 8080
CMD ["cir", "serve"]
