# llama.cpp's llama-server (the CPU engine) in a container. The binary is built once on the host by
# docker/build-llama-server.sh (portable flags) and handed to the build as a context file, so the
# image build takes seconds, not the 7 minutes of a compile.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
# llama-server links libgomp (OpenMP) dynamically.
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*
COPY llama-server /usr/local/bin/llama-server
ENTRYPOINT ["/usr/local/bin/llama-server"]
