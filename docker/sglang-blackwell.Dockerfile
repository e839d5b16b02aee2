# SGLang for Blackwell GPUs (RTX 5090, sm_120), as the study had to build it: the stable PyTorch
# wheels of that time had no sm_120 kernels ("no kernel image is available for execution on the
# device"), so this image takes a PyTorch nightly built for CUDA 12.8 and SGLang from a git ref.
# Serve it with the adapter's "blackwell" profile (tasks/engines/sglang.py).
ARG BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04
FROM ${BASE_IMAGE}
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/nightly/cu128
ARG SGLANG_REF=v0.5.2
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 TORCH_CUDA_ARCH_LIST="12.0"
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip python3-dev git \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m pip install --upgrade pip \
 && python3 -m pip install "sglang[srt] @ git+https://github.com/sgl-project/sglang@${SGLANG_REF}#subdirectory=python"
# SGLang's requirements pull a stable torch: replace it by the nightly with sm_120 kernels.
RUN python3 -m pip install --pre --upgrade --force-reinstall --no-deps torch torchvision --index-url "${TORCH_INDEX_URL}" \
 && python3 -c "import torch, sglang; print('torch', torch.__version__, 'archs', torch.cuda.get_arch_list())"
EXPOSE 30000
