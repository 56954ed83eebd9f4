.PHONY: demo test lint bench
demo:  ## set up and run the whole journey on the embedded default, then serve the portal
	./scripts/demo
test:  ## set up and run every test (starts PostgreSQL and Redis if needed)
	./scripts/test
lint:
	.venv/bin/ruff check . && .venv/bin/mypy compliance pii proofs unlearning_worker
