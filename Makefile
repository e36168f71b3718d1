# kubekms developer entry points.
#
#   make test    everything CI runs (.ci/run calls this)
#   make run     the product: a local one-node cluster, the image, the Helm chart, pods Ready
#   make bench   run the engine benchmark
#   make scale-bench   the operator at 1,000 and 10,000 Keys on the local control plane
#   make pods-bench    10,000 Keys, a rotation wave and Encrypt through the Service, as pods
#   make webhook-bench admission latency of opted-in pods and a 100-replica scale-up
#
# Builds are cached outside the clone so fresh clones (CI) reuse them.
export CARGO_TARGET_DIR ?= /root/.cache/kubekms-target
export KUBEKMS_VENV ?= /root/.cache/kubekms-venv

DATA_DIR ?= $(HOME)/.local/share/kubekms
# Extra arguments for `make run`, e.g. make run ARGS="--listen 127.0.0.1:8443"
ARGS ?=
CARGO ?= cargo
SCRIPTS := e2e/scripts

.PHONY: test setup fmt clippy cargo-test python-tests smoke chart image \
	control-plane control-plane-start control-plane-stop control-plane-status \
	cluster-start cluster-stop cluster-status \
	build-release run bench scale-bench pods-bench webhook-bench

## test: setup, formatting, lints, the chart's checks, the image, unit/integration/e2e tests
## (the e2e tests on a one-node cluster load the image), Python e2e tests, control-plane smoke test
test: setup fmt clippy chart image cargo-test python-tests smoke
	@echo "make test: all steps passed"

# The control plane is built here (cached after the first time) so that every later step,
# cargo tests included, can rely on it.
setup:
	$(SCRIPTS)/setup.sh
	$(SCRIPTS)/build-kubernetes.sh

fmt:
	$(CARGO) fmt --all --check $(if $(CI),-- --color=never)

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

cargo-test:
	$(CARGO) test --workspace

# Runs pytest on e2e/python only when it holds tests (exit 5 counts as success).
python-tests:
	@if [ -x $(SCRIPTS)/python-tests.sh ]; then $(SCRIPTS)/python-tests.sh; \
	else echo "no $(SCRIPTS)/python-tests.sh; skipping Python tests"; fi

smoke:
	$(SCRIPTS)/control-plane-smoke.sh

## chart: charts/kubekms linted (Helm 4 from helm-python-sdk), rendered, CRDs checked for drift
chart:
	$(SCRIPTS)/check-chart.sh

## image: the container image (static binaries, OCI archive, no Docker) at
## $(CARGO_TARGET_DIR)/kubekms-image.tar; the Dockerfile checked to build the same
image:
	$(SCRIPTS)/build-image.sh --check-dockerfile
	$(SCRIPTS)/build-image.sh

## A one-node cluster (control plane + containerd, kubelet, kube-proxy) in a network namespace
cluster-start:
	$(SCRIPTS)/cluster.sh start

cluster-stop:
	$(SCRIPTS)/cluster.sh stop

cluster-status:
	$(SCRIPTS)/cluster.sh status

## Local Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager v1.20.2)
control-plane:
	$(SCRIPTS)/build-kubernetes.sh

control-plane-start:
	$(SCRIPTS)/control-plane.sh start

control-plane-stop:
	$(SCRIPTS)/control-plane.sh stop

control-plane-status:
	$(SCRIPTS)/control-plane.sh status

build-release:
	$(CARGO) build --release -p kubekms-engine --bin kubekms-engine -p kubekms-operator --bin kubekms-operator

## run: the product. A local one-node cluster (or KUBECONFIG's cluster), the image loaded, the
## Helm chart installed, operator and engine pods Ready, examples applied, next steps printed.
## KUBEKMS_STANDALONE=1: the engine alone, no Kubernetes.
run: setup $(if $(filter 1,$(KUBEKMS_STANDALONE)),,image)
	DATA_DIR="$(DATA_DIR)" $(SCRIPTS)/run.sh $(ARGS)

## bench: the benchmark binary (kubekms-bench)
bench:
	$(CARGO) run --release -p kubekms-bench --bin kubekms-bench -- $(ARGS)

## scale-bench: Keys applied to the local control plane until Ready, a rotation wave, the
## operator's RSS (kubekms-scale-bench; figures in BENCHMARKS.md)
scale-bench: setup
	$(CARGO) build --release -p kubekms-operator --bin kubekms-operator
	$(CARGO) run --release -p kubekms-bench --bin kubekms-scale-bench -- \
		--operator-bin $(CARGO_TARGET_DIR)/release/kubekms-operator $(ARGS)

## pods-bench: the product as pods on a one-node cluster (the image, the chart): 10,000 Keys
## until Ready, a rotation wave, the operator's RSS, Encrypt through the engine Service and
## straight to a pod under wrk (kubekms-pods-bench; figures in BENCHMARKS.md)
pods-bench: setup image
	$(CARGO) run --release -p kubekms-bench --bin kubekms-pods-bench -- $(ARGS)

## webhook-bench: the injection webhook on a one-node cluster: admission latency p50/p99 of
## opted-in pods (a new data key, an existing one) and a 100-replica scale-up
## (kubekms-webhook-bench; figures in BENCHMARKS.md)
webhook-bench: setup image
	$(CARGO) run --release -p kubekms-bench --bin kubekms-webhook-bench -- $(ARGS)
