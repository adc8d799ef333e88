# Development entry points. `make run` starts Kafka and the gateway on 127.0.0.1;
# `make test` runs the whole suite against a real broker it starts itself.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The test broker has its own port and data directory, so `make test` and `make run`
# can run side by side.
TEST_KAFKA_PORT ?= 19092
TEST_KAFKA_ENV := KAFKA_PORT=$(TEST_KAFKA_PORT) KAFKA_CONTROLLER_PORT=$$(($(TEST_KAFKA_PORT) + 1)) KAFKA_DATA_DIR=$(CURDIR)/.run/kafka-test
PYTEST_ARGS ?=

.PHONY: install run stop test bench kafka-start kafka-stop clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: install
	bash deploy/run-local.sh

stop:
	bash deploy/run-local.sh stop

kafka-start:
	bash deploy/kafka.sh start

kafka-stop:
	bash deploy/kafka.sh stop

# pytest exits 5 when it collected no tests; that must not pass as a green run.
test: install
	@$(TEST_KAFKA_ENV) bash deploy/kafka.sh start
	@status=0; TEST_KAFKA_PORT=$(TEST_KAFKA_PORT) $(BIN)/pytest $(PYTEST_ARGS) || status=$$?; \
	$(TEST_KAFKA_ENV) bash deploy/kafka.sh stop; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$status

bench: install
	bash bench/run

clean:
	-bash deploy/run-local.sh stop
	-$(TEST_KAFKA_ENV) bash deploy/kafka.sh reset
	rm -rf .run
