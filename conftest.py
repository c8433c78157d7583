# repo root on sys.path for tests
