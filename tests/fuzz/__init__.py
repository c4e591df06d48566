"""Fuzz tests: one module per input surface (VRRP packets, sync datagrams, ctnetlink
messages, capture files, configuration files, control-socket requests, the metrics
endpoint's HTTP requests). Each target is
fed by Hypothesis (shapes it can shrink) and by a fast mutation loop over valid inputs
the project's own encoders build (tests/fuzz/corpus.py, tests/fuzz/mutate.py): a short
form in the default run, a million inputs per target under ``-m slow``. Only the
documented error types may come out; a hang (one input, 2 s) is a failure too."""
