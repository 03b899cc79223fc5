# kt-pipeline on a GPU host. Build:  docker build -t kt-pipeline .
# Run:    docker run --gpus all -v "$PWD/experiments:/experiments" kt-pipeline search
FROM tensorflow/tensorflow:2.21.0-gpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_FORCE_GPU_ALLOW_GROWTH=true \
    TF_CPP_MIN_LOG_LEVEL=2

RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin tuner

WORKDIR /opt/kt-pipeline
COPY pyproject.toml README.md ./
COPY kt_pipeline ./kt_pipeline
COPY hypermodels ./hypermodels
# The base image's TensorFlow satisfies the pin, so only our other dependencies install.
RUN pip install --no-cache-dir . && kt-pipeline --help > /dev/null \
    && mkdir -p /experiments && chown 1000:1000 /experiments

USER 1000:1000
WORKDIR /experiments
VOLUME ["/experiments"]
# 6006: TensorBoard. 8470: the chief's oracle in a parallel search (--role chief).
EXPOSE 6006 8470
ENTRYPOINT ["kt-pipeline"]
CMD ["search", "--experiment-dir", "/experiments/default"]
