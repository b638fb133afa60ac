"""The neutral core every layer may use: atomic writes, the error base class, config loading, tracking, plots."""
