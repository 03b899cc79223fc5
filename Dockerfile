# kt-pipeline on a GPU host. Build:  docker build -t kt-pipeline .
# Run:    docker run --gpus all -v "$PWD/experiments:/experiments" kt-pipeline search
#
# Base: plain Python, with CUDA and cuDNN as the pip wheels TensorFlow's `and-cuda` extra
# pins for 2.21 (CUDA 12.5, cuDNN >= 9.3, < 10; TensorFlow 2.21 reports building with CUDA
# 12.5.1 and cuDNN 9 in tf.sysconfig.get_build_info()). The official
# tensorflow/tensorflow:*-gpu images since 2.18 ship cuDNN 8.9, which these builds cannot
# load, so TensorFlow finds no GPU (tensorflow/tensorflow#62412, #94593;
# tensorflow/build#221). The host needs only the NVIDIA driver and container toolkit.
#
# BASE swaps the base for one with Python 3.11 and its venv module (examples/container/
# check.sh builds this file on a Debian 12 root file system made with debootstrap).
ARG BASE=python:3.11.11-slim-bookworm
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_FORCE_GPU_ALLOW_GROWTH=true \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PATH=/opt/venv/bin:$PATH

RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin tuner

WORKDIR /opt/kt-pipeline
COPY pyproject.toml README.md ./
COPY kt_pipeline ./kt_pipeline
COPY hypermodels ./hypermodels
# The doctor checks the install: versions, imports, a matmul on every device it sees
# (the build itself has no GPU; run `kt-pipeline doctor` in the container on the host).
# A virtual environment: the same install on the official image and on a distribution's
# Python, which refuses pip installs into the system (PEP 668).
RUN python3 -m venv /opt/venv \
    && pip install --no-cache-dir "tensorflow[and-cuda]==2.21.0" . \
    && kt-pipeline doctor > /dev/null \
    && mkdir -p /experiments && chown 1000:1000 /experiments

USER 1000:1000
WORKDIR /experiments
VOLUME ["/experiments"]
# 6006: TensorBoard. 8470: the chief's oracle in a parallel search (--role chief).
EXPOSE 6006 8470
ENTRYPOINT ["kt-pipeline"]
CMD ["search", "--experiment-dir", "/experiments/default"]
