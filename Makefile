# Loom: the two commands are `make run` and `make test` (see README.md).
# This file wraps CMake; everything it needs is installed by scripts/install-deps.sh.

SANITIZE ?= 0
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
ifeq ($(SANITIZE),1)
BUILD_DIR ?= build-san
CMAKE_FLAGS += -DLOOM_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
else
BUILD_DIR ?= build
CMAKE_FLAGS += -DCMAKE_BUILD_TYPE=RelWithDebInfo
endif

LISTEN ?= 127.0.0.1:8080
DATA_DIR ?= ./loom-data
SEED_CUSTOMERS ?= 1000
DEMO_ADMIN ?= admin
DEMO_PASSWORD ?= loom-demo-admin

.PHONY: all deps build run test bench clean

all: build

deps:
	@./scripts/install-deps.sh

$(BUILD_DIR)/CMakeCache.txt:
	cmake -S . -B $(BUILD_DIR) $(CMAKE_FLAGS)

build: deps $(BUILD_DIR)/CMakeCache.txt
	cmake --build $(BUILD_DIR) -j $(JOBS)

run: build
	LOOM_ADMIN_USER=$(DEMO_ADMIN) LOOM_ADMIN_PASSWORD=$(DEMO_PASSWORD) \
	  ./$(BUILD_DIR)/loom app import apps/4s-template --publish --data-dir $(DATA_DIR)
	./$(BUILD_DIR)/loom app seed fours --spec apps/4s-template/seed.json --scale $(SEED_CUSTOMERS) --if-empty --data-dir $(DATA_DIR)
	@echo "loom: demo admin (created on first start of an empty database): $(DEMO_ADMIN) / $(DEMO_PASSWORD)"
	@echo "loom: demo users (sales01, salesmgr, advisor01, tech01, svcmgr, care01, ...): password loom-demo-user"
	LOOM_ADMIN_USER=$(DEMO_ADMIN) LOOM_ADMIN_PASSWORD=$(DEMO_PASSWORD) \
	  ./$(BUILD_DIR)/loom serve --listen $(LISTEN) --data-dir $(DATA_DIR)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

bench: build
	./tests/bench/run.sh ./$(BUILD_DIR)
	./tests/bench/model.sh ./$(BUILD_DIR)
	./tests/bench/list.sh ./$(BUILD_DIR)
	./tests/bench/create.sh ./$(BUILD_DIR)
	./tests/bench/import.sh ./$(BUILD_DIR)
	./tests/bench/flow.sh ./$(BUILD_DIR)
	./$(BUILD_DIR)/expr_bench 2000000

clean:
	rm -rf build build-san
