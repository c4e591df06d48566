# Thin wrappers around ./run for those who have make; ./run works without it.
.PHONY: demo test test-all setup clean bench bench-quick
demo:
	./run demo
test:
	./run test
test-all:
	./run test -m ''
setup:
	./run setup
clean:
	./run clean
bench:
	./run setup && .venv/bin/python -m bench
bench-quick:
	./run setup && .venv/bin/python -m bench --quick --out bench-quick.json --md bench-quick.md
