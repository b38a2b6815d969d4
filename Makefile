.PHONY: setup test unit demo bench soak clean

setup:
	@bash scripts/setup.sh

test: setup
	.venv/bin/python -m pytest -q -rs

unit: setup
	.venv/bin/python -m pytest -q tests/unit

demo: setup
	.venv/bin/python scripts/demo.py

soak: setup
	VNET_SOAK_KILLS=$${VNET_SOAK_KILLS:-200} .venv/bin/python -m pytest -q -s tests/integration/test_soak.py

bench: setup
	.venv/bin/python -m bench

clean:
	rm -rf .venv build src/*.egg-info .pytest_cache .hypothesis
