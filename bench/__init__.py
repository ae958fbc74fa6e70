"""tinyc's benchmark and evaluation code, kept out of the installed `tinyc` package.

- `zoo`: small seeded PyTorch models (the four MLPerf Tiny architectures and a few more) used by
  the tests, `make bench` and `make demo`;
- `digits`, `anomaly`: the two datasets the compression figures are measured on (scikit-learn's
  digits; synthetic machine spectra for the anomaly-detection autoencoder);
- `compression_eval`: the digits models with their checked-in weights (tests/data) and the
  compression table of docs/compression_formats.md (`python -m bench.compression_eval`);
- `benchmarks`, `compression_report`: the generators of docs/benchmarks.md (`make bench`) and
  docs/compression.md (`make compression-docs`).

Run from the repository root (`python3 -m bench.benchmarks ...`); the tests find it through
pytest's `pythonpath`. Nothing in compiler/, passes/ or backends/ imports it (tests/test_layering.py).
"""
