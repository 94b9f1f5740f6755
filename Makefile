# `make test`: create .venv on a fresh machine (Python 3.11), install the CPU build of torch with the
# exact pin below (it takes the local CPU wheel; an unpinned torch pulls a multi-GB CUDA build),
# install the package with its test and ui extras (pytest, playwright; gradio for `lumos serve`), run
# pytest. `make demo`: same install, then a video. `make serve`: the web UI on http://127.0.0.1:7860.
# The browser test (tests/test_browser.py) drives Debian's /usr/bin/chromium (`.ci/run` installs it);
# Playwright never downloads a browser here.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0

.PHONY: install test demo serve clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[test,ui]'
	touch $@

install: $(BIN)/.installed

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

demo: $(BIN)/.installed
	$(BIN)/lumos demo --out demo

serve: $(BIN)/.installed
	GRADIO_ANALYTICS_ENABLED=False $(BIN)/lumos serve

clean:
	rm -rf $(VENV) build *.egg-info
